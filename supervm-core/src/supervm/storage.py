"""The storage protocol every SuperVM back end implements.

Keys and values are ``bytes``. A missing key reads as ``None``; an empty value
``b""`` is a value like any other. Keys must be non-empty. Scans yield pairs in
ascending unsigned-byte order of their keys.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

from supervm.errors import (
    InvalidKeyError,
    KeyTooLargeError,
    StorageClosedError,
    UnsupportedOperationError,
    ValueTooLargeError,
)

if TYPE_CHECKING:
    from supervm.url import StorageURL

__all__ = [
    "BAD_BATCH_OP",
    "Batch",
    "BatchOp",
    "Capabilities",
    "ListBatch",
    "Snapshot",
    "Storage",
    "check_key",
    "check_value",
    "prefix_upper_bound",
]

#: One batch operation: ``(key, value)`` puts, ``(key, None)`` deletes.
BatchOp = tuple[bytes, bytes | None]

#: The TypeError message for a batch operation that is not such a pair.
BAD_BATCH_OP = "batch operations must be (key, value) or (key, None) tuples"


@dataclass(frozen=True)
class Capabilities:
    """What a back end can do beyond the required protocol."""

    #: Data survives ``close()`` and a new ``open_storage`` of the same URL.
    persistent: bool = False
    #: ``scan_range(start, end)`` is supported.
    range_scan: bool = False
    #: ``scan_range(..., reverse=True)`` is supported.
    reverse_scan: bool = False
    #: ``snapshot()`` returns a consistent read-only view.
    snapshots: bool = False
    #: Writes can be made durable before they return (a ``sync`` URL option).
    sync_writes: bool = False
    #: Largest accepted key in bytes, or ``None`` for no limit of its own.
    max_key_size: int | None = None
    #: Largest accepted value in bytes, or ``None`` for no limit of its own.
    max_value_size: int | None = None


def check_key(key: object, max_size: int | None = None) -> bytes:
    """Return ``key`` if it is a valid key, else raise the matching error."""
    if type(key) is not bytes:
        raise TypeError(f"storage keys must be bytes, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("storage keys must not be empty")
    if max_size is not None and len(key) > max_size:
        raise KeyTooLargeError(f"key of {len(key)} bytes exceeds this store's limit of {max_size}")
    return key


def check_value(value: object, max_size: int | None = None) -> bytes:
    """Return ``value`` if it is a valid value, else raise the matching error."""
    if type(value) is not bytes:
        raise TypeError(f"storage values must be bytes, not {type(value).__name__}")
    if max_size is not None and len(value) > max_size:
        raise ValueTooLargeError(
            f"value of {len(value)} bytes exceeds this store's limit of {max_size}"
        )
    return value


def check_prefix(prefix: object) -> bytes:
    """Return ``prefix`` if it is bytes (the empty prefix is allowed)."""
    if type(prefix) is not bytes:
        raise TypeError(f"scan prefixes must be bytes, not {type(prefix).__name__}")
    return prefix


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key that starts with ``prefix``.

    ``None`` when no such key exists (empty prefix, or all ``0xff`` bytes).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


class Batch(abc.ABC):
    """A group of writes that land together or not at all.

    Use as a context manager: the batch commits when the block exits normally
    and is discarded when it raises. Later operations on a key override earlier
    ones in the same batch. A committed or discarded batch refuses further use
    with ``RuntimeError``.
    """

    @abc.abstractmethod
    def set(self, key: bytes, value: bytes) -> None:
        """Queue a put."""

    @abc.abstractmethod
    def delete(self, key: bytes) -> None:
        """Queue a delete."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Apply every queued operation atomically."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop every queued operation."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of operations queued (a key set twice counts twice)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class ListBatch(Batch):
    """A batch that collects operations and hands them to ``Storage.write_batch``."""

    __slots__ = ("_count", "_done", "_ops", "_storage")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._ops: dict[bytes, bytes | None] = {}
        self._count = 0
        self._done = False

    def _check_pending(self) -> None:
        if self._done:
            raise RuntimeError("this batch was already committed or discarded")

    def set(self, key: bytes, value: bytes) -> None:
        self._check_pending()
        caps = self._storage.capabilities
        check_key(key, caps.max_key_size)
        check_value(value, caps.max_value_size)
        self._ops[key] = value
        self._count += 1

    def delete(self, key: bytes) -> None:
        self._check_pending()
        check_key(key, self._storage.capabilities.max_key_size)
        self._ops[key] = None
        self._count += 1

    def commit(self) -> None:
        self._check_pending()
        self._done = True
        if self._ops:
            self._storage.write_batch(self._ops.items())

    def discard(self) -> None:
        self._done = True
        self._ops.clear()

    def __len__(self) -> int:
        return self._count


class Snapshot(abc.ABC):
    """A read-only, point-in-time view of a store."""

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """Value of ``key`` when the snapshot was taken."""

    @abc.abstractmethod
    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in ascending key order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the snapshot."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Storage(abc.ABC):
    """A key-value store of bytes with prefix scans and atomic batches."""

    #: URL scheme(s) this back end serves, e.g. ``("rocksdb",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: A human-readable URL template shown by ``supervm backends``.
    url_form: ClassVar[str] = ""
    #: What this back end supports beyond the required protocol.
    capabilities: ClassVar[Capabilities] = Capabilities()

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Open a store described by a parsed URL."""

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """Value of ``key``, or ``None`` when absent."""

    @abc.abstractmethod
    def set(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``."""

    @abc.abstractmethod
    def delete(self, key: bytes) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    @abc.abstractmethod
    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in ascending unsigned-byte order."""

    @abc.abstractmethod
    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        """Apply puts ``(key, value)`` and deletes ``(key, None)`` atomically, in order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; closing twice is allowed."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""

    def batch(self) -> Batch:
        """A new atomic batch (see :class:`Batch`)."""
        self._check_open()
        return ListBatch(self)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` (either bound optional), ascending or reversed."""
        raise UnsupportedOperationError(f"{type(self).__name__} does not support range scans")

    def snapshot(self) -> Snapshot:
        """A consistent read-only view of the store as it is now."""
        raise UnsupportedOperationError(f"{type(self).__name__} does not support snapshots")

    def _check_open(self) -> None:
        if self.closed:
            raise StorageClosedError(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.scan(b"")


def check_range(start: object, end: object, reverse: object) -> None:
    """Validate ``scan_range`` arguments."""
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and type(bound) is not bytes:
            raise TypeError(f"scan_range {name} must be bytes or None, not {type(bound).__name__}")
    if type(reverse) is not bool:
        raise TypeError("scan_range reverse must be a bool")


def normalise_ops(
    ops: Iterable[BatchOp], max_key: int | None, max_value: int | None
) -> list[BatchOp]:
    """Validate batch operations before anything is written; return them as a list."""
    out: list[BatchOp] = []
    for op in ops:
        if type(op) is not tuple or len(op) != 2:
            raise TypeError(BAD_BATCH_OP)
        key, value = op
        check_key(key, max_key)
        if value is not None:
            check_value(value, max_value)
        out.append((key, value))
    return out
