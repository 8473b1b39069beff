"""Plugin hooks (pluggy, project name ``supervm``).

Plugins are modules or objects with functions marked ``@supervm.hookimpl``,
registered through the ``supervm`` entry-point group or with
``supervm.hooks.plugin_manager().register(obj)``. Every hook specification
below is documented in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from supervm.storage import Storage
    from supervm.url import StorageURL

__all__ = ["hookimpl", "hookspec", "plugin_manager"]

PROJECT = "supervm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``register(scheme, target)`` where target is a Storage subclass or "module:attr".
RegisterBackend = Callable[[str, Any], None]


class SuperVMSpec:
    """Hook specifications."""

    @hookspec
    def supervm_register_backends(self, register: RegisterBackend) -> None:
        """Register storage back ends in-process by calling ``register(scheme, target)``.

        ``target`` is a :class:`supervm.storage.Storage` subclass or a
        ``"module:attribute"`` string imported when the scheme is first opened.
        """

    @hookspec
    def supervm_storage_opened(self, storage: Storage, url: StorageURL) -> None:
        """Observe every store returned by :func:`supervm.open_storage`."""

    @hookspec
    def supervm_host_functions(self, register: Callable[..., None]) -> None:
        """Add host functions by calling ``register(spec, impl)``.

        ``spec`` is a :class:`supervm.vm.abi.HostFunctionSpec` (name in module
        ``env``, wasm signature, gas); ``impl(host, *args)`` runs with the call's
        :class:`supervm.vm.host.Host` and returns the result, if any.
        """


_manager: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded."""
    global _manager
    if _manager is None:
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(SuperVMSpec)
        manager.load_setuptools_entrypoints(PROJECT)
        _manager = manager
    return _manager
