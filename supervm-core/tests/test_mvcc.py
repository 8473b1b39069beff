"""MvccStore: snapshots, own writes, conflicts, write-through, garbage collection, threads."""

from __future__ import annotations

import contextlib
import gc as pygc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from supervm import MemoryStorage
from supervm.errors import InvalidKeyError, KeyTooLargeError, StorageClosedError, SuperVMError
from supervm.mvcc import (
    ConflictError,
    MvccStats,
    MvccStore,
    MvccTransaction,
    TimestampOracle,
    TransactionFinishedError,
)
from supervm.storage import BatchOp, Capabilities


class RecordingStorage(MemoryStorage):
    """Memory storage that records every write_batch and can be told to fail the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[BatchOp]] = []
        self.fail_next = False

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        ops = list(ops)
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        self.batches.append(ops)
        super().write_batch(ops)


class PausingStorage(MemoryStorage):
    """Memory storage whose next write_batch applies its writes, then waits to be released."""

    def __init__(self) -> None:
        super().__init__()
        self.pause = False
        self.applied = threading.Event()
        self.release = threading.Event()

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        super().write_batch(ops)
        if self.pause:
            self.pause = False
            self.applied.set()
            assert self.release.wait(10)


class GatedStorage(MemoryStorage):
    """Memory storage whose reads from ``gated`` thread wait at ``gate`` before reading."""

    def __init__(self) -> None:
        super().__init__()
        self.gated: threading.Thread | None = None
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def _maybe_wait(self) -> None:
        if threading.current_thread() is self.gated:
            self.waiting.set()
            assert self.gate.wait(10)

    def get(self, key: bytes) -> bytes | None:
        self._maybe_wait()
        return super().get(key)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self._maybe_wait()
        return super().scan(prefix)


class SmallKeyStorage(MemoryStorage):
    capabilities = Capabilities(max_key_size=4, max_value_size=8)


@pytest.fixture
def storage() -> RecordingStorage:
    return RecordingStorage()


@pytest.fixture
def store(storage: RecordingStorage) -> Iterator[MvccStore]:
    with MvccStore(storage) as s:
        yield s


def put(store: MvccStore, **pairs: bytes | None) -> int:
    """Commit one transaction writing ``pairs`` (``None`` deletes)."""
    with store.begin() as tx:
        for name, value in pairs.items():
            if value is None:
                tx.delete(name.encode())
            else:
                tx.set(name.encode(), value)
    ts = tx.commit_ts
    assert ts is not None
    return ts


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)


# -- basics -------------------------------------------------------------------


def test_oracle_is_monotonic_and_thread_safe() -> None:
    oracle = TimestampOracle()
    assert oracle.now() == 0
    assert oracle.next() == 1
    assert oracle.now() == 1
    seen: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [oracle.next() for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(2, 4002))
    assert oracle.now() == 4001
    assert TimestampOracle(41).next() == 42
    with pytest.raises(ValueError):
        TimestampOracle(-1)


def test_begin_get_set_delete_commit(store: MvccStore) -> None:
    tx = store.begin()
    assert isinstance(tx, MvccTransaction)
    assert tx.active
    assert (tx.status, tx.isolation) == ("active", "snapshot")
    assert tx.start_ts == 0
    assert tx.get(b"k") is None
    tx.set(b"k", b"v")
    tx.set(b"e", b"")
    ts = tx.commit()
    assert ts == 1 == tx.commit_ts == store.oracle.now()
    assert tx.status == "committed" and not tx.active

    tx2 = store.begin()
    assert tx2.start_ts == 1
    assert tx2.get(b"k") == b"v"
    assert tx2.get(b"e") == b""  # the empty value is a value
    tx2.delete(b"k")
    tx2.delete(b"never-there")  # deleting an absent key is fine
    assert tx2.commit() == 2
    with store.begin() as tx3:
        assert tx3.get(b"k") is None
        assert list(tx3.scan()) == [(b"e", b"")]


def test_commit_timestamps_increase(store: MvccStore) -> None:
    stamps = [put(store, k=str(i).encode()) for i in range(5)]
    assert stamps == [1, 2, 3, 4, 5]


def test_read_only_commit_returns_snapshot_timestamp(store: MvccStore) -> None:
    put(store, a=b"1")
    tx = store.begin()
    assert tx.get(b"a") == b"1"
    assert tx.commit() == tx.start_ts == 1
    assert store.oracle.now() == 1  # no new timestamp for a read-only transaction
    assert store.stats().commits == 2


def test_context_manager_commits_or_aborts(store: MvccStore, storage: RecordingStorage) -> None:
    with store.begin() as tx:
        tx.set(b"a", b"1")
    assert tx.status == "committed"
    with pytest.raises(KeyError), store.begin() as tx2:
        tx2.set(b"a", b"2")
        raise KeyError("boom")
    assert tx2.status == "aborted"
    assert storage.get(b"a") == b"1"
    # Finishing inside the block is fine; the exit does nothing more.
    with store.begin() as tx3:
        tx3.set(b"a", b"3")
        tx3.abort()
    assert tx3.status == "aborted"
    with store.begin() as tx4:
        assert tx4.get(b"a") == b"1"
        tx4.commit()


def test_abort_discards_writes(store: MvccStore, storage: RecordingStorage) -> None:
    tx = store.begin()
    tx.set(b"a", b"1")
    tx.abort()
    tx.abort()  # aborting twice is allowed
    assert storage.batches == []
    with store.begin() as check:
        assert check.get(b"a") is None


def test_finished_transaction_refuses_use(store: MvccStore) -> None:
    tx = store.begin()
    tx.commit()
    for call in (
        lambda: tx.get(b"a"),
        lambda: tx.set(b"a", b"1"),
        lambda: tx.delete(b"a"),
        lambda: tx.scan(b""),
        tx.commit,
        tx.abort,
    ):
        with pytest.raises(TransactionFinishedError, match="already committed"):
            call()
    aborted = store.begin()
    aborted.abort()
    with pytest.raises(TransactionFinishedError, match="already aborted"):
        aborted.get(b"a")
    with pytest.raises(TransactionFinishedError, match="already aborted"):
        aborted.commit()
    assert issubclass(TransactionFinishedError, SuperVMError)


def test_type_and_key_rules(store: MvccStore) -> None:
    tx = store.begin()
    bad: list[Callable[[], Any]] = [
        lambda: tx.get("k"),  # type: ignore[arg-type]
        lambda: tx.get(bytearray(b"k")),  # type: ignore[arg-type]
        lambda: tx.set("k", b"v"),  # type: ignore[arg-type]
        lambda: tx.set(b"k", "v"),  # type: ignore[arg-type]
        lambda: tx.set(b"k", memoryview(b"v")),  # type: ignore[arg-type]
        lambda: tx.set(b"k", None),  # type: ignore[arg-type]
        lambda: tx.delete(1),  # type: ignore[arg-type]
        lambda: tx.scan("p"),  # type: ignore[arg-type]
    ]
    for call in bad:
        with pytest.raises(TypeError):
            call()
    for call in (lambda: tx.get(b""), lambda: tx.set(b"", b"v"), lambda: tx.delete(b"")):
        with pytest.raises(InvalidKeyError):
            call()
    assert tx.active  # refused operations leave the transaction usable
    assert tx.commit() == 0


def test_backend_size_limits_apply() -> None:
    with MvccStore(SmallKeyStorage()) as store, store.begin() as tx:
        tx.set(b"abcd", b"12345678")
        with pytest.raises(KeyTooLargeError):
            tx.set(b"abcde", b"v")
        with pytest.raises(KeyTooLargeError):
            tx.delete(b"abcde")
        with pytest.raises(ValueError, match="limit"):
            tx.set(b"k", b"123456789")


def test_constructor_and_isolation_arguments() -> None:
    with pytest.raises(TypeError, match="Storage"):
        MvccStore({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="isolation"):
        MvccStore(MemoryStorage(), isolation="chaos")  # type: ignore[arg-type]
    with MvccStore(MemoryStorage(), isolation="serializable") as store:
        assert store.begin().isolation == "serializable"
        assert store.begin("snapshot").isolation == "snapshot"
        with pytest.raises(ValueError, match="isolation"):
            store.begin("read committed")  # type: ignore[arg-type]


def test_close(storage: RecordingStorage) -> None:
    store = MvccStore(storage)
    tx = store.begin()
    store.close()
    store.close()  # closing twice is allowed
    assert store.closed
    assert not storage.closed  # the caller keeps owning the storage by default
    with pytest.raises(StorageClosedError):
        store.begin()
    with pytest.raises(StorageClosedError):
        tx.get(b"a")
    with pytest.raises(StorageClosedError):
        store.gc()
    owning = MvccStore(storage, close_storage=True)
    owning.close()
    assert storage.closed


# -- snapshot reads -----------------------------------------------------------


def test_snapshot_reads_across_interleaved_transactions(store: MvccStore) -> None:
    put(store, a=b"a1", b=b"b1")
    t1 = store.begin()  # sees a1 b1
    t2 = store.begin()
    t2.set(b"a", b"a2")
    t2.set(b"c", b"c2")
    t3 = store.begin()  # begins before t2 commits: must not see t2
    assert t1.get(b"a") == b"a1"
    t2.commit()
    t4 = store.begin()  # sees t2
    t5 = store.begin()
    t5.delete(b"b")
    t5.set(b"a", b"a5")
    t5.commit()
    t6 = store.begin()  # sees t5

    assert [t.get(b"a") for t in (t1, t3, t4, t6)] == [b"a1", b"a1", b"a2", b"a5"]
    assert [t.get(b"b") for t in (t1, t3, t4, t6)] == [b"b1", b"b1", b"b1", None]
    assert [t.get(b"c") for t in (t1, t3, t4, t6)] == [None, None, b"c2", b"c2"]
    assert list(t1.scan()) == [(b"a", b"a1"), (b"b", b"b1")]
    assert list(t3.scan()) == [(b"a", b"a1"), (b"b", b"b1")]
    assert list(t4.scan()) == [(b"a", b"a2"), (b"b", b"b1"), (b"c", b"c2")]
    assert list(t6.scan()) == [(b"a", b"a5"), (b"c", b"c2")]
    # Repeatable: a second read of each gives the same answer.
    assert t1.get(b"a") == b"a1" and t4.get(b"a") == b"a2"
    for t in (t1, t3, t4, t6):
        t.commit()


def test_uncommitted_writes_of_others_are_invisible(store: MvccStore) -> None:
    put(store, x=b"0")
    writer = store.begin()
    writer.set(b"x", b"dirty")
    writer.set(b"y", b"dirty")
    reader = store.begin()
    assert reader.get(b"x") == b"0"
    assert reader.get(b"y") is None
    assert list(reader.scan()) == [(b"x", b"0")]
    writer.commit()
    assert reader.get(b"x") == b"0"  # committed after the snapshot: still invisible
    assert list(reader.scan()) == [(b"x", b"0")]


def test_scan_order_and_prefixes(store: MvccStore) -> None:
    keys = [b"p\xff", b"p\x00", b"p", b"pa", b"q", b"o\xff", b"p\x80"]
    with store.begin() as tx:
        for k in keys:
            tx.set(k, k)
    with store.begin() as tx:
        assert [k for k, _ in tx.scan()] == sorted(keys)
        assert [k for k, _ in tx.scan(b"p")] == [b"p", b"p\x00", b"pa", b"p\x80", b"p\xff"]
        assert [k for k, _ in tx.scan(b"p\xff")] == [b"p\xff"]
        assert list(tx.scan(b"zz")) == []


# -- own writes ---------------------------------------------------------------


def test_own_writes_visible_in_get_and_scan(store: MvccStore) -> None:
    put(store, **{"u/1": b"1", "u/2": b"2", "u/3": b"3", "v/1": b"x"})
    tx = store.begin()
    tx.set(b"u/2", b"two")  # overwrite
    tx.delete(b"u/3")  # hide
    tx.set(b"u/0", b"zero")  # new key, sorts first
    tx.set(b"u/9", b"nine")  # new key, sorts last
    tx.set(b"w/1", b"elsewhere")  # outside the prefix
    assert tx.get(b"u/2") == b"two"
    assert tx.get(b"u/3") is None
    assert tx.get(b"u/0") == b"zero"
    assert list(tx.scan(b"u/")) == [
        (b"u/0", b"zero"),
        (b"u/1", b"1"),
        (b"u/2", b"two"),
        (b"u/9", b"nine"),
    ]
    assert [k for k, _ in tx.scan()] == [b"u/0", b"u/1", b"u/2", b"u/9", b"v/1", b"w/1"]
    # Set after delete brings the key back; delete after set hides a new key.
    tx.set(b"u/3", b"back")
    tx.delete(b"u/9")
    assert tx.get(b"u/3") == b"back"
    assert [k for k, _ in tx.scan(b"u/")] == [b"u/0", b"u/1", b"u/2", b"u/3"]
    # Others do not see any of it.
    other = store.begin()
    assert list(other.scan(b"u/")) == [(b"u/1", b"1"), (b"u/2", b"2"), (b"u/3", b"3")]
    tx.commit()
    with store.begin() as after:
        assert list(after.scan(b"u/")) == [
            (b"u/0", b"zero"),
            (b"u/1", b"1"),
            (b"u/2", b"two"),
            (b"u/3", b"back"),
        ]


def test_scan_view_is_taken_when_called(store: MvccStore) -> None:
    put(store, a=b"1", b=b"2")
    tx = store.begin()
    it = tx.scan()
    tx.set(b"c", b"3")
    tx.delete(b"a")
    assert list(it) == [(b"a", b"1"), (b"b", b"2")]
    assert list(tx.scan()) == [(b"b", b"2"), (b"c", b"3")]


# -- conflicts ----------------------------------------------------------------


def test_first_committer_wins(store: MvccStore, storage: RecordingStorage) -> None:
    put(store, x=b"0")
    t1 = store.begin()
    t2 = store.begin()
    t1.set(b"x", b"1")
    t2.set(b"x", b"2")  # a blind write conflicts as well
    t1.commit()
    with pytest.raises(ConflictError) as info:
        t2.commit()
    err = info.value
    assert isinstance(err, SuperVMError)
    assert err.kind == "write" and err.key == b"x" and err.prefix is None
    assert "x" in str(err)
    assert t2.status == "aborted"
    assert storage.get(b"x") == b"1"
    stats = store.stats()
    assert stats.conflicts == 1 and stats.commits == 2


def test_delete_conflicts_with_set(store: MvccStore) -> None:
    put(store, x=b"0")
    t1, t2 = store.begin(), store.begin()
    t1.delete(b"x")
    t2.set(b"x", b"2")
    t2.commit()
    with pytest.raises(ConflictError):
        t1.commit()
    with store.begin() as tx:
        assert tx.get(b"x") == b"2"


def test_same_value_still_conflicts(store: MvccStore) -> None:
    t1, t2 = store.begin(), store.begin()
    t1.set(b"x", b"same")
    t2.set(b"x", b"same")
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()


def test_disjoint_or_sequential_writes_do_not_conflict(store: MvccStore) -> None:
    t1, t2 = store.begin(), store.begin()
    t1.set(b"a", b"1")
    t2.set(b"b", b"2")
    t1.commit()
    t2.commit()
    t3 = store.begin()  # begins after both: no conflict on a key they wrote
    t3.set(b"a", b"3")
    t3.commit()
    assert store.stats().conflicts == 0


def test_snapshot_mode_ignores_read_set(store: MvccStore) -> None:
    put(store, x=b"0", y=b"0")
    t1, t2 = store.begin(), store.begin()
    assert t1.get(b"x") == b"0"
    assert list(t1.scan()) == [(b"x", b"0"), (b"y", b"0")]
    t2.set(b"x", b"2")
    t2.set(b"z", b"2")
    t2.commit()
    t1.set(b"y", b"1")
    assert t1.commit() > 0  # snapshot isolation validates writes only


def test_serializable_read_conflict(store: MvccStore) -> None:
    put(store, x=b"0")
    t1 = store.begin("serializable")
    t2 = store.begin()
    assert t1.get(b"x") == b"0"
    t2.set(b"x", b"2")
    t2.commit()
    t1.set(b"y", b"1")
    with pytest.raises(ConflictError) as info:
        t1.commit()
    assert info.value.kind == "read" and info.value.key == b"x"


def test_serializable_read_of_absent_key_conflicts_with_insert(store: MvccStore) -> None:
    t1, t2 = store.begin("serializable"), store.begin()
    assert t1.get(b"x") is None
    t2.set(b"x", b"new")
    t2.commit()
    t1.set(b"y", b"1")
    with pytest.raises(ConflictError):
        t1.commit()


@pytest.mark.parametrize("change", ["insert", "delete", "update"])
def test_serializable_scan_conflicts(store: MvccStore, change: str) -> None:
    put(store, **{"p/1": b"1", "q/1": b"1"})
    t1, t2 = store.begin("serializable"), store.begin()
    assert list(t1.scan(b"p/")) == [(b"p/1", b"1")]
    if change == "insert":
        t2.set(b"p/2", b"phantom")
    elif change == "delete":
        t2.delete(b"p/1")
    else:
        t2.set(b"p/1", b"changed")
    t2.commit()
    t1.set(b"out", b"1")
    with pytest.raises(ConflictError) as info:
        t1.commit()
    assert info.value.kind == "scan" and info.value.prefix == b"p/"


def test_serializable_ignores_changes_outside_what_was_read(store: MvccStore) -> None:
    put(store, **{"p/1": b"1", "q/1": b"1"})
    t1, t2 = store.begin("serializable"), store.begin()
    assert t1.get(b"p/1") == b"1"
    assert list(t1.scan(b"p/")) == [(b"p/1", b"1")]
    t2.set(b"q/1", b"2")
    t2.set(b"q/2", b"2")
    t2.commit()
    t1.set(b"p/1", b"x")
    assert t1.commit() > 0


def test_serializable_read_only_transaction_never_conflicts(store: MvccStore) -> None:
    put(store, x=b"0")
    t1, t2 = store.begin("serializable"), store.begin()
    assert t1.get(b"x") == b"0"
    t2.set(b"x", b"2")
    t2.commit()
    assert t1.commit() == t1.start_ts  # it serialises at its snapshot


# -- write-through ------------------------------------------------------------


def test_commit_writes_through_in_one_batch(store: MvccStore, storage: RecordingStorage) -> None:
    put(store, a=b"1", b=b"2")
    assert storage.batches == [[(b"a", b"1"), (b"b", b"2")]]
    tx = store.begin()
    tx.set(b"c", b"3")
    tx.delete(b"a")
    tx.set(b"b", b"first")
    tx.set(b"b", b"22")  # only the last write of a key is applied
    assert len(storage.batches) == 1  # nothing written before commit
    tx.commit()
    assert storage.batches[-1] == [(b"a", None), (b"b", b"22"), (b"c", b"3")]
    assert dict(storage.scan()) == {b"b": b"22", b"c": b"3"}
    store.begin().commit()  # read-only: no batch
    assert len(storage.batches) == 2


def test_second_store_over_same_storage_sees_commits(storage: RecordingStorage) -> None:
    first = MvccStore(storage)
    put(first, a=b"1", b=b"2")
    put(first, b=None, c=b"3")
    first.close()
    second = MvccStore(storage)
    with second.begin() as tx:
        assert tx.get(b"a") == b"1" and tx.get(b"b") is None
        assert list(tx.scan()) == [(b"a", b"1"), (b"c", b"3")]
    second.close()


def test_failed_write_batch_aborts_and_changes_nothing(
    store: MvccStore, storage: RecordingStorage
) -> None:
    put(store, a=b"1")
    reader = store.begin()
    tx = store.begin()
    tx.set(b"a", b"2")
    tx.set(b"new", b"x")
    storage.fail_next = True
    with pytest.raises(OSError, match="disk full"):
        tx.commit()
    assert tx.status == "aborted"
    assert dict(storage.scan()) == {b"a": b"1"}
    assert reader.get(b"a") == b"1" and reader.get(b"new") is None
    with store.begin() as after:
        assert list(after.scan()) == [(b"a", b"1")]
        after.set(b"a", b"3")  # the failed commit left nothing that conflicts
    assert storage.get(b"a") == b"3"
    assert store.stats().conflicts == 0


def test_old_snapshot_reads_values_overwritten_in_storage(
    store: MvccStore, storage: RecordingStorage
) -> None:
    storage.set(b"pre", b"existing")  # written before the store saw the key
    old = store.begin()
    put(store, pre=b"changed", fresh=b"new")
    put(store, pre=None)
    assert storage.get(b"pre") is None
    assert old.get(b"pre") == b"existing"
    assert old.get(b"fresh") is None
    assert list(old.scan()) == [(b"pre", b"existing")]


def test_reads_during_a_commit_in_flight() -> None:
    """Between the write-through and the commit's completion, nobody sees the new state."""
    storage = PausingStorage()
    store = MvccStore(storage)
    put(store, a=b"1", gone=b"x")
    before = store.begin()
    tx = store.begin()
    tx.set(b"a", b"2")
    tx.set(b"b", b"new")
    tx.delete(b"gone")
    storage.pause = True
    committer = threading.Thread(target=tx.commit)
    committer.start()
    assert storage.applied.wait(10)
    try:
        assert dict(storage.scan()) == {b"a": b"2", b"b": b"new"}  # already in storage
        during = store.begin()
        assert during.start_ts == before.start_ts == 1
        gc_thread = threading.Thread(target=store.gc)
        gc_thread.start()
        gc_thread.join(0.05)
        assert gc_thread.is_alive()  # gc waits for the commit
        for t in (before, during):
            assert t.get(b"a") == b"1"
            assert t.get(b"b") is None
            assert t.get(b"gone") == b"x"
            assert list(t.scan()) == [(b"a", b"1"), (b"gone", b"x")]
    finally:
        storage.release.set()
        committer.join()
    gc_thread.join()
    assert tx.status == "committed" and tx.commit_ts == 2
    for t in (before, during):  # still their snapshot, now and after gc
        assert t.get(b"a") == b"1" and t.get(b"b") is None
        assert list(t.scan()) == [(b"a", b"1"), (b"gone", b"x")]
    with store.begin() as after:
        assert list(after.scan()) == [(b"a", b"2"), (b"b", b"new")]
    store.close()


@pytest.mark.parametrize("read", ["get", "scan"])
def test_read_overtaken_by_a_commit(read: str) -> None:
    """A read that reaches the storage after a later commit still returns its snapshot."""
    storage = GatedStorage()
    store = MvccStore(storage)
    put(store, k=b"old", gone=b"x")
    store.gc()
    assert store.stats().chains == 0  # so the reads below go to the storage
    old = store.begin()
    results: list[object] = []

    def reader() -> None:
        if read == "get":
            results.append((old.get(b"k"), old.get(b"gone")))
        else:
            results.append(list(old.scan()))

    thread = threading.Thread(target=reader)
    storage.gated = thread
    thread.start()
    assert storage.waiting.wait(10)
    put(store, k=b"new", gone=None, fresh=b"y")  # commits while the reader waits
    storage.gate.set()
    thread.join()
    if read == "get":
        assert results == [(b"old", b"x")]
    else:
        assert results == [[(b"gone", b"x"), (b"k", b"old")]]
    store.close()


# -- garbage collection -------------------------------------------------------


def test_gc_keeps_what_live_snapshots_need(store: MvccStore, storage: RecordingStorage) -> None:
    put(store, k=b"v1")  # ts 1; chain: base(None), v1
    old = store.begin()  # snapshot 1
    put(store, k=b"v2")  # ts 2
    put(store, k=b"v3")  # ts 3
    assert store.stats().versions == 4
    assert store.watermark() == 1

    reclaimed = store.gc()  # keeps v1 (newest <= 1) and everything newer
    assert reclaimed == 1
    stats = store.stats()
    assert (stats.versions, stats.chains, stats.gc_runs, stats.versions_reclaimed) == (3, 1, 1, 1)
    assert old.get(b"k") == b"v1"
    assert list(old.scan()) == [(b"k", b"v1")]

    old.commit()
    assert store.watermark() == 3
    assert store.gc() == 3  # v1, v2 dropped; v3 equals storage, so the chain goes
    stats = store.stats()
    assert (stats.versions, stats.chains, stats.gc_runs, stats.versions_reclaimed) == (0, 0, 2, 4)
    with store.begin() as tx:
        assert tx.get(b"k") == b"v3" == storage.get(b"k")
    assert store.gc() == 0
    assert store.stats().gc_runs == 3


def test_old_snapshot_survives_gc_running_concurrently(store: MvccStore) -> None:
    put(store, **{f"k{i}": b"0" for i in range(20)})
    old = store.begin()
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            put(store, **{f"k{i}": str(n).encode() for i in range(20)})
            store.gc()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        wait_for(lambda: store.stats().gc_runs >= 20)
        for _ in range(50):
            assert list(old.scan()) == [
                (f"k{i}".encode(), b"0") for i in sorted(range(20), key=str)
            ]
            assert old.get(b"k7") == b"0"
    finally:
        stop.set()
        thread.join()
    assert store.stats().versions >= 40  # old snapshot pins the base plus the newest versions
    old.commit()
    store.gc()
    assert store.stats().versions == 0


def test_gc_drops_chain_of_deleted_key(store: MvccStore, storage: RecordingStorage) -> None:
    put(store, k=b"v")
    put(store, k=None)
    assert store.gc() == 3
    assert store.stats().chains == 0
    with store.begin() as tx:
        assert tx.get(b"k") is None
    assert storage.get(b"k") is None


def test_watermark_follows_oldest_live_snapshot(store: MvccStore) -> None:
    assert store.watermark() == 0
    put(store, a=b"1")
    t1 = store.begin()
    put(store, a=b"2")
    t2 = store.begin()
    put(store, a=b"3")
    assert store.watermark() == 1
    t1.abort()
    assert store.watermark() == 2
    t2.commit()
    assert store.watermark() == 3 == store.oracle.now()
    assert store.stats().active == 0


def test_dropped_unfinished_transaction_frees_its_snapshot(store: MvccStore) -> None:
    put(store, a=b"1")
    tx = store.begin()
    put(store, a=b"2")
    assert store.watermark() == 1
    del tx
    pygc.collect()
    assert store.watermark() == 2
    assert store.stats().active == 0


def test_background_gc_runs_and_stops() -> None:
    store = MvccStore(MemoryStorage(), gc_interval=0.01)
    try:
        assert store.gc_running
        threads = [t for t in threading.enumerate() if t.name == "supervm-mvcc-gc"]
        assert len(threads) == 1
        put(store, a=b"1")
        put(store, a=b"2")
        wait_for(lambda: store.stats().chains == 0)
        assert store.stats().gc_runs >= 1
        assert store.stats().versions_reclaimed == 3
        with pytest.raises(RuntimeError, match="already running"):
            store.start_gc(0.01)
        store.stop_gc()
        assert not store.gc_running
        assert not threads[0].is_alive()
        runs = store.stats().gc_runs
        time.sleep(0.05)
        assert store.stats().gc_runs == runs
        store.stop_gc()  # stopping twice is fine

        store.start_gc(0.01)  # can be restarted
        thread = next(t for t in threading.enumerate() if t.name == "supervm-mvcc-gc")
        wait_for(lambda: store.stats().gc_runs > runs)
    finally:
        store.close()
    assert not store.gc_running
    assert not thread.is_alive()


def test_start_gc_rejects_bad_intervals(store: MvccStore) -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            store.start_gc(bad)
    with pytest.raises(TypeError):
        store.start_gc("1")  # type: ignore[arg-type]
    assert not store.gc_running


def test_stats_is_a_dataclass(store: MvccStore) -> None:
    assert store.stats() == MvccStats(
        versions=0, chains=0, active=0, gc_runs=0, versions_reclaimed=0, commits=0, conflicts=0
    )


# -- concurrency --------------------------------------------------------------


def test_concurrent_increments_lose_no_update() -> None:
    store = MvccStore(MemoryStorage(), gc_interval=0.002)
    put(store, counter=b"0")
    successes = [0] * 8
    conflicts = [0] * 8

    def worker(n: int) -> None:
        for _ in range(40):
            while True:
                tx = store.begin()
                value = tx.get(b"counter")
                assert value is not None
                tx.set(b"counter", str(int(value) + 1).encode())
                try:
                    tx.commit()
                except ConflictError:
                    conflicts[n] += 1
                    continue
                successes[n] += 1
                break

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert sum(successes) == 320
    assert store.storage.get(b"counter") == b"320"
    stats = store.stats()
    assert stats.commits == 321  # the seeding commit plus every increment
    assert stats.conflicts == sum(conflicts)


def test_concurrent_transfers_keep_snapshots_consistent() -> None:
    """Readers always see a consistent total while writers move amounts between keys."""
    store = MvccStore(MemoryStorage(), gc_interval=0.001)
    put(store, **{f"acct/{i}": b"100" for i in range(5)})
    stop = threading.Event()
    errors: list[str] = []

    def transfer(seed: int) -> None:
        i = seed
        while not stop.is_set():
            i += 1
            src, dst = f"acct/{i % 5}".encode(), f"acct/{(i * 3 + 1) % 5}".encode()
            if src == dst:
                continue
            tx = store.begin()
            a, b = tx.get(src), tx.get(dst)
            assert a is not None and b is not None
            tx.set(src, str(int(a) - 1).encode())
            tx.set(dst, str(int(b) + 1).encode())
            with contextlib.suppress(ConflictError):
                tx.commit()

    def audit() -> None:
        for _ in range(300):
            with store.begin() as tx:
                by_scan = sum(int(v) for _, v in tx.scan(b"acct/"))
                by_get = sum(int(tx.get(f"acct/{i}".encode()) or b"0") for i in range(5))
                if by_scan != 500 or by_get != 500:
                    errors.append(f"scan total {by_scan}, get total {by_get}")

    writers = [threading.Thread(target=transfer, args=(s,)) for s in range(3)]
    auditors = [threading.Thread(target=audit) for _ in range(2)]
    for t in writers + auditors:
        t.start()
    for t in auditors:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    store.close()
    assert errors == []
    assert sum(int(v) for _, v in store.storage.scan(b"acct/")) == 500
    assert store.stats().commits > 1
