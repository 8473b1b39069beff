"""LevelDB storage back end built on plyvel."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, Self, TypeVar

import plyvel

from supervm.errors import StorageClosedError, StorageError, StorageLockedError
from supervm.storage import (
    Batch,
    BatchOp,
    DriverBatch,
    FileStorage,
    Snapshot,
    apply_ops,
    check_key,
    check_ops,
    check_prefix,
    check_range,
    check_value,
    store_path,
)
from supervm.url import StorageURL

__all__ = ["LevelDBStorage"]

#: What plyvel raises: ``plyvel.Error`` (and its ``IOError``/``CorruptionError``
#: subclasses) for LevelDB failures, ``RuntimeError`` for a closed database,
#: snapshot or iterator.
_DRIVER_ERRORS = (plyvel.Error, RuntimeError)

_OPTIONS = ("compression", "create", "sync")

# Key checks on the hot paths test only for the empty key: plyvel's arguments
# are typed ``bytes`` and refuse anything else (str, bytearray, memoryview,
# bytes subclasses, None) with TypeError before touching the database. Values
# are accepted by plyvel as any buffer, so they get the full ``type() is bytes``
# test here.

_ErrorFactory = Callable[[BaseException], StorageError]
_T = TypeVar("_T")


def _driver_message(exc: BaseException) -> str:
    """The driver's message as text (plyvel carries LevelDB's status as bytes)."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc)


def _iterate(
    it: Any, error: _ErrorFactory, floor: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """Yield from a plyvel iterator, turning driver errors into storage errors.

    With ``floor``, a descending iterator stops before the first key below it.
    """
    try:
        if floor is None:
            yield from it
        else:
            for pair in it:
                if pair[0] < floor:
                    return
                yield pair
    except _DRIVER_ERRORS as exc:
        raise error(exc) from exc
    finally:
        it.close()


def _leveldb_batch(wb: Any, error: _ErrorFactory) -> Batch:
    """A batch queued straight into plyvel's ``WriteBatch``; driver errors become ``error``."""

    def write() -> None:
        try:
            wb.write()
        except _DRIVER_ERRORS as exc:
            raise error(exc) from exc

    return DriverBatch(
        wb.put, wb.delete, write, errors=_DRIVER_ERRORS, error=error, typed_keys=True
    )


class _LevelDBSnapshot(Snapshot):
    """A plyvel snapshot: reads see the store as it was when it was taken."""

    __slots__ = ("_path", "_snap")

    def __init__(self, snap: Any, path: str) -> None:
        self._snap: Any = snap
        self._path = path

    def _error(self, exc: BaseException) -> StorageError:
        if isinstance(exc, RuntimeError):
            return StorageClosedError(
                f"LevelDB snapshot of {self._path} is closed (or its store is)", original=exc
            )
        return StorageError(
            f"LevelDB error reading a snapshot of {self._path}: {_driver_message(exc)}",
            original=exc,
        )

    def get(self, key: bytes) -> bytes | None:
        if not key:
            check_key(key)
        try:
            value: bytes | None = self._snap.get(key)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc
        return value

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        try:
            it = self._snap.iterator(prefix=prefix)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc
        return _iterate(it, self._error)

    def close(self) -> None:
        self._snap.close()


def _raise_closed(path: str, *args: object, **kwargs: object) -> NoReturn:
    raise StorageClosedError(f"LevelDB store at {path} is closed")


class LevelDBStorage(FileStorage):
    """A persistent store in a LevelDB database directory (``leveldb://``)."""

    schemes = ("leveldb",)
    url_form = (
        "leveldb:///ABS/PATH or leveldb://REL/PATH"
        "[?sync=false|true&compression=snappy|none&create=true|false]"
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = False,
        compression: str | None = "snappy",
        create: bool = True,
    ) -> None:
        """Open (by default creating) the LevelDB database in directory ``path``.

        ``sync`` makes every write durable before it returns; ``compression``
        is ``"snappy"`` or ``"none"``/``None``. With ``create=False`` a missing
        database raises :class:`~supervm.errors.StoreNotFoundError` and
        nothing is created.
        """
        if compression not in ("snappy", "none", None):
            raise ValueError(f"compression must be 'snappy' or 'none', not {compression!r}")
        self._path = store_path(path, create=create, kind="LevelDB", marker="CURRENT")
        self._sync = sync
        self._closed = False
        try:
            db = plyvel.DB(
                self.path,
                create_if_missing=create,
                compression=None if compression == "none" else compression,
            )
        except plyvel.IOError as exc:
            message = _driver_message(exc)
            if "lock" in message.lower():
                raise StorageLockedError(
                    f"LevelDB database at {self.path} is locked: another process, or another "
                    f"open handle in this process, is using it ({message})",
                    original=exc,
                ) from exc
            raise StorageError(
                f"cannot open LevelDB database at {self.path}: {message}", original=exc
            ) from exc
        except (plyvel.Error, OSError) as exc:
            raise StorageError(
                f"cannot open LevelDB database at {self.path}: {_driver_message(exc)}",
                original=exc,
            ) from exc
        self._db: Any = db
        self._bind(db, sync)

    def _bind(self, db: Any, sync: bool) -> None:
        self._get: Callable[[bytes], bytes | None] = db.get
        self._iterator: Callable[..., Any] = db.iterator
        self._snapshot: Callable[[], Any] = db.snapshot
        if sync:
            self._put: Callable[[bytes, bytes], None] = functools.partial(db.put, sync=True)
            self._delete: Callable[[bytes], None] = functools.partial(db.delete, sync=True)
            self._write_batch: Callable[[], Any] = functools.partial(
                db.write_batch, transaction=True, sync=True
            )
        else:
            self._put = db.put
            self._delete = db.delete
            self._write_batch = functools.partial(db.write_batch, transaction=True)
        # The hot point operations as per-instance closures (unless a subclass
        # overrides them): see ``_fast_point_ops``.
        cls = type(self)
        self._fast_get, self._fast_set = _fast_point_ops(self._get, self._put, db, self.path)
        if cls.get is LevelDBStorage.get:
            self.get = self._fast_get  # type: ignore[method-assign, assignment]
        if cls.set is LevelDBStorage.set:
            self.set = self._fast_set  # type: ignore[method-assign, assignment]

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Open ``leveldb:///ABS/PATH`` or ``leveldb://REL/PATH`` with its query options."""
        url.reject_unknown_options(_OPTIONS)
        path = url.file_path()
        return cls(
            path,
            sync=url.bool_option("sync", False),
            compression=url.choice_option("compression", "snappy", ("snappy", "none")),
            create=url.bool_option("create", True),
        )

    def _error(self, exc: BaseException) -> StorageError:
        if self._closed:
            return StorageClosedError(f"LevelDB store at {self.path} is closed", original=exc)
        return StorageError(f"LevelDB error on {self.path}: {_driver_message(exc)}", original=exc)

    # ``get`` and ``set`` of an instance are the closures made in ``_bind``;
    # these are reached through the class (a subclass calling ``super()``).
    def get(self, key: bytes) -> bytes | None:
        return self._fast_get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self._fast_set(key, value)

    def delete(self, key: bytes) -> None:
        if not key:
            check_key(key)
        try:
            self._delete(key)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)``, with driver errors raised as storage errors."""
        try:
            return fn(*args, **kwargs)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        return _iterate(self._call(self._iterator, prefix=prefix), self._error)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_range(start, end, reverse)
        if reverse and start:
            # plyvel 1.5 skips the range when a reverse iterator's start bound is
            # the only key in it: bound the descent here instead.
            it = self._call(self._iterator, stop=end, reverse=True)
            return _iterate(it, self._error, start)
        it = self._call(self._iterator, start=start, stop=end, reverse=reverse)
        return _iterate(it, self._error)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        # Nothing reaches the database before ``write()``: an invalid
        # operation part-way through leaves the store untouched.
        checked, deletes = check_ops(ops)
        try:
            wb = self._write_batch()
            apply_ops(checked, deletes, wb.put, wb.delete)
            wb.write()
        except _DRIVER_ERRORS as exc:
            raise self._error(exc) from exc

    def batch(self) -> Batch:
        return _leveldb_batch(self._call(self._write_batch), self._error)

    def snapshot(self) -> Snapshot:
        return _LevelDBSnapshot(self._call(self._snapshot), self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        closed = functools.partial(_raise_closed, self.path)
        self._get = self._put = self._delete = closed
        self._iterator = self._write_batch = self._snapshot = closed
        self._db.close()


def _fast_point_ops(
    db_get: Callable[[bytes], bytes | None],
    db_put: Callable[[bytes, bytes], None],
    db: Any,
    path: str,
) -> tuple[Callable[[bytes], bytes | None], Callable[[bytes, bytes], None]]:
    """``LevelDBStorage.get`` and ``set`` as closures over the driver's bound methods.

    Installed on each instance, shadowing the class methods: a call skips the
    bound-method dispatch and the attribute lookups of the class method. They
    hold no reference to the store (a store dropped without ``close()`` is still
    freed, and its lock released, at once). Once the database is closed, plyvel
    raises ``RuntimeError``, reported as :class:`StorageClosedError`.
    """

    def error(exc: BaseException) -> StorageError:
        if db.closed:
            return StorageClosedError(f"LevelDB store at {path} is closed", original=exc)
        return StorageError(f"LevelDB error on {path}: {_driver_message(exc)}", original=exc)

    def get(key: bytes) -> bytes | None:
        """Value of ``key``, or ``None`` when absent."""
        if not key:
            check_key(key)
        try:
            return db_get(key)
        except _DRIVER_ERRORS as exc:
            raise error(exc) from exc

    def set(key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``."""
        if not key:
            check_key(key)
        if type(value) is not bytes:
            check_value(value)
        try:
            db_put(key, value)
        except _DRIVER_ERRORS as exc:
            raise error(exc) from exc

    return get, set
