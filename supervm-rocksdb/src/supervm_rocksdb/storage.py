"""The RocksDB store, on rocksdict in raw mode (``rocksdb://``)."""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import Any, Final, Self

from rocksdict import (
    DbClosedError,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

from supervm.errors import InvalidURLError, StorageClosedError, StorageError, StorageLockedError
from supervm.storage import (
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
    prefix_upper_bound,
    store_path,
)
from supervm.url import StorageURL

__all__ = ["COMPRESSIONS", "RocksDBBatch", "RocksDBSnapshot", "RocksDBStorage"]

#: Accepted values of the ``compression`` URL option, mapped to rocksdict's factories.
COMPRESSIONS: Final[dict[str, Callable[[], DBCompressionType]]] = {
    "lz4": DBCompressionType.lz4,
    "zstd": DBCompressionType.zstd,
    "snappy": DBCompressionType.snappy,
    "zlib": DBCompressionType.zlib,
    "none": DBCompressionType.none,
}
_URL_OPTIONS: Final = ("compression", "sync", "create")
#: One-byte ``bytes`` objects by value, for computing prefix upper bounds.
_BYTE: Final = [bytes((i,)) for i in range(256)]
#: ``_hold((obj,), 0)`` is an empty iterator that keeps ``obj`` alive while it exists.
_hold: Callable[[tuple[object], int], Iterator[Any]] = islice
#: Pairs a snapshot scan reads per turn of its shared iterator.
_SNAPSHOT_CHUNK: Final = 256


@functools.cache
def compression_available(name: str) -> bool:
    """Whether the linked RocksDB really compresses data blocks with ``name``.

    A RocksDB build can accept a compression type it cannot apply and then
    store every block uncompressed; this writes one highly compressible table
    file and checks that it came out small. When the probe itself cannot run
    (no writable temporary directory), the compression is assumed to work.
    """
    if name == "none":
        return True
    options = Options(raw_mode=True)
    options.set_compression_type(COMPRESSIONS[name]())
    raw = 1 << 16
    try:
        with tempfile.TemporaryDirectory(prefix="supervm-rocksdb-") as tmp:
            writer = SstFileWriter(options=options)
            writer.open(os.path.join(tmp, "probe.sst"))
            writer[b"probe"] = bytes(raw)
            writer.finish()
            size: int = writer.file_size()
    except Exception:
        return True
    return size < raw // 2


def _check_compression(name: str) -> None:
    if name not in COMPRESSIONS:
        raise ValueError(
            f"unknown RocksDB compression {name!r}; use one of {', '.join(COMPRESSIONS)}"
        )
    if not compression_available(name):
        usable = [c for c in COMPRESSIONS if compression_available(c)]
        raise ValueError(
            f"RocksDB compression {name!r} is not usable with the installed rocksdict build "
            f"(blocks would be stored uncompressed); use one of {', '.join(usable)}"
        )


class RocksDBBatch(DriverBatch):
    """A batch written straight into a rocksdict ``WriteBatch``, applied with one write."""

    def __init__(self, storage: RocksDBStorage) -> None:
        wb = WriteBatch(raw_mode=True)
        super().__init__(
            wb.put, wb.delete, functools.partial(storage._apply, wb), wb.clear, size=wb.__len__
        )


class RocksDBSnapshot(Snapshot):
    """A point-in-time view held by one RocksDB iterator.

    A RocksDB iterator reads the database as it was when the iterator was
    made, so gets and scans both go through that one iterator, under a lock.
    """

    def __init__(self, iterator: Any, path: str) -> None:
        self._it: Any = iterator
        self._path = path
        self._lock = threading.Lock()

    def _live(self) -> Any:
        if self._it is None:
            raise StorageClosedError("RocksDB snapshot is closed")
        return self._it

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key:
            check_key(key)
        with self._lock:
            it = self._live()
            try:
                it.seek(key)
                if it.valid():
                    if it.key() == key:
                        value: bytes = it.value()
                        return value
                    return None
                it.status()
            except Exception as exc:
                raise _driver_error(exc, "snapshot get", self._path) from exc
        return None

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        check_prefix(prefix)
        self._live()
        return self._scan(prefix, prefix_upper_bound(prefix))

    def _scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        skip_first = False
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            with self._lock:
                it = self._live()
                try:
                    it.seek(start)
                    if skip_first and it.valid() and it.key() == start:
                        it.next()
                    while len(chunk) < _SNAPSHOT_CHUNK and it.valid():
                        key = it.key()
                        if end is not None and key >= end:
                            break
                        chunk.append((key, it.value()))
                        it.next()
                    else:
                        if not it.valid():
                            it.status()
                except Exception as exc:
                    raise _driver_error(exc, "snapshot scan", self._path) from exc
            yield from chunk
            if len(chunk) < _SNAPSHOT_CHUNK:
                return
            start = chunk[-1][0]
            skip_first = True

    def close(self) -> None:
        with self._lock:
            self._it = None


class RocksDBStorage(FileStorage):
    """A persistent store in a RocksDB database directory (``rocksdb://``)."""

    schemes = ("rocksdb",)
    url_form = (
        "rocksdb:///ABS/PATH or rocksdb://REL/PATH"
        "[?compression=lz4|zstd|snappy|zlib|none&sync=false&create=true]"
    )

    def __init__(
        self, path: str, *, compression: str = "lz4", sync: bool = False, create: bool = True
    ) -> None:
        """Open the database in directory ``path``.

        With ``create`` (the default) a missing database is created, with any
        missing parent directories; without, it raises
        :class:`~supervm.errors.StoreNotFoundError` and creates nothing.
        """
        _check_compression(compression)
        self._path = store_path(path, create=create, kind="RocksDB", marker="CURRENT")
        self._compression = compression
        self._sync = sync
        self._closed = False
        self._snapshots: weakref.WeakSet[RocksDBSnapshot] = weakref.WeakSet()
        self._db = self._open(create)
        db = self._db
        self._fast_get = _fast_get(db.get, self._path)
        if type(self).get is RocksDBStorage.get:
            self.get = self._fast_get  # type: ignore[method-assign, assignment]
        self._put: Callable[[bytes, bytes], None] = db.put
        self._del: Callable[[bytes], None] = db.delete
        self._items: Callable[..., Any] = db.items
        self._write: Callable[[WriteBatch], None] = db.write
        if sync:
            write_options = WriteOptions()
            write_options.sync = True
            db.set_write_options(write_options)
            self._write = functools.partial(db.write, write_opt=write_options)

    def _open(self, create: bool) -> Rdict:
        path = self._path
        options = Options(raw_mode=True)
        options.create_if_missing(create)
        options.set_compression_type(COMPRESSIONS[self._compression]())
        try:
            # Naming the default column family makes rocksdict use these options
            # for it; otherwise it reuses the ones stored when the database was made.
            return Rdict(path, options=options, column_families={"default": options})
        except Exception as exc:
            message = str(exc)
            if "lock hold by current process" in message or "While lock file" in message:
                raise StorageLockedError(
                    f"RocksDB database at {path} is locked: another process or another open "
                    f"handle in this process is using it ({message})",
                    original=exc,
                ) from exc
            raise StorageError(
                f"cannot open RocksDB database at {path}: {message}", original=exc
            ) from exc

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Open ``rocksdb:///abs/path`` or ``rocksdb://rel/path`` with its query options."""
        url.reject_unknown_options(_URL_OPTIONS)
        path = url.file_path()
        compression = url.choice_option("compression", "lz4", COMPRESSIONS)
        sync = url.bool_option("sync", False)
        create = url.bool_option("create", True)
        try:
            _check_compression(compression)
        except ValueError as exc:
            raise InvalidURLError(
                f"option compression={compression!r} in {url.raw!r}: {exc}"
            ) from None
        return cls(path, compression=compression, sync=sync, create=create)

    @property
    def compression(self) -> str:
        """Compression applied to new data blocks."""
        return self._compression

    def _error(self, exc: Exception, action: str) -> StorageError:
        return _driver_error(exc, action, self._path, self._closed)

    # -- point operations ---------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        # An instance's ``get`` is the closure made in ``__init__``; this is
        # reached through the class (a subclass calling ``super()``).
        return self._fast_get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not key:
            check_key(key)
        if type(value) is not bytes:
            check_value(value)
        try:
            self._put(key, value)
        except Exception as exc:
            raise self._error(exc, "put") from exc

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes or not key:
            check_key(key)
        try:
            self._del(key)
        except Exception as exc:
            raise self._error(exc, "delete") from exc

    # -- scans -----------------------------------------------------------------

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        read_options = ReadOptions()
        if prefix:
            last = prefix[-1]
            upper = prefix[:-1] + _BYTE[last + 1] if last != 0xFF else prefix_upper_bound(prefix)
            if upper is not None:
                read_options.set_iterate_upper_bound(upper)
        try:
            items: Iterator[tuple[bytes, bytes]] = self._items(
                from_key=prefix, read_opt=read_options
            )
        except Exception as exc:
            raise self._error(exc, "scan") from exc
        # rocksdict's iterator reads its upper bound from memory the ReadOptions
        # object owns but does not keep that object alive: the empty islice
        # chained after the pairs holds it for as long as the iterator lives.
        return chain(items, _hold((read_options,), 0))

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_range(start, end, reverse)
        if not start:
            start = None
        if end is not None and (not end or (start is not None and start >= end)):
            self._check_open()
            return iter(())
        read_options = ReadOptions()
        if end is not None:
            read_options.set_iterate_upper_bound(end)
        try:
            items: Iterator[tuple[bytes, bytes]] = (
                self._items(backwards=True, read_opt=read_options)
                if reverse
                else self._items(from_key=start, read_opt=read_options)
            )
        except Exception as exc:
            raise self._error(exc, "scan") from exc
        if reverse and start is not None:
            return _down_to(items, start, read_options)
        return chain(items, _hold((read_options,), 0))

    # -- batches -----------------------------------------------------------------

    def batch(self) -> RocksDBBatch:
        self._check_open()
        return RocksDBBatch(self)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked, deletes = check_ops(ops)
        wb = WriteBatch(raw_mode=True)
        apply_ops(checked, deletes, wb.put, wb.delete)
        self._apply(wb)

    def _apply(self, wb: WriteBatch) -> None:
        try:
            self._write(wb)
        except Exception as exc:
            raise self._error(exc, "write") from exc

    # -- snapshots and lifecycle ------------------------------------------------

    def snapshot(self) -> RocksDBSnapshot:
        self._check_open()
        try:
            iterator = self._db.iter()
        except Exception as exc:
            raise self._error(exc, "snapshot") from exc
        snap = RocksDBSnapshot(iterator, self._path)
        self._snapshots.add(snap)
        return snap

    def close(self) -> None:
        """Close the database; open snapshots are closed with it. Closing twice is allowed."""
        if self._closed:
            return
        self._closed = True
        for snap in list(self._snapshots):
            snap.close()
        try:
            self._db.close()
        except DbClosedError:
            pass
        except Exception as exc:
            raise StorageError(
                f"closing RocksDB database at {self._path} failed: {exc}", original=exc
            ) from exc


def _driver_error(exc: Exception, action: str, path: str, closed: bool = False) -> StorageError:
    """The SuperVM error for a rocksdict exception."""
    if closed or isinstance(exc, DbClosedError):
        return StorageClosedError("RocksDBStorage is closed", original=exc)
    return StorageError(f"RocksDB {action} failed at {path}: {exc}", original=exc)


def _fast_get(
    db_get: Callable[[bytes], bytes | None], path: str
) -> Callable[[bytes], bytes | None]:
    """``RocksDBStorage.get`` as a closure over the driver's ``get``.

    Installed on each instance: calling it skips the bound-method dispatch and
    the attribute lookup of the class method, and it holds no reference to the
    store (so a store dropped without ``close()`` is still freed at once).
    """

    def get(key: bytes) -> bytes | None:
        """Value of ``key``, or ``None`` when absent."""
        if type(key) is not bytes or not key:
            check_key(key)
        try:
            return db_get(key)
        except Exception as exc:
            raise _driver_error(exc, "get", path) from exc

    return get


def _down_to(
    items: Iterator[tuple[bytes, bytes]], start: bytes, read_options: ReadOptions
) -> Iterator[tuple[bytes, bytes]]:
    """Pairs from a backward iterator until a key falls below ``start``."""
    for pair in items:
        if pair[0] < start:
            return
        yield pair
