"""Multi-version concurrency control over any :class:`~supervm.storage.Storage`.

:class:`MvccStore` wraps a store and hands out :class:`MvccTransaction` objects.
Each transaction reads a snapshot: exactly the commits made before it began.
Its writes stay private until :meth:`MvccTransaction.commit`, which validates
them optimistically (first committer wins) and writes them through to the
store in one atomic ``write_batch``. The store therefore always holds the
latest committed state.

Older versions live in memory only, in per-key version chains, for as long as
a running transaction may still read them. A key without a chain reads
straight from the store. The first time a commit writes a key, the key's
current stored value becomes the base of its chain, so snapshots taken earlier
keep reading it. :meth:`MvccStore.gc` drops the versions no running snapshot
can see.

Timestamps are integers from a :class:`TimestampOracle`. A transaction's
snapshot timestamp is the timestamp of the newest commit when it began; it sees
every version whose commit timestamp is at most its snapshot timestamp.
Timestamps live in memory: a new ``MvccStore`` over the same store starts
again at 0 and treats everything stored as committed at time 0.

An ``MvccStore`` must be the only writer of its store while it is open.
"""

from __future__ import annotations

import math
import threading
import weakref
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from supervm.errors import StorageClosedError, SuperVMError
from supervm.state import merge, pending_under
from supervm.storage import (
    Closing,
    Storage,
    check_key,
    check_prefix,
    check_value,
    prefix_upper_bound,
)

__all__ = [
    "ConflictError",
    "Isolation",
    "MvccStats",
    "MvccStore",
    "MvccTransaction",
    "TimestampOracle",
    "TransactionFinishedError",
]

#: ``"snapshot"``: snapshot isolation, write-write conflicts only.
#: ``"serializable"``: also validates every key read and prefix scanned.
Isolation = Literal["snapshot", "serializable"]
_ISOLATIONS: tuple[Isolation, ...] = ("snapshot", "serializable")

#: One version: commit timestamp and value (``None`` marks a delete).
_Version = tuple[int, bytes | None]


class ConflictError(SuperVMError):
    """A commit lost to a transaction that committed after this one's snapshot.

    ``kind`` is ``"write"`` (a key this transaction wrote), ``"read"`` (a key
    it read) or ``"scan"`` (a key under ``prefix``, a prefix it scanned).
    The transaction is aborted; retry it from the start.
    """

    def __init__(
        self,
        message: str,
        *,
        key: bytes,
        kind: Literal["write", "read", "scan"],
        prefix: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.kind = kind
        self.prefix = prefix


class TransactionFinishedError(SuperVMError, RuntimeError):
    """An operation was attempted on a committed or aborted transaction."""


class TimestampOracle:
    """Hands out strictly increasing integer timestamps; safe to share between threads."""

    __slots__ = ("_lock", "_now")

    def __init__(self, start: int = 0) -> None:
        if type(start) is not int or start < 0:
            raise ValueError("the first timestamp must be a non-negative int")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> int:
        """The latest timestamp handed out (``start`` before the first)."""
        return self._now

    def next(self) -> int:
        """Hand out a new timestamp, one above the latest."""
        with self._lock:
            self._now += 1
            return self._now


@dataclass(frozen=True)
class MvccStats:
    """Counters of an :class:`MvccStore`."""

    #: Versions held in memory right now, over all keys.
    versions: int
    #: Keys that have a version chain in memory right now.
    chains: int
    #: Transactions begun and not yet finished.
    active: int
    #: Garbage collections run so far.
    gc_runs: int
    #: Versions garbage collection has dropped so far.
    versions_reclaimed: int
    #: Transactions committed so far (read-only ones included).
    commits: int
    #: Commits refused with :class:`ConflictError` so far.
    conflicts: int


def _version_ts(version: _Version) -> int:
    return version[0]


def _resolve(chain: list[_Version], ts: int) -> bytes | None:
    """Value of the newest version in ``chain`` committed at or before ``ts``."""
    i = bisect_right(chain, ts, key=_version_ts)
    return chain[i - 1][1] if i else None


def _check_isolation(isolation: object) -> Isolation:
    for name in _ISOLATIONS:
        if isolation == name:
            return name
    raise ValueError(f"isolation must be 'snapshot' or 'serializable', not {isolation!r}")


class MvccStore(Closing):
    """Snapshot transactions over ``storage`` (see the module documentation).

    ``isolation`` is the default for :meth:`begin`. With ``gc_interval`` set, a
    background thread runs :meth:`gc` every ``gc_interval`` seconds until
    :meth:`stop_gc` or :meth:`close`. :meth:`close` closes ``storage`` too only
    when ``close_storage`` is true; by default the caller keeps owning it.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        isolation: Isolation = "snapshot",
        gc_interval: float | None = None,
        close_storage: bool = False,
    ) -> None:
        if not isinstance(storage, Storage):
            raise TypeError(f"storage must be a Storage, not {type(storage).__name__}")
        self._storage = storage
        self._isolation = _check_isolation(isolation)
        self._close_storage = close_storage
        self._oracle = TimestampOracle()
        # Held by commits and garbage collection, which change the store or the chains.
        self._commit_lock = threading.Lock()
        # Guards the chains, the live snapshots and the counters; held only briefly.
        self._state = threading.Lock()
        self._chains: dict[bytes, list[_Version]] = {}
        self._chain_keys: list[bytes] = []  # sorted keys of _chains, for prefix lookups
        self._live: Counter[int] = Counter()  # snapshot timestamp -> running transactions
        self._gc_runs = 0
        self._reclaimed = 0
        self._commits = 0
        self._conflicts = 0
        self._closed = False
        self._gc_thread: threading.Thread | None = None
        self._gc_stop = threading.Event()
        self._gc_control = threading.Lock()  # serialises start_gc and stop_gc
        if gc_interval is not None:
            self.start_gc(gc_interval)

    # -- public API ----------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The wrapped store."""
        return self._storage

    @property
    def oracle(self) -> TimestampOracle:
        """The timestamp oracle; ``oracle.now()`` is the newest commit timestamp."""
        return self._oracle

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage-collection thread is running."""
        thread = self._gc_thread
        return thread is not None and thread.is_alive()

    def begin(self, isolation: Isolation | None = None) -> MvccTransaction:
        """Start a transaction reading a snapshot of every commit made so far."""
        self._check_open()
        level = self._isolation if isolation is None else _check_isolation(isolation)
        with self._state:
            ts = self._oracle.now()
            self._live[ts] += 1
        return MvccTransaction(self, ts, level)

    def watermark(self) -> int:
        """Oldest running snapshot timestamp, or the newest commit timestamp if none runs."""
        with self._state:
            return self._watermark()

    def gc(self) -> int:
        """Drop versions no running or future snapshot can read; return how many.

        For each key the newest version at or below the watermark and every
        newer one are kept. A key left with one such version, which is what the
        store holds, loses its chain and reads from the store again.
        """
        self._check_open()
        with self._commit_lock, self._state:
            mark = self._watermark()
            reclaimed = 0
            dropped = False
            for key, chain in list(self._chains.items()):
                keep = bisect_right(chain, mark, key=_version_ts) - 1
                if keep > 0:
                    del chain[:keep]
                    reclaimed += keep
                if len(chain) == 1 and chain[0][0] <= mark:
                    del self._chains[key]
                    reclaimed += 1
                    dropped = True
            if dropped:
                self._chain_keys = sorted(self._chains)
            self._gc_runs += 1
            self._reclaimed += reclaimed
        return reclaimed

    def start_gc(self, interval: float) -> None:
        """Run :meth:`gc` every ``interval`` seconds in a background thread.

        The thread runs until :meth:`stop_gc` or :meth:`close` stops and joins
        it, or until the store itself is garbage-collected.
        """
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number, not {type(interval).__name__}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        with self._gc_control:
            self._check_open()
            if self.gc_running:
                raise RuntimeError("background garbage collection is already running")
            stop = self._gc_stop = threading.Event()
            thread = threading.Thread(
                target=_gc_loop,
                args=(weakref.ref(self), stop, float(interval)),
                name="supervm-mvcc-gc",
                daemon=True,
            )
            self._gc_thread = thread
            thread.start()

    def stop_gc(self) -> None:
        """Stop the background garbage collection and wait for its thread to end."""
        with self._gc_control:
            thread = self._gc_thread
            self._gc_stop.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            self._gc_thread = None

    def stats(self) -> MvccStats:
        """Current counters."""
        with self._state:
            return MvccStats(
                versions=sum(len(chain) for chain in self._chains.values()),
                chains=len(self._chains),
                active=sum(self._live.values()),
                gc_runs=self._gc_runs,
                versions_reclaimed=self._reclaimed,
                commits=self._commits,
                conflicts=self._conflicts,
            )

    def close(self) -> None:
        """Stop garbage collection and refuse further use; closing twice is allowed.

        A commit in progress finishes first. The wrapped store is closed too
        only if the store was made with ``close_storage=True``.
        """
        self.stop_gc()
        with self._commit_lock:
            if self._closed:
                return
            self._closed = True
        if self._close_storage:
            self._storage.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} over {type(self._storage).__name__} {state}>"

    # -- internals used by MvccTransaction -----------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("MvccStore is closed")

    def _watermark(self) -> int:
        return min(self._live) if self._live else self._oracle.now()

    def _release(self, ts: int) -> None:
        """Forget a finished (or garbage-collected) transaction's snapshot."""
        with self._state:
            left = self._live[ts] - 1
            if left > 0:
                self._live[ts] = left
            else:
                del self._live[ts]

    def _keys_under(self, prefix: bytes) -> list[bytes]:
        """Keys with a chain that start with ``prefix``, ascending (hold ``_state``)."""
        keys = self._chain_keys
        lo = bisect_left(keys, prefix)
        upper = prefix_upper_bound(prefix)
        hi = len(keys) if upper is None else bisect_left(keys, upper, lo)
        return keys[lo:hi]

    def _read(self, key: bytes, ts: int) -> bytes | None:
        """Value of ``key`` in the snapshot at ``ts``.

        A key gets its chain before any commit writes it to the store, and the
        chain outlives every snapshot older than that commit. So if ``key``
        still has no chain after the store was read, the store's value is the
        one the snapshot sees.
        """
        with self._state:
            chain = self._chains.get(key)
            if chain is not None:
                return _resolve(chain, ts)
        value = self._storage.get(key)
        with self._state:
            chain = self._chains.get(key)
            if chain is not None:
                return _resolve(chain, ts)
        return value

    def _scan(self, prefix: bytes, ts: int) -> list[tuple[bytes, bytes]]:
        """Pairs under ``prefix`` in the snapshot at ``ts``, in key order.

        The store is scanned first and the chains consulted afterwards, for the
        reason given in :meth:`_read`.
        """
        stored = list(self._storage.scan(prefix))
        with self._state:
            chains = self._chains
            versions = [(key, _resolve(chains[key], ts)) for key in self._keys_under(prefix)]
        return list(merge(stored, versions))

    def _commit(self, tx: MvccTransaction) -> int:
        writes = tx._writes
        if not writes:
            self._check_open()
            with self._state:
                self._commits += 1
            return tx.start_ts
        with self._commit_lock:
            self._check_open()
            with self._state:
                conflict = self._find_conflict(tx)
                if conflict is not None:
                    self._conflicts += 1
                    raise conflict
            # Only commits and gc change the chains, and both hold the commit lock.
            chains = self._chains
            bases = {key: self._storage.get(key) for key in writes if key not in chains}
            if bases:
                with self._state:
                    for key, value in bases.items():
                        chains[key] = [(0, value)]
                        insort(self._chain_keys, key)
            ops = sorted(writes.items())
            self._storage.write_batch(ops)
            with self._state:
                ts = self._oracle.next()
                for key, value in ops:
                    chains[key].append((ts, value))
                self._commits += 1
            return ts

    def _find_conflict(self, tx: MvccTransaction) -> ConflictError | None:
        start = tx.start_ts
        chains = self._chains

        def newer(key: bytes) -> bool:
            chain = chains.get(key)
            return chain is not None and chain[-1][0] > start

        for key in tx._writes:
            if newer(key):
                return ConflictError(
                    f"write-write conflict on key {key!r}: another transaction "
                    "committed it after this transaction's snapshot",
                    key=key,
                    kind="write",
                )
        if tx.isolation == "serializable":
            for key in tx._reads:
                if newer(key):
                    return ConflictError(
                        f"read conflict on key {key!r}: another transaction committed "
                        "it after this transaction read it",
                        key=key,
                        kind="read",
                    )
            for prefix in tx._scans:
                for key in self._keys_under(prefix):
                    if newer(key):
                        return ConflictError(
                            f"scan conflict on prefix {prefix!r}: another transaction "
                            f"committed key {key!r} under it after this transaction scanned it",
                            key=key,
                            kind="scan",
                            prefix=prefix,
                        )
        return None


def _gc_loop(ref: weakref.ref[MvccStore], stop: threading.Event, interval: float) -> None:
    """Background gc; holds the store only weakly, so it also ends when the store is dropped."""
    while not stop.wait(interval):
        store = ref()
        if store is None or store.closed:
            return
        store.gc()
        del store


class MvccTransaction:
    """One transaction of an :class:`MvccStore`; get it from :meth:`MvccStore.begin`.

    Reads see the snapshot taken at begin plus this transaction's own writes.
    As a context manager it commits when the block exits normally and aborts
    when it raises. A committed or aborted transaction refuses further use
    with :class:`TransactionFinishedError`. A transaction is meant for one
    thread at a time.
    """

    __slots__ = (
        "__weakref__",
        "_commit_ts",
        "_isolation",
        "_reads",
        "_release",
        "_scans",
        "_start_ts",
        "_status",
        "_store",
        "_writes",
    )

    def __init__(self, store: MvccStore, start_ts: int, isolation: Isolation) -> None:
        self._store = store
        self._start_ts = start_ts
        self._isolation: Isolation = isolation
        self._writes: dict[bytes, bytes | None] = {}
        self._reads: set[bytes] = set()
        self._scans: set[bytes] = set()
        self._status: Literal["active", "committed", "aborted"] = "active"
        self._commit_ts: int | None = None
        # Frees the snapshot for gc even if the transaction is dropped unfinished.
        self._release = weakref.finalize(self, store._release, start_ts)
        self._release.atexit = False

    @property
    def start_ts(self) -> int:
        """Snapshot timestamp: this transaction sees commits with timestamps up to it."""
        return self._start_ts

    @property
    def commit_ts(self) -> int | None:
        """Commit timestamp once committed, else ``None``."""
        return self._commit_ts

    @property
    def isolation(self) -> Isolation:
        """``"snapshot"`` or ``"serializable"``."""
        return self._isolation

    @property
    def status(self) -> Literal["active", "committed", "aborted"]:
        """``"active"``, ``"committed"`` or ``"aborted"``."""
        return self._status

    @property
    def active(self) -> bool:
        """Whether the transaction can still be used."""
        return self._status == "active"

    def _check_active(self) -> None:
        if self._status != "active":
            raise TransactionFinishedError(f"this transaction is already {self._status}")
        self._store._check_open()

    def get(self, key: bytes) -> bytes | None:
        """Value of ``key`` in this transaction's view, or ``None`` when absent."""
        self._check_active()
        check_key(key)
        writes = self._writes
        if key in writes:
            return writes[key]
        if self._isolation == "serializable":
            self._reads.add(key)
        return self._store._read(key, self._start_ts)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs under ``prefix`` in this transaction's view, in ascending key order.

        The view is taken when ``scan`` is called; later writes do not change it.
        """
        self._check_active()
        check_prefix(prefix)
        if self._isolation == "serializable":
            self._scans.add(prefix)
        view = self._store._scan(prefix, self._start_ts)
        return iter(list(merge(view, pending_under(self._writes, prefix))))

    def set(self, key: bytes, value: bytes) -> None:
        """Write ``value`` under ``key`` when the transaction commits."""
        self._check_active()
        caps = self._store.storage.capabilities
        check_key(key, caps.max_key_size)
        check_value(value, caps.max_value_size)
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        """Remove ``key`` when the transaction commits; an absent key is not an error."""
        self._check_active()
        check_key(key, self._store.storage.capabilities.max_key_size)
        self._writes[key] = None

    def commit(self) -> int:
        """Validate and apply the writes atomically; return the commit timestamp.

        Raises :class:`ConflictError` when another transaction committed a key
        this one wrote (or, under ``"serializable"``, read or scanned) after
        this one's snapshot. The transaction is finished either way: aborted if
        ``commit`` raises. A transaction without writes returns its snapshot
        timestamp.
        """
        self._check_active()
        try:
            ts = self._store._commit(self)
        except BaseException:
            self._finish("aborted")
            raise
        self._commit_ts = ts
        self._finish("committed")
        return ts

    def abort(self) -> None:
        """Discard the writes; aborting an aborted transaction does nothing."""
        if self._status == "committed":
            raise TransactionFinishedError("this transaction is already committed")
        if self._status == "active":
            self._finish("aborted")

    def _finish(self, status: Literal["committed", "aborted"]) -> None:
        self._status = status
        self._writes = {}
        self._reads = set()
        self._scans = set()
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status != "active":
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._status} start_ts={self._start_ts} "
            f"isolation={self._isolation}>"
        )
