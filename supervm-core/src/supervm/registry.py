"""Finding and opening storage back ends by URL scheme.

Every URL also takes the option ``cache=SIZE`` (``64MB``, ``64MiB``, ``512KB``,
``1000``: bytes): the back end opens without it, and :func:`open_storage` returns
its store behind a :class:`~supervm.cache.CachedStorage` of that many bytes.

In-process registrations (:func:`register_backend` and the
``supervm_register_backends`` hook) win over installed entry points in the
``supervm.backends`` group. Back ends are imported only when first opened.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from supervm.cache import CachedStorage
from supervm.errors import BackendNotFoundError, InvalidURLError
from supervm.storage import Storage
from supervm.url import StorageURL, parse_url

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendInfo",
    "available_backends",
    "load_backend",
    "open_storage",
    "register_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "supervm.backends"

#: First-party schemes and the ``supervm[...]`` extra that installs each.
KNOWN_EXTRAS: dict[str, str] = {
    "rocksdb": "rocksdb",
    "leveldb": "leveldb",
    "lmdb": "lmdb",
    "postgresql": "postgres",
    "sqlite": "sqlite",
    "mariadb": "mariadb",
    "mysql": "mariadb",
}

_registered: dict[str, type[Storage] | str] = {}
_hooks_loaded = False


@dataclass(frozen=True)
class BackendInfo:
    """An installed or registered back end, not yet imported."""

    scheme: str
    target: str
    distribution: str | None
    version: str | None
    source: str  # "entry point" or "registered"

    def load(self) -> type[Storage]:
        """Import and return the back-end class."""
        return load_backend(self.scheme)


def register_backend(scheme: str, target: type[Storage] | str) -> None:
    """Register a back end for ``scheme`` in this process.

    ``target`` is a :class:`Storage` subclass or a ``"module:attribute"`` string.
    """
    if not isinstance(scheme, str) or not scheme:
        raise TypeError("scheme must be a non-empty str")
    if not (isinstance(target, str) or (isinstance(target, type) and issubclass(target, Storage))):
        raise TypeError("target must be a Storage subclass or a 'module:attribute' string")
    _registered[scheme.lower()] = target


def unregister_backend(scheme: str) -> None:
    """Remove an in-process registration (entry points are unaffected)."""
    _registered.pop(scheme.lower(), None)


def _load_hook_registrations() -> None:
    global _hooks_loaded
    if _hooks_loaded:
        return
    _hooks_loaded = True
    from supervm.hooks import plugin_manager

    plugin_manager().hook.supervm_register_backends(register=register_backend)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name.lower(), ep)
    return found


def available_backends() -> dict[str, BackendInfo]:
    """Every scheme that can be opened, by scheme name, without importing any back end."""
    _load_hook_registrations()
    infos: dict[str, BackendInfo] = {}
    for name, ep in _entry_points().items():
        dist = ep.dist
        infos[name] = BackendInfo(
            scheme=name,
            target=ep.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
            source="entry point",
        )
    for name, target in _registered.items():
        text = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
        infos[name] = BackendInfo(name, text, None, None, "registered")
    return dict(sorted(infos.items()))


def _not_found(scheme: str, reason: str | None = None) -> BackendNotFoundError:
    installed = sorted(available_backends())
    base = scheme.split("+", 1)[0]
    extra = KNOWN_EXTRAS.get(base)
    if extra is not None:
        what = reason or f"the {base} back end is not installed"
        message = f"{what}; install it with: pip install 'supervm[{extra}]'"
    else:
        message = (
            f"no storage back end for URL scheme {scheme!r}; third-party back ends register "
            f"under the {ENTRY_POINT_GROUP!r} entry-point group"
        )
        if reason:
            message = f"{reason}; {message}"
    message += f". Installed back ends: {', '.join(installed) or 'none'}"
    return BackendNotFoundError(message, scheme=scheme, installed=installed)


def _resolve(target: type[Storage] | str | EntryPoint, scheme: str) -> type[Storage]:
    try:
        if isinstance(target, EntryPoint):
            obj: Any = target.load()
        elif isinstance(target, str):
            module_name, _, attr = target.partition(":")
            obj = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        else:
            obj = target
    except ImportError as exc:
        raise _not_found(scheme, f"the back end for {scheme!r} failed to import ({exc})") from exc
    except AttributeError as exc:
        raise BackendNotFoundError(
            f"the back end registered for {scheme!r} points at a missing object ({exc})",
            scheme=scheme,
            installed=sorted(available_backends()),
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Storage)):
        raise BackendNotFoundError(
            f"back end registered for {scheme!r} is {obj!r}, "
            "not a supervm.storage.Storage subclass",
            scheme=scheme,
            installed=sorted(available_backends()),
        )
    return obj


def load_backend(scheme: str) -> type[Storage]:
    """Import the back-end class serving ``scheme`` (``a+b`` falls back to ``a``)."""
    _load_hook_registrations()
    scheme = scheme.lower()
    candidates = [scheme]
    if "+" in scheme:
        candidates.append(scheme.split("+", 1)[0])
    for name in candidates:
        if name in _registered:
            return _resolve(_registered[name], name)
    eps = _entry_points()
    for name in candidates:
        if name in eps:
            return _resolve(eps[name], name)
    raise _not_found(scheme)


def open_storage(url: str | StorageURL, *, create: bool = True) -> Storage:
    """Open the store a URL names, e.g. ``memory://`` or ``rocksdb:///var/lib/supervm``.

    With ``create=False`` nothing is created: when the URL names no existing
    store, :class:`~supervm.errors.StoreNotFoundError` is raised and no file,
    directory or table is left behind. This passes the option ``create=false``
    to the back end, overriding the URL's own; stores that keep nothing
    outside the process (``memory://``) ignore it.

    With the option ``cache=SIZE`` (e.g. ``?cache=64MB``), which the back end
    does not see, the store comes behind a :class:`~supervm.cache.CachedStorage`
    of that many bytes.
    """
    parsed = url if isinstance(url, StorageURL) else parse_url(url)
    if not create:
        parsed = parsed.with_option("create", "false")
    cache = parsed.size_option("cache", 0) if "cache" in parsed.options else None
    backend = load_backend(parsed.scheme)
    try:
        storage = backend.from_url(parsed if cache is None else parsed.without_option("cache"))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidURLError):
            raise
        raise InvalidURLError(f"cannot open {parsed.safe!r}: {exc}") from exc
    if cache is not None:
        storage = CachedStorage(storage, cache)
    from supervm.hooks import plugin_manager

    plugin_manager().hook.supervm_storage_opened(storage=storage, url=parsed)
    return storage
