"""A SuperVM store in an LMDB environment (``lmdb://``)."""

from __future__ import annotations

import dataclasses
import mmap
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Self

import lmdb

from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
)
from supervm.storage import (
    BatchOp,
    FileStorage,
    QueuedBatch,
    RangeScanStorage,
    Snapshot,
    apply_ops,
    check_key,
    check_ops,
    check_prefix,
    check_value,
    prefix_upper_bound,
    store_path,
)
from supervm.url import StorageURL

__all__ = ["DEFAULT_MAP_SIZE", "MAX_KEY_SIZE", "LMDBBatch", "LMDBSnapshot", "LMDBStorage"]

#: LMDB's key-size limit in bytes (``mdb_env_get_maxkeysize`` of a default build).
MAX_KEY_SIZE = 511
#: Initial map size when the URL gives none; the map grows on demand.
DEFAULT_MAP_SIZE = 64 << 20

_OPTIONS = ("map_size", "sync", "max_readers", "create")
_SIZE_UNITS = {"": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]ib)?\s*$", re.IGNORECASE)
# How often a read is retried after its transaction was invalidated by a map resize.
_READ_RETRIES = 8
# Upper bound on grow-and-retry rounds of one write (each round at least doubles the map).
_GROW_ROUNDS = 48
# Longest wait of a map resize for scans in other threads, in seconds.
_REMAP_WAIT = 1.0
# Read transactions py-lmdb keeps for reuse; makes a fresh read transaction cheap.
_SPARE_TXNS = 4


def _parse_size(url: StorageURL, name: str, default: int) -> int:
    text = url.options.get(name)
    if text is None:
        return default
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidURLError(
            f"option {name}={text!r} in {url.raw!r} is not a size "
            "(bytes, or a number with KiB, MiB, GiB or TiB)"
        )
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if size < 1:
        raise InvalidURLError(f"option {name}={text!r} in {url.raw!r} must be >= 1")
    return size


def _round_up(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def _discard(txn: lmdb.Transaction[bytes], exc: BaseException) -> None:
    """End a write transaction that failed with ``exc`` without writing anything.

    py-lmdb can stall for a long time aborting a write transaction while other
    threads keep reading. A transaction that failed with ``MDB_MAP_FULL`` is in
    LMDB's error state, where a commit writes nothing and ends it (reporting
    ``MDB_BAD_TXN``), so that is how it is released; anything else is aborted.
    """
    try:
        if isinstance(exc, lmdb.MapFullError):
            txn.commit()
        else:
            txn.abort()
    except lmdb.Error:
        pass


class LMDBStorage(FileStorage, RangeScanStorage):
    """A persistent store in an LMDB environment directory (``lmdb://``).

    Every ``get`` and scan reads in its own read transaction; every ``set``,
    ``delete`` and batch is one write transaction. The memory map grows by
    itself when it fills up.
    """

    schemes = ("lmdb",)
    url_form = (
        "lmdb:///ABS/DIR or lmdb://REL/DIR[?map_size=64MiB&sync=true&max_readers=126&create=true]"
    )
    capabilities = dataclasses.replace(FileStorage.capabilities, max_key_size=MAX_KEY_SIZE)

    def __init__(
        self,
        path: str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
        max_readers: int = 126,
        create: bool = True,
    ) -> None:
        """Open the LMDB environment in directory ``path``.

        With ``create`` (the default) a missing environment is created, with
        any missing parent directories; without, it raises
        :class:`~supervm.errors.StoreNotFoundError` and creates nothing.
        """
        self._closed = True
        self._sync = sync
        path = self._path = store_path(path, create=create, kind="LMDB", marker="data.mdb")
        try:
            env = lmdb.open(
                path,
                map_size=map_size,
                subdir=True,
                sync=sync,
                metasync=sync,
                max_readers=max_readers,
                max_spare_txns=_SPARE_TXNS,
                lock=True,
            )
        except lmdb.LockError as exc:
            raise StorageLockedError(
                f"LMDB environment {path!r} is locked: {exc}", original=exc
            ) from exc
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise StorageLockedError(
                    f"LMDB environment {path!r} is already open in this process; "
                    "close the other handle first",
                    original=exc,
                ) from exc
            raise StorageError(
                f"cannot open LMDB environment {path!r}: {exc}", original=exc
            ) from exc
        except OSError as exc:
            raise StorageError(
                f"cannot open LMDB environment {path!r}: {exc}", original=exc
            ) from exc
        if env.max_key_size() < MAX_KEY_SIZE:
            limit = env.max_key_size()
            env.close()
            raise StorageError(
                f"this LMDB build limits keys to {limit} bytes, below the {MAX_KEY_SIZE} "
                "this back end declares"
            )
        self._env = env
        self._begin = env.begin
        self._wlock = threading.Lock()
        # Bumped on every remap; open transactions from before it are invalid.
        self._generation = 0
        # Running scans (token -> (thread id, generation)), which a remap waits for.
        self._scans: dict[object, tuple[int, int]] = {}
        self._remapping = False
        self._remap_done = threading.Event()
        self._remap_done.set()
        self._closed = False

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Open ``lmdb:///abs/dir`` or ``lmdb://rel/dir`` with its query options."""
        url.reject_unknown_options(_OPTIONS)
        return cls(
            url.file_path(),
            map_size=_parse_size(url, "map_size", DEFAULT_MAP_SIZE),
            sync=url.bool_option("sync", True),
            max_readers=url.int_option("max_readers", 126, minimum=1),
            create=url.bool_option("create", True),
        )

    # -- properties --------------------------------------------------------

    @property
    def map_size(self) -> int:
        """Current size of the memory map in bytes."""
        self._check_open()
        try:
            return self._env.info()["map_size"]
        except lmdb.Error as exc:
            raise self._error("read the map size", exc) from exc

    # -- point operations ----------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes:
            check_key(key, MAX_KEY_SIZE)
        try:
            value = self._begin().get(key)
        except lmdb.Error as exc:
            return self._get_again(key, exc)
        # LMDB refuses an empty key (above) but reads an oversized one as absent.
        if value is None and len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        return value

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        if type(value) is not bytes:
            check_value(value)
        try:
            with self._wlock:
                txn = self._begin(write=True)
                try:
                    txn.put(key, value)
                except BaseException as exc:
                    _discard(txn, exc)
                    raise
                txn.commit()
        except lmdb.Error as exc:
            self._write_again(exc, [(key, value)], False)

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        try:
            with self._wlock:
                txn = self._begin(write=True)
                try:
                    txn.delete(key)
                except BaseException as exc:
                    _discard(txn, exc)
                    raise
                txn.commit()
        except lmdb.Error as exc:
            self._write_again(exc, [(key, None)], True)

    # -- batches ---------------------------------------------------------------

    def batch(self) -> LMDBBatch:
        """A new atomic batch, applied in one write transaction on commit."""
        self._check_open()
        return LMDBBatch(self)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked, deletes = check_ops(ops, MAX_KEY_SIZE)
        if not checked:
            self._check_open()
            return
        self._write(checked, deletes)

    def _write(self, ops: list[BatchOp], deletes: bool) -> None:
        """Apply already validated ``ops`` in one write transaction."""
        try:
            with self._wlock:
                self._apply(ops, deletes)
        except lmdb.Error as exc:
            self._write_again(exc, ops, deletes)

    def _apply(self, ops: list[BatchOp], deletes: bool) -> None:
        """Write ``ops`` in one transaction; the caller holds the write lock."""
        txn = self._begin(write=True)
        try:
            if deletes:
                apply_ops(ops, deletes, txn.put, txn.delete)
            else:
                txn.cursor().putmulti(ops)  # type: ignore[arg-type]
        except BaseException as exc:
            _discard(txn, exc)
            raise
        txn.commit()

    def _write_again(self, exc: lmdb.Error, ops: list[BatchOp], deletes: bool) -> None:
        """Handle a failed write: grow or adopt the map and retry, or raise."""
        with self._wlock:
            for _ in range(_GROW_ROUNDS):
                if self._closed:
                    raise StorageClosedError("LMDBStorage is closed") from exc
                if isinstance(exc, lmdb.MapFullError):
                    self._grow(sum(len(k) + (len(v) if v else 0) for k, v in ops))
                elif isinstance(exc, lmdb.MapResizedError):
                    self._adopt_map_size()
                else:
                    raise self._error("write", exc) from exc
                try:
                    self._apply(ops, deletes)
                    return
                except lmdb.Error as again:
                    exc = again
        raise self._error("write after growing the map", exc) from exc

    def _grow(self, payload: int) -> None:
        """Enlarge the map (caller holds the write lock) so ``payload`` more bytes fit."""
        env = self._env
        try:
            info = env.info()
            page = env.stat()["psize"]
        except lmdb.Error as exc:
            raise self._error("grow the map", exc) from exc
        used = (info["last_pgno"] + 1) * page
        wanted = max(info["map_size"] * 2, used + 2 * payload + 64 * page)
        self._remap(_round_up(wanted, max(page, mmap.PAGESIZE)))

    def _adopt_map_size(self) -> None:
        """Take over a map size another process has set (caller holds the write lock)."""
        self._remap(0)

    def _remap(self, size: int) -> None:
        """Resize the map; the caller holds the write lock.

        Remapping ends every open read transaction of this process, so it first
        waits (up to ``_REMAP_WAIT`` seconds) for scans that other threads
        started since the last remap, and holds back new ones until it is done.
        """
        self._remap_done.clear()
        self._remapping = True
        try:
            me = threading.get_ident()
            current = self._generation
            deadline = time.monotonic() + _REMAP_WAIT
            scans = self._scans
            while any(
                owner != me and generation == current for owner, generation in list(scans.values())
            ):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.0005)
            self._env.set_mapsize(size)
        except lmdb.Error as exc:
            raise self._error("resize the map", exc) from exc
        finally:
            self._generation += 1
            self._remapping = False
            self._remap_done.set()

    # -- reads after a failure ---------------------------------------------

    def _read_failed(self, exc: lmdb.Error, attempt: int) -> None:
        """Raise for ``exc`` unless the read should be retried.

        A read fails transiently while this process remaps a grown map (its
        transaction is invalidated, or a new one is refused until the remap is
        done) and after another process has grown the map.
        """
        if self._closed:
            raise StorageClosedError("LMDBStorage is closed") from exc
        if attempt >= _READ_RETRIES:
            raise self._error("read", exc) from exc
        if isinstance(exc, lmdb.MapResizedError):
            generation = self._generation
            with self._wlock:
                if self._closed:
                    raise StorageClosedError("LMDBStorage is closed") from exc
                if self._generation == generation:
                    self._adopt_map_size()
            return
        if type(exc) is not lmdb.Error and not isinstance(exc, lmdb.InvalidParameterError):
            raise self._error("read", exc) from exc
        # A remap holds the write lock: wait for it to finish before retrying.
        with self._wlock:
            if self._closed:
                raise StorageClosedError("LMDBStorage is closed") from exc

    def _get_again(self, key: bytes, exc: lmdb.Error) -> bytes | None:
        check_key(key, MAX_KEY_SIZE)
        attempt = 0
        while True:
            self._read_failed(exc, attempt)
            attempt += 1
            try:
                with self._begin() as txn:
                    return txn.get(key)
            except lmdb.Error as again:
                exc = again

    def _error(self, action: str, exc: lmdb.Error) -> StorageError:
        if isinstance(exc, lmdb.ReadersFullError):
            return StorageError(
                f"LMDB at {self._path!r} has no free reader slot ({exc}); close unused "
                "scans and snapshots or raise the max_readers option",
                original=exc,
            )
        if isinstance(exc, lmdb.LockError):
            return StorageLockedError(
                f"LMDB at {self._path!r} could not {action}: {exc}", original=exc
            )
        return StorageError(f"LMDB at {self._path!r} could not {action}: {exc}", original=exc)

    # -- scans ---------------------------------------------------------------

    def _range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` from one read transaction.

        A map resize waits for running scans, but not forever: if it ends this
        scan's transaction, the scan goes on after the last pair it yielded in
        a fresh transaction.
        """
        scans = self._scans
        token = object()
        me = threading.get_ident()
        attempt = 0
        while True:
            scans[token] = (me, self._generation)
            if self._remapping:
                del scans[token]
                self._remap_done.wait()
                continue
            try:
                txn = self._begin()
            except lmdb.Error as exc:
                del scans[token]
                self._read_failed(exc, attempt)
                attempt += 1
                continue
            key: bytes | None = None
            try:
                cursor = txn.cursor()
                if not reverse:
                    if start is None:
                        if not cursor.first():
                            return
                    elif not cursor.set_range(start):
                        return
                    if end is None:
                        for key, value in cursor:
                            yield key, value
                    else:
                        for key, value in cursor:
                            if key >= end:
                                return
                            yield key, value
                else:
                    if end is None or not cursor.set_range(end):
                        if not cursor.last():
                            return
                    elif not cursor.prev():
                        return
                    if start is None:
                        for key, value in cursor.iterprev():
                            yield key, value
                    else:
                        for key, value in cursor.iterprev():
                            if key < start:
                                return
                            yield key, value
                return
            except lmdb.Error as exc:
                scans.pop(token, None)
                self._read_failed(exc, attempt)
                attempt += 1
                if key is not None:
                    attempt = 1
                    if reverse:
                        end = key
                    else:
                        start = key + b"\x00"
            finally:
                scans.pop(token, None)
                txn.abort()

    # -- snapshots -------------------------------------------------------------

    def snapshot(self) -> LMDBSnapshot:
        """A read-only view in a long-lived read transaction.

        The view ends (its reads raise :class:`StorageError`) if the map has to
        grow while it is open.
        """
        attempt = 0
        while True:
            if self._closed:
                self._check_open()
            generation = self._generation
            try:
                return LMDBSnapshot(self, self._begin(), generation)
            except lmdb.Error as exc:
                self._read_failed(exc, attempt)
                attempt += 1

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            self._env.close()


class LMDBBatch(QueuedBatch):
    """Operations checked as they are queued and written in one transaction on commit."""

    def __init__(self, store: LMDBStorage) -> None:
        super().__init__(store._write, MAX_KEY_SIZE)


class LMDBSnapshot(Snapshot):
    """A point-in-time view held in one LMDB read transaction."""

    def __init__(self, store: LMDBStorage, txn: lmdb.Transaction[bytes], generation: int) -> None:
        self._store = store
        self._txn: lmdb.Transaction[bytes] | None = txn
        self._generation = generation

    def _live(self) -> lmdb.Transaction[bytes]:
        txn = self._txn
        if txn is None:
            raise StorageClosedError("snapshot is closed")
        return txn

    def _failed(self, exc: lmdb.Error) -> StorageError:
        store = self._store
        if store.closed:
            return StorageClosedError("LMDBStorage is closed")
        if self._txn is None:
            return StorageClosedError("snapshot is closed")
        if type(exc) is lmdb.Error and store._generation != self._generation:
            return StorageError(
                "snapshot is no longer valid: the LMDB map grew while it was open", original=exc
            )
        return store._error("read from a snapshot", exc)

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        try:
            return self._live().get(key)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        check_prefix(prefix)
        return self._scan(self._live(), prefix, prefix_upper_bound(prefix))

    def _scan(
        self, txn: lmdb.Transaction[bytes], prefix: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            cursor = txn.cursor()
            try:
                if not cursor.set_range(prefix):
                    return
                for key, value in cursor:
                    if end is not None and key >= end:
                        return
                    yield key, value
            finally:
                cursor.close()
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error as exc:
                if not self._store.closed:
                    raise self._store._error("release a snapshot", exc) from exc
