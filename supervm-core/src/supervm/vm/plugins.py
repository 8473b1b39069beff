"""Extra host functions contributed by plugins through the ``supervm_host_functions`` hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervm.vm.abi import HostFunctionSpec
from supervm.vm.host import HostFunction

__all__ = ["plugin_host_functions"]


def plugin_host_functions() -> list[HostFunction]:
    """Host functions registered by installed plugins (see docs/plugins.md)."""
    from supervm.hooks import plugin_manager

    found: list[HostFunction] = []

    def register(spec: HostFunctionSpec, impl: Callable[..., Any]) -> None:
        if not isinstance(spec, HostFunctionSpec):
            raise TypeError("register() takes a HostFunctionSpec and its implementation")
        found.append((spec, impl))

    plugin_manager().hook.supervm_host_functions(register=register)
    return sorted(found, key=lambda item: item[0].name)
