"""The SuperVM error hierarchy.

Every error SuperVM raises on purpose derives from :class:`SuperVMError`.
Storage errors keep the driver's exception as ``__cause__`` and as
:attr:`StorageError.original`.
"""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "InvalidKeyError",
    "InvalidURLError",
    "KeyTooLargeError",
    "LayoutVersionError",
    "StorageClosedError",
    "StorageConnectionError",
    "StorageError",
    "StorageLockedError",
    "StoreNotFoundError",
    "SuperVMError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
]


class SuperVMError(Exception):
    """Root of every error raised by SuperVM."""


class StorageError(SuperVMError):
    """A storage back end failed; ``original`` is the driver's exception, if any."""

    def __init__(self, message: str, *, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.original = original


class StorageClosedError(StorageError):
    """An operation was attempted on a store that has been closed."""


class StorageLockedError(StorageError):
    """The database is held by another process or handle."""


class StoreNotFoundError(StorageError):
    """Opening without ``create`` found no store where the URL points; nothing was created."""


class StorageConnectionError(StorageError):
    """The connection to a database server was lost or could not be made."""


class UnsupportedOperationError(StorageError):
    """The back end does not declare the capability the operation needs."""


class InvalidKeyError(SuperVMError, ValueError):
    """A key is empty or otherwise not acceptable to any store."""


class KeyTooLargeError(StorageError, ValueError):
    """A key exceeds the back end's key-size limit."""


class ValueTooLargeError(StorageError, ValueError):
    """A value exceeds the back end's value-size limit."""


class InvalidURLError(SuperVMError, ValueError):
    """A storage URL is malformed or carries an option the back end rejects."""


class BackendNotFoundError(SuperVMError, LookupError):
    """No installed back end serves a URL scheme."""

    def __init__(self, message: str, *, scheme: str, installed: list[str]) -> None:
        super().__init__(message)
        self.scheme = scheme
        self.installed = installed


class LayoutVersionError(SuperVMError):
    """A store was written with an on-disk layout this SuperVM does not read."""

    def __init__(self, message: str, *, found: int | None, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported
