"""SuperVM: WebAssembly smart contracts over pluggable key-value storage."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from supervm.errors import (
    BackendNotFoundError,
    InvalidKeyError,
    InvalidURLError,
    KeyTooLargeError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
    SuperVMError,
    UnsupportedOperationError,
    ValueTooLargeError,
)
from supervm.hooks import hookimpl
from supervm.memory import MemoryStorage
from supervm.registry import available_backends, load_backend, open_storage, register_backend
from supervm.storage import Batch, Capabilities, Snapshot, Storage
from supervm.url import StorageURL, parse_url

try:
    __version__ = version("supervm-core")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

__all__ = [
    "BackendNotFoundError",
    "Batch",
    "Capabilities",
    "InvalidKeyError",
    "InvalidURLError",
    "KeyTooLargeError",
    "MemoryStorage",
    "Snapshot",
    "Storage",
    "StorageClosedError",
    "StorageConnectionError",
    "StorageError",
    "StorageLockedError",
    "StorageURL",
    "StoreNotFoundError",
    "SuperVMError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
    "__version__",
    "available_backends",
    "hookimpl",
    "load_backend",
    "open_storage",
    "parse_url",
    "register_backend",
]
