"""The storage protocol every SuperVM back end implements, and what back ends share.

Keys and values are ``bytes``. A missing key reads as ``None``; an empty value
``b""`` is a value like any other. Keys must be non-empty. Scans yield pairs in
ascending unsigned-byte order of their keys.

The protocol: :class:`Storage`, :class:`Batch`, :class:`Snapshot`,
:class:`Capabilities`. For back ends: argument checks (:func:`check_key`,
:func:`check_value`, :func:`check_prefix`, :func:`check_range`,
:func:`check_ops` for a whole batch), batches (:class:`ListBatch`, the
default; :class:`DriverBatch` and :class:`QueuedBatch`, whose ``set`` and
``delete`` are closures), :class:`RangeScanStorage` (scans as key ranges),
:class:`FileStorage` and :func:`store_path` (stores in local files).
"""

from __future__ import annotations

import abc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import starmap
from operator import itemgetter
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Final, NoReturn, Self

from supervm.errors import (
    InvalidKeyError,
    KeyTooLargeError,
    StorageClosedError,
    StorageError,
    StoreNotFoundError,
    SuperVMError,
    UnsupportedOperationError,
    ValueTooLargeError,
)

if TYPE_CHECKING:
    from supervm.url import StorageURL

__all__ = [
    "BAD_BATCH_OP",
    "FINISHED_BATCH",
    "Batch",
    "BatchOp",
    "Capabilities",
    "Closing",
    "ClosureBatch",
    "DriverBatch",
    "FileStorage",
    "ListBatch",
    "QueuedBatch",
    "RangeScanStorage",
    "Snapshot",
    "Storage",
    "apply_ops",
    "batch_finished",
    "check_key",
    "check_ops",
    "check_prefix",
    "check_range",
    "check_value",
    "normalise_ops",
    "prefix_upper_bound",
    "store_path",
]

#: One batch operation: ``(key, value)`` puts, ``(key, None)`` deletes.
BatchOp = tuple[bytes, bytes | None]

#: The TypeError message for a batch operation that is not such a pair.
BAD_BATCH_OP: Final = "batch operations must be (key, value) or (key, None) tuples"
#: The RuntimeError message for using a batch after its commit or discard.
FINISHED_BATCH: Final = "this batch was already committed or discarded"

_NO_LIMIT: Final = 1 << 62
_key_of = itemgetter(0)
_value_of = itemgetter(1)


def batch_finished(*args: object) -> NoReturn:
    """Raise the ``RuntimeError`` of a batch used after its commit or discard."""
    raise RuntimeError(FINISHED_BATCH)


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
    """A batch that collects operations and hands them to ``Storage.write_batch``.

    Each operation is checked as it is queued, against the store's declared
    key and value limits. This is what :meth:`Storage.batch` returns unless a
    back end has a batch of its own.
    """

    __slots__ = ("_count", "_done", "_ops", "_storage")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._ops: dict[bytes, bytes | None] = {}
        self._count = 0
        self._done = False

    def set(self, key: bytes, value: bytes) -> None:
        if self._done:
            batch_finished()
        caps = self._storage.capabilities
        check_key(key, caps.max_key_size)
        check_value(value, caps.max_value_size)
        self._ops[key] = value
        self._count += 1

    def delete(self, key: bytes) -> None:
        if self._done:
            batch_finished()
        check_key(key, self._storage.capabilities.max_key_size)
        self._ops[key] = None
        self._count += 1

    def commit(self) -> None:
        if self._done:
            batch_finished()
        self._done = True
        if self._ops:
            self._storage.write_batch(self._ops.items())

    def discard(self) -> None:
        if not self._done:
            self._done = True
            self._ops.clear()
            self._count = 0

    def __len__(self) -> int:
        return self._count


class ClosureBatch(Batch):
    """A batch whose ``set`` and ``delete`` are closures stored on the instance.

    A call is then one plain function call that checks its arguments inline,
    with no attribute lookups; the closures shadow the class methods (so
    subclasses keep no ``__slots__``). Finishing the batch points what they
    write with at :func:`batch_finished`, so even a ``set`` fetched before the
    commit refuses further use. Subclasses make the closures and pass them to
    :meth:`_bind` with a ``finish(discarding)`` closure that does that
    rebinding and says whether the batch was still pending.
    """

    _finish: Callable[[bool], bool]

    def _bind(
        self,
        set: Callable[[bytes, bytes], None],
        delete: Callable[[bytes], None],
        finish: Callable[[bool], bool],
    ) -> None:
        self.set = set  # type: ignore[method-assign, assignment]
        self.delete = delete  # type: ignore[method-assign, assignment]
        self._finish = finish

    # Reached only through the class (``SomeBatch.set(batch, ...)``).
    def set(self, key: bytes, value: bytes) -> None:
        vars(self)["set"](key, value)

    def delete(self, key: bytes) -> None:
        vars(self)["delete"](key)

    def commit(self) -> None:
        if not self._finish(False):
            batch_finished()
        self._commit()

    def discard(self) -> None:
        self._finish(True)

    @abc.abstractmethod
    def _commit(self) -> None:
        """Write the queued operations (the batch is already finished)."""


def _same(exc: BaseException) -> BaseException:
    return exc


def _exact_keys(call: Callable[..., object]) -> Callable[..., object]:
    """``call`` refusing keys that are not exactly ``bytes``, as ``check_key`` does."""

    def checked(key: bytes, *value: bytes) -> object:
        if type(key) is not bytes:
            check_key(key)
        return call(key, *value)

    return checked


class DriverBatch(ClosureBatch):
    """A batch that hands each operation straight to a driver's write batch.

    ``put(key, value)`` and ``remove(key)`` queue into the driver's batch;
    ``write()`` applies it on commit (only when something was queued) and
    ``clear()``, if given, empties it on discard.

    With ``size()``, the driver batch's own count of queued operations, and no
    ``errors``, the closures are only the checks and the driver call.
    Otherwise they also count, and replace exceptions of the ``errors`` types
    (not ``TypeError``) raised while queueing by ``error(exc)``; then
    ``typed_keys`` says that ``put`` and ``remove`` refuse keys that are not
    exactly ``bytes`` themselves (``TypeError``, as plyvel's do), which spares
    that check.
    """

    def __init__(
        self,
        put: Callable[[bytes, bytes], object],
        remove: Callable[[bytes], object],
        write: Callable[[], object],
        clear: Callable[[], object] | None = None,
        *,
        size: Callable[[], int] | None = None,
        errors: tuple[type[BaseException], ...] = (),
        error: Callable[[BaseException], BaseException] = _same,
        typed_keys: bool = False,
    ) -> None:
        count = 0
        if size is not None and not errors:
            queued = size

            def set(key: bytes, value: bytes) -> None:
                """Queue a put."""
                if type(key) is not bytes or not key:
                    check_key(key)
                if type(value) is not bytes:
                    check_value(value)
                put(key, value)

            def delete(key: bytes) -> None:
                """Queue a delete."""
                if type(key) is not bytes or not key:
                    check_key(key)
                remove(key)

        else:
            if not typed_keys:
                put, remove = _exact_keys(put), _exact_keys(remove)

            def queued() -> int:
                return count

            def set(key: bytes, value: bytes) -> None:
                """Queue a put."""
                nonlocal count
                if not key:
                    check_key(key)
                if type(value) is not bytes:
                    check_value(value)
                try:
                    put(key, value)
                except errors as exc:
                    raise error(exc) from exc
                count += 1

            def delete(key: bytes) -> None:
                """Queue a delete."""
                nonlocal count
                if not key:
                    check_key(key)
                try:
                    remove(key)
                except errors as exc:
                    raise error(exc) from exc
                count += 1

        done = 0

        def finish(discarding: bool) -> bool:
            nonlocal put, remove, errors, done
            if put is batch_finished:
                return False
            put = remove = batch_finished
            errors = ()
            if not discarding:
                done = queued()
            elif clear is not None:
                clear()
            return True

        self._bind(set, delete, finish)
        self._size: Callable[[], int] = lambda: done if put is batch_finished else queued()
        self._write = write

    def _commit(self) -> None:
        if self._size():
            self._write()

    def __len__(self) -> int:
        return self._size()


class _FinishedOps(list[BatchOp]):
    """The operation list a finished batch's closures append to: it refuses."""

    __slots__ = ()

    def append(self, op: BatchOp, /) -> None:
        batch_finished()


_FINISHED_OPS: Final = _FinishedOps()


class QueuedBatch(ClosureBatch):
    """A batch that queues checked operations in a list for one write on commit.

    ``write(ops, deletes)`` gets the operations in order and whether any of
    them is a delete. Keys longer than ``max_key_size`` are refused as they
    are queued; values are not size-checked.
    """

    def __init__(
        self,
        write: Callable[[list[BatchOp], bool], object],
        max_key_size: int | None = None,
    ) -> None:
        queued: list[BatchOp] = []
        ops = queued  # what the closures append to: ``_FINISHED_OPS`` once finished
        deletes = False
        limit = _NO_LIMIT if max_key_size is None else max_key_size

        def set(key: bytes, value: bytes) -> None:
            """Queue a put."""
            if type(key) is not bytes or not 0 < len(key) <= limit:
                check_key(key, max_key_size)
            if type(value) is not bytes:
                check_value(value)
            ops.append((key, value))

        def delete(key: bytes) -> None:
            """Queue a delete."""
            nonlocal deletes
            if type(key) is not bytes or not 0 < len(key) <= limit:
                check_key(key, max_key_size)
            ops.append((key, None))
            deletes = True

        def finish(discarding: bool) -> bool:
            nonlocal ops
            if ops is _FINISHED_OPS:
                return False
            ops = _FINISHED_OPS
            if discarding:
                queued.clear()
            return True

        self._bind(set, delete, finish)
        self._ops = queued
        self._deletes: Callable[[], bool] = lambda: deletes
        self._write = write

    def _commit(self) -> None:
        if self._ops:
            self._write(self._ops, self._deletes())

    def __len__(self) -> int:
        return len(self._ops)


class Closing:
    """Context-manager use for anything with a ``close()``: leaving the block closes it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Snapshot(Closing, abc.ABC):
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


class Storage(Closing, abc.ABC):
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

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.scan(b"")


class RangeScanStorage(Storage):
    """A store whose prefix and range scans are all one ordered read of a key range.

    Subclasses implement :meth:`_range`; ``scan`` and ``scan_range`` check
    their arguments and that the store is open, and turn a prefix into its
    key range. Such a store declares ``range_scan`` and ``reverse_scan``.
    """

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        if self.closed:
            self._check_open()
        return self._range(prefix or None, prefix_upper_bound(prefix), False)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_range(start, end, reverse)
        self._check_open()
        return self._range(start, end, reverse)

    @abc.abstractmethod
    def _range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` (``None``: unbounded), in key order or reversed."""


class FileStorage(Storage):
    """A store kept in local files: what such stores share.

    A subclass sets ``_path`` (see :func:`store_path`), ``_sync`` and
    ``_closed`` when it opens; this gives the read-only :attr:`path` and
    :attr:`sync`, :attr:`closed` and the repr. Such stores persist, scan
    ranges both ways, take snapshots and can sync writes; a subclass declares
    what differs (e.g. ``dataclasses.replace(FileStorage.capabilities, ...)``).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        range_scan=True,
        reverse_scan=True,
        snapshots=True,
        sync_writes=True,
    )

    _path: str
    _sync: bool
    _closed: bool

    @property
    def path(self) -> str:
        """Absolute path of the store's directory (or file)."""
        return self._path

    @property
    def sync(self) -> bool:
        """Whether every write is made durable before it returns."""
        return self._sync

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._path!r} {state}>"


def check_range(start: object, end: object, reverse: object) -> None:
    """Validate ``scan_range`` arguments."""
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and type(bound) is not bytes:
            raise TypeError(f"scan_range {name} must be bytes or None, not {type(bound).__name__}")
    if type(reverse) is not bool:
        raise TypeError("scan_range reverse must be a bool")


def check_ops(
    ops: Iterable[BatchOp], max_key_size: int | None = None, max_value_size: int | None = None
) -> tuple[list[BatchOp], bool]:
    """Validate batch operations before anything is written.

    Returns them as a list (``ops`` itself when it is one) and whether any of
    them is a delete. The checks run in one loop (sizes, when limited, in one
    more pass in C), so a back end's ``write_batch`` calls this once instead
    of checking operation by operation.
    """
    checked = ops if type(ops) is list else list(ops)
    deletes = False
    try:
        for op in checked:
            if type(op) is not tuple:
                raise TypeError(BAD_BATCH_OP)
            key, value = op  # ValueError unless a pair
            if type(key) is not bytes or not key:
                check_key(key)
            if value is None:
                deletes = True
            elif type(value) is not bytes:
                check_value(value)
    except ValueError as exc:
        if isinstance(exc, SuperVMError):
            raise
        raise TypeError(BAD_BATCH_OP) from None
    if max_key_size is not None and max(map(len, map(_key_of, checked)), default=0) > max_key_size:
        for key, _ in checked:
            check_key(key, max_key_size)
    if max_value_size is not None:
        longest = max(map(len, filter(None, map(_value_of, checked))), default=0)
        if longest > max_value_size:
            for _, value in checked:
                if value is not None:
                    check_value(value, max_value_size)
    return checked, deletes


def normalise_ops(
    ops: Iterable[BatchOp], max_key: int | None, max_value: int | None
) -> list[BatchOp]:
    """Validate batch operations before anything is written; return them as a list."""
    return check_ops(ops, max_key, max_value)[0]


def apply_ops(
    ops: list[BatchOp],
    deletes: bool,
    put: Callable[[bytes, bytes], object],
    remove: Callable[[bytes], object],
) -> None:
    """Hand checked operations, in order, to ``put(key, value)`` and ``remove(key)``.

    ``deletes`` says whether any operation is a delete (see :func:`check_ops`);
    without deletes the loop runs in C.
    """
    if not deletes:
        deque(starmap(put, ops), 0)
        return
    for key, value in ops:
        if value is None:
            remove(key)
        else:
            put(key, value)


def store_path(
    path: str | os.PathLike[str], *, create: bool, kind: str, marker: str | None = None
) -> str:
    """Absolute path of a store kept in local files, ready for its driver to open.

    With ``marker``, ``path`` is a directory and ``marker`` a file in it that
    only an existing store has; without, ``path`` is the store's own file.
    With ``create`` the directory (for a file, the directory it is in) is made
    with any missing parents. Without, :class:`StoreNotFoundError` is raised
    unless the store exists, and nothing is created. ``kind`` names the
    database in messages ("RocksDB").
    """
    full = os.path.abspath(os.fspath(path))
    if not create:
        found = os.path.isfile(full if marker is None else os.path.join(full, marker))
        if not found:
            raise StoreNotFoundError(
                f"no {kind} store at {full}: nothing was created (create=false)"
            )
        return full
    directory = full if marker is not None else os.path.dirname(full)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the directory of the {kind} store at {full}: {exc}", original=exc
        ) from exc
    return full
