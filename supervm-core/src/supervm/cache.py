"""An in-memory LRU cache of reads in front of any store, bounded in bytes.

``CachedStorage(store, max_bytes)``, or any storage URL with the option
``cache=SIZE`` (``supervm.open_storage("rocksdb:///var/lib/supervm?cache=64MB")``;
sizes such as ``1000``, ``512KB``, ``64MB``, ``1GB`` in powers of 1000 or ``64MiB``
in powers of 1024, in any case), answers repeated ``get`` calls from memory. It
keeps values and misses (an absent key is cached as absent) in least-recently-used
order and drops the least recently read when the bytes of the keys and values it
holds, plus :data:`ENTRY_OVERHEAD` per entry, would exceed ``max_bytes``.
``max_bytes=0`` caches nothing.

Every write (``set``, ``delete``, ``write_batch``, a batch's commit) goes to the
store first and then drops the cached entries of the keys it touched, whether it
succeeded or raised; the next read of such a key reads the store. Scans, range
scans and snapshots read the store itself. A write made to the inner store other
than through the cache is not seen by a key already cached: :meth:`CachedStorage.clear`
forgets every entry.

The cache may be shared between threads. Its lock is never held while the store is
read or written: a read of the store that a write of the same key overlapped keeps
its value out of the cache, so no stale value is ever cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from supervm.errors import UnsupportedOperationError
from supervm.storage import (
    Batch,
    BatchOp,
    Capabilities,
    ListBatch,
    Snapshot,
    Storage,
    check_key,
)
from supervm.url import StorageURL

__all__ = ["ENTRY_OVERHEAD", "CacheStats", "CachedStorage"]

#: Bytes counted for each entry besides its key and value (about what CPython spends
#: on an ordered-dict entry and the two ``bytes`` objects' headers).
ENTRY_OVERHEAD: Final = 160

#: What a lookup of an uncached key gives (``None`` is a cached absent key).
_UNCACHED: Any = object()


def _size(key: bytes, value: bytes | None) -> int:
    return len(key) + (0 if value is None else len(value)) + ENTRY_OVERHEAD


def _op_key(op: object) -> bytes | None:
    """The key of a batch operation, or ``None`` if ``op`` has no ``bytes`` key."""
    if isinstance(op, tuple | list) and len(op) == 2 and type(op[0]) is bytes:
        return op[0]
    return None


@dataclass(frozen=True)
class CacheStats:
    """The counters of a :class:`CachedStorage` at one moment."""

    #: Gets answered from the cache.
    hits: int
    #: Gets that read the store.
    misses: int
    #: Keys cached, present or absent.
    entries: int
    #: Bytes counted for those entries: keys, values and :data:`ENTRY_OVERHEAD` each.
    bytes: int
    #: The most bytes the entries may count.
    max_bytes: int
    #: Entries dropped to stay within ``max_bytes``.
    evictions: int


class CachedStorage(Storage):
    """A store whose ``get`` results are cached in memory, least recently used first out.

    ``inner`` is the store read and written; ``max_bytes`` (an int >= 0) bounds the
    bytes the entries count. Capabilities, scans and snapshots are the inner
    store's; closing this closes it.
    """

    url_form = "SCHEME://...?cache=SIZE"

    def __init__(self, inner: Storage, max_bytes: int) -> None:
        if not isinstance(inner, Storage):
            raise TypeError(f"inner must be a Storage, not {type(inner).__name__}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self._inner = inner
        self._max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        #: Incremented by every invalidation (a write, clear).
        self._epoch = 0
        #: Keys being read from the store, and by how many readers.
        self._reading: dict[bytes, int] = {}
        #: Of those keys, the epoch of the last invalidation since a read began.
        self._written: dict[bytes, int] = {}

    @classmethod
    def from_url(cls, url: StorageURL) -> NoReturn:
        """Refused: a cache wraps an open store (open a URL with ``?cache=SIZE`` instead)."""
        raise UnsupportedOperationError(
            f"a CachedStorage wraps an open store: open {url.safe!r} with the option "
            "cache=SIZE, or call CachedStorage(store, max_bytes)"
        )

    @property
    def inner(self) -> Storage:
        """The store behind the cache."""
        return self._inner

    @property
    def max_bytes(self) -> int:
        """The most bytes the cached entries may count."""
        return self._max_bytes

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """The inner store's capabilities."""
        return self._inner.capabilities

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def stats(self) -> CacheStats:
        """The cache's counters now."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._entries),
                bytes=self._bytes,
                max_bytes=self._max_bytes,
                evictions=self._evictions,
            )

    def clear(self) -> None:
        """Forget every cached entry (e.g. after the inner store was written directly)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._epoch += 1
            for key in self._reading:
                self._written[key] = self._epoch

    # -- reads ---------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key:
            check_key(key)
        inner = self._inner
        if inner.closed:
            self._check_open()
        # acquire/release rather than ``with``: half the cost of a hit's locking
        lock = self._lock
        began = -1  # the epoch this read of the store began in; -1: not to be cached
        lock.acquire()
        try:
            cached: bytes | None = self._entries.get(key, _UNCACHED)
            if cached is not _UNCACHED:
                self._entries.move_to_end(key)
                self._hits += 1
                return cached
            self._misses += 1
            if self._max_bytes:
                began = self._epoch
                self._reading[key] = self._reading.get(key, 0) + 1
        finally:
            lock.release()
        if began < 0:
            return inner.get(key)
        try:
            value = inner.get(key)
        except BaseException:
            with lock:
                self._done_reading(key)
            raise
        lock.acquire()
        try:
            if self._done_reading(key) <= began:
                self._put(key, value)
        finally:
            lock.release()
        return value

    def _done_reading(self, key: bytes) -> int:
        """End one read of ``key``; the epoch of the last write since reads of it began."""
        readers = self._reading[key] - 1
        if readers:
            self._reading[key] = readers
            return self._written.get(key, -1)
        del self._reading[key]
        return self._written.pop(key, -1)

    def _put(self, key: bytes, value: bytes | None) -> None:
        """Cache ``key``, evicting the least recently used entries to make room."""
        entries = self._entries
        old = entries.pop(key, _UNCACHED)
        if old is not _UNCACHED:
            self._bytes -= _size(key, old)
        size = len(key) + (0 if value is None else len(value)) + ENTRY_OVERHEAD
        limit = self._max_bytes
        if size > limit:
            return
        entries[key] = value
        held = self._bytes + size
        if held > limit:
            popitem = entries.popitem
            evicted = 0
            while held > limit:
                gone, gone_value = popitem(False)
                held -= len(gone) + (0 if gone_value is None else len(gone_value)) + ENTRY_OVERHEAD
                evicted += 1
            self._evictions += evicted
        self._bytes = held

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._inner.scan(prefix)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._inner.scan_range(start, end, reverse=reverse)

    def snapshot(self) -> Snapshot:
        return self._inner.snapshot()

    # -- writes --------------------------------------------------------------

    def _forget(self, keys: Iterable[bytes | None]) -> None:
        """Drop the entries of ``keys`` (``None``s skipped); overlapping reads will not cache."""
        with self._lock:
            self._epoch += 1
            epoch = self._epoch
            entries, reading = self._entries, self._reading
            for key in keys:
                if key is None:
                    continue
                old = entries.pop(key, _UNCACHED)
                if old is not _UNCACHED:
                    self._bytes -= _size(key, old)
                if key in reading:
                    self._written[key] = epoch

    def set(self, key: bytes, value: bytes) -> None:
        try:
            self._inner.set(key, value)
        finally:
            if self._max_bytes and type(key) is bytes:
                self._forget((key,))

    def delete(self, key: bytes) -> None:
        try:
            self._inner.delete(key)
        finally:
            if self._max_bytes and type(key) is bytes:
                self._forget((key,))

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked = ops if type(ops) is list else list(ops)
        try:
            self._inner.write_batch(checked)
        except BaseException:
            if self._max_bytes:
                self._forget(map(_op_key, checked))
            raise
        if self._max_bytes:
            self._forget([key for key, _ in checked])

    def batch(self) -> Batch:
        self._check_open()
        return ListBatch(self)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self.clear()

    def __repr__(self) -> str:
        return f"<CachedStorage of {self._max_bytes} bytes over {self._inner!r}>"
