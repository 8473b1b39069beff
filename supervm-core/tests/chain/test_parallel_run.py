"""The parallel run (Scheduler + MVMemory on a thread pool) with fake transactions, no wasm.

In the manner of Block-STM's property tests (aptos-core ``block-executor``): a
fake transaction is a list of reads, prefix scans, writes and deletes over a
small key space, and every value it writes is a hash of its index and of
everything it read before, as is its return data. A transaction that read in a
different order, or saw a different version, ends differently. Some revert
(always, or depending on what they read) and write nothing; some sleep so that
the threads interleave; some validations fail spuriously, forcing a
re-execution that must not change anything. The parallel run, through the same
:class:`ParallelRun` that ``BlockExecutor`` uses, must give exactly the
receipts and write set of a sequential run (``run_sequential``) of the same
transactions over the same pre-block state.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from supervm.chain.block import ExecutionStats
from supervm.chain.executor import run_sequential
from supervm.chain.mvmemory import Dependency, MVMemory, Version
from supervm.chain.parallel import Outcome, ParallelRun, Progress, RunTx, owned_lanes
from supervm.memory import MemoryStorage
from supervm.state import BatchOp, OverlayView, StateView, StorageView
from supervm.vm import Receipt, Status

HOT = b"hot"
SHARED = [b"a/0", b"a/1", b"a/2", b"b/0", b"b/1", HOT]
PREFIXES = [b"", b"a/", b"a/1", b"b/", b"o/"]
SENDERS = 3


def sender(i: int) -> bytes:
    return bytes([i + 1]) * 20


def own_key(address: bytes) -> bytes:
    """The one object ``address`` owns: only its transactions write it."""
    return b"o/" + address[:1].hex().encode()


OWN = [own_key(sender(i)) for i in range(SENDERS)]

#: ("get" | "scan" | "put" | "delete", key or prefix)
Op = tuple[str, bytes]


@dataclass(frozen=True)
class FakeTx:
    sender: bytes
    ops: tuple[Op, ...]
    #: "never", "always", or "odd": revert when the hash of what it read is odd.
    revert: str = "never"
    #: Sleep while running (the GIL is released: other threads run meanwhile).
    slow: bool = False
    owned: bool = False


def run_fake(index: int, tx: FakeTx, view: StateView) -> Receipt:
    """Execute ``tx`` as transaction ``index``: a call's own writes are visible to it."""
    digest = hashlib.sha256(index.to_bytes(4, "little"))
    local = OverlayView(view)
    read: set[bytes] = set()
    scans: list[bytes] = []
    for position, (kind, key) in enumerate(tx.ops):
        if tx.slow and position == len(tx.ops) // 2:
            time.sleep(0.0002)
        if kind == "get":
            value = local.get(key)
            read.add(key)
            digest.update(b"get %r=%r;" % (key, value))
        elif kind == "scan":
            scans.append(key)
            digest.update(b"scan %r=%r;" % (key, list(local.scan(key))))
        elif kind == "put":
            local.overlay[key] = digest.digest()[:6]
        else:
            local.overlay[key] = None
    result = digest.digest()
    gas = 1000 * (1 + len(tx.ops))
    if tx.revert == "always" or (tx.revert == "odd" and result[0] & 1):
        return Receipt(Status.REVERTED, result, gas, read_set=tuple(sorted(read)),
                       scan_set=tuple(scans))  # fmt: skip
    return Receipt(Status.OK, result, gas, read_set=tuple(sorted(read)), scan_set=tuple(scans),
                   write_set=tuple(sorted(local.overlay.items())))  # fmt: skip


class FlakyMemory(MVMemory):
    """MVMemory whose first validation of some transactions fails whatever they read."""

    def __init__(self, base: StateView, spurious: set[int]) -> None:
        super().__init__(base)
        self.spurious = set(spurious)
        self.injected = 0
        #: Set when a read met an estimate.
        self.met_estimate = threading.Event()
        self._spurious_lock = threading.Lock()

    def validate(self, txn: int, reads: list[tuple[bytes, Version]],
                 scans: list[tuple[bytes, list[tuple[bytes, Version]]]]) -> bool:  # fmt: skip
        with self._spurious_lock:
            if txn in self.spurious:
                self.spurious.discard(txn)
                self.injected += 1
                return False
        return super().validate(txn, reads, scans)

    def read(self, key: bytes, txn: int) -> tuple[Version, bytes | None]:
        try:
            return super().read(key, txn)
        except Dependency as dep:
            self.met_estimate.set()
            raise dep from None


def base_view(base: dict[bytes, bytes]) -> StateView:
    storage = MemoryStorage()
    storage.write_batch(list(base.items()))
    return StorageView(storage)


def fake_run_tx(txs: list[FakeTx]) -> RunTx:
    return lambda index, view: run_fake(index, txs[index], view)


def sequential(txs: list[FakeTx], base: dict[bytes, bytes]) -> tuple[list[Receipt], list[BatchOp]]:
    return run_sequential(fake_run_tx(txs), len(txs), base_view(base), ExecutionStats(), None)


def parallel(
    txs: list[FakeTx],
    base: dict[bytes, bytes],
    pool: ThreadPoolExecutor,
    threads: int,
    *,
    spurious: Iterable[int] = (),
    max_reexecution_factor: int = 1000,
    min_parallel_gas: int = 0,
    progress: Progress | None = None,
) -> tuple[Outcome | str, FlakyMemory]:
    """A parallel run, the owned lanes included; by default it never gives up."""
    memory = FlakyMemory(base_view(base), set(spurious))
    run = ParallelRun(
        fake_run_tx(txs), len(txs), memory, pool, threads=threads, lanes=owned_lanes(txs),
        max_reexecution_factor=max_reexecution_factor, min_parallel_gas=min_parallel_gas,
        progress=progress,
    )  # fmt: skip
    return run.run(), memory


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[int, ThreadPoolExecutor]]:
    """Thread pools of 2, 3 and 4 threads, shared by every example."""
    made = {n: ThreadPoolExecutor(n, thread_name_prefix=f"fake-exec-{n}") for n in (2, 3, 4)}
    yield made
    for pool in made.values():
        pool.shutdown(wait=True)


# -- the property -------------------------------------------------------------------------


def shared_ops(me: bytes) -> st.SearchStrategy[Op]:
    """What a shared transaction does: read anything, write shared keys and its own object."""
    readable = SHARED + OWN
    writable = [*SHARED, own_key(me)]
    return (
        st.tuples(st.just("get"), st.sampled_from(readable))
        | st.tuples(st.just("scan"), st.sampled_from(PREFIXES))
        | st.tuples(st.sampled_from(["put", "put", "delete"]), st.sampled_from(writable))
    )


def owned_ops(me: bytes) -> st.SearchStrategy[Op]:
    """What an owned-only transaction does: touch its own object (a scan ends its lane)."""
    return st.tuples(st.sampled_from(["get", "put", "put", "delete"]), st.just(own_key(me))) | (
        st.tuples(st.just("scan"), st.just(b"o/"))
    )


@st.composite
def fake_tx(draw: st.DrawFn, hot: bool) -> FakeTx:
    me = sender(draw(st.integers(0, SENDERS - 1)))
    owned = draw(st.integers(0, 4)) == 0
    ops = draw(st.lists(owned_ops(me) if owned else shared_ops(me), max_size=6))
    if hot and not owned:  # every shared transaction reads and writes the hot key
        ops = [("get", HOT), *ops, ("put", HOT)]
    revert = draw(st.sampled_from(["never", "never", "never", "always", "odd"]))
    return FakeTx(me, tuple(ops), revert, slow=draw(st.integers(0, 3)) == 0, owned=owned)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[FakeTx], dict[bytes, bytes], int, set[int]]:
    hot = draw(st.booleans())
    txs = draw(st.lists(fake_tx(hot), min_size=1, max_size=24))
    base = draw(st.dictionaries(st.sampled_from(SHARED + OWN), st.binary(max_size=3)))
    threads = draw(st.sampled_from([2, 3, 4]))
    spurious = draw(st.sets(st.integers(0, len(txs) - 1), max_size=3))
    return txs, base, threads, spurious


@settings(max_examples=120, deadline=None)
@given(scenario=scenarios())
def test_parallel_run_equals_sequential_run(
    pools: dict[int, ThreadPoolExecutor],
    scenario: tuple[list[FakeTx], dict[bytes, bytes], int, set[int]],
) -> None:
    txs, base, threads, spurious = scenario
    expected_receipts, expected_writes = sequential(txs, base)
    outcome, _ = parallel(txs, base, pools[threads], threads, spurious=spurious)
    assert not isinstance(outcome, str), outcome
    receipts, writes, stats = outcome
    assert receipts == expected_receipts
    assert writes == expected_writes
    assert stats.executions >= len(txs)
    assert stats.validations >= len(txs) - stats.owned_fast_path
    event(f"re-executions: {'yes' if stats.executions > len(txs) else 'no'}")
    event(f"owned fast path: {'yes' if stats.owned_fast_path else 'no'}")


# -- single cases -------------------------------------------------------------------------


def counter_block(count: int) -> list[FakeTx]:
    """Every transaction reads the hot key, then writes it (from what it read)."""
    return [FakeTx(sender(i % SENDERS), (("get", HOT), ("put", HOT))) for i in range(count)]


def test_a_hot_key_written_by_every_transaction(pools: dict[int, ThreadPoolExecutor]) -> None:
    txs = counter_block(300)
    outcome, _ = parallel(txs, {HOT: b"0"}, pools[4], 4)
    assert not isinstance(outcome, str)
    assert outcome[:2] == sequential(txs, {HOT: b"0"})


def test_spurious_failed_validations_re_execute_and_change_nothing(
    pools: dict[int, ThreadPoolExecutor],
) -> None:
    txs = counter_block(40)
    outcome, memory = parallel(txs, {}, pools[2], 2, spurious={0, 7, 39})
    assert not isinstance(outcome, str)
    assert outcome[:2] == sequential(txs, {})
    assert memory.injected == 3
    assert outcome[2].aborts >= 3
    assert outcome[2].executions >= 43


def test_a_reader_of_an_estimate_waits_for_the_re_execution(
    pools: dict[int, ThreadPoolExecutor],
) -> None:
    txs = [FakeTx(sender(0), (("put", HOT),)), FakeTx(sender(1), (("get", HOT), ("put", b"a/0")))]
    memory = FlakyMemory(base_view({HOT: b"base"}), spurious={0})
    calls = [0, 0]

    def run_tx(index: int, view: StateView) -> Receipt:
        calls[index] += 1
        if index == 0 and calls[0] == 2:
            # The re-execution of 0, its writes now estimates: 1 must wait for it.
            assert memory.met_estimate.wait(10)
        return run_fake(index, txs[index], view)

    outcome = ParallelRun(run_tx, 2, memory, pools[2], threads=2).run()
    assert not isinstance(outcome, str)
    assert outcome[:2] == sequential(txs, {HOT: b"base"})
    assert calls[0] == 2
    assert outcome[2].aborts >= 1


def test_prefix_scans_see_keys_lower_transactions_add_and_delete(
    pools: dict[int, ThreadPoolExecutor],
) -> None:
    txs = []
    for i in range(30):
        me = sender(i % SENDERS)
        txs.append(FakeTx(me, (("scan", b"a/"), ("put", SHARED[i % 3])), slow=i % 4 == 0))
        txs.append(FakeTx(me, (("scan", b""), ("delete", SHARED[(i + 1) % 3]))))
    base = {b"a/0": b"x", b"b/1": b"y"}
    outcome, _ = parallel(txs, base, pools[3], 3)
    assert not isinstance(outcome, str)
    assert outcome[:2] == sequential(txs, base)


def test_owned_lanes_run_first_and_stop_at_a_scan(pools: dict[int, ThreadPoolExecutor]) -> None:
    a, b = sender(0), sender(1)
    bump = (("get", own_key(a)), ("put", own_key(a)))
    txs = [
        FakeTx(a, bump, owned=True),  # lane of a
        FakeTx(b, (("get", own_key(a)), ("put", HOT))),  # shared: reads a's object
        FakeTx(a, bump, owned=True),  # lane of a
        FakeTx(a, (("scan", b"o/"),), owned=True),  # a scan: the lane stops here
        FakeTx(a, bump, owned=True),  # after the scan: Block-STM
        FakeTx(b, (("put", own_key(b)),), owned=True),  # b already ran a shared one
    ]
    assert owned_lanes(txs) == [[0, 2, 3, 4]]
    outcome, _ = parallel(txs, {}, pools[2], 2)
    assert not isinstance(outcome, str)
    assert outcome[:2] == sequential(txs, {})
    assert outcome[2].owned_fast_path == 2


def test_too_many_re_executions_give_up(pools: dict[int, ThreadPoolExecutor]) -> None:
    # The budget is max_reexecution_factor * count + 16 executions.
    outcome, _ = parallel(counter_block(20), {}, pools[2], 2, max_reexecution_factor=0)
    assert outcome == "too many re-executions"


def test_short_transactions_give_up_after_the_probe(pools: dict[int, ThreadPoolExecutor]) -> None:
    txs = [FakeTx(sender(0), (("put", b"a/%d" % i),)) for i in range(100)]
    outcome, _ = parallel(txs, {}, pools[2], 2, min_parallel_gas=1_000_000)
    assert outcome == "transactions average 2,000 gas: too short for threads to pay off"
    outcome, _ = parallel(txs, {}, pools[2], 2, min_parallel_gas=2_000)
    assert not isinstance(outcome, str)


def test_a_failing_transaction_stops_the_run_and_its_error_is_raised(
    pools: dict[int, ThreadPoolExecutor],
) -> None:
    txs = counter_block(50)

    def run_tx(index: int, view: StateView) -> Receipt:
        if index == 17:
            raise RuntimeError("store went away")
        return run_fake(index, txs[index], view)

    run = ParallelRun(run_tx, len(txs), MVMemory(base_view({})), pools[2], threads=2)
    with pytest.raises(RuntimeError, match="store went away"):
        run.run()
    assert run.gave_up.is_set()
    # The pool's workers all returned: it runs the next block.
    outcome, _ = parallel(txs, {}, pools[2], 2)
    assert not isinstance(outcome, str)


def test_a_failing_lane_raises(pools: dict[int, ThreadPoolExecutor]) -> None:
    def run_tx(index: int, view: StateView) -> Receipt:
        raise RuntimeError("lane failed")

    txs = [FakeTx(sender(0), (), owned=True)]
    run = ParallelRun(run_tx, 1, MVMemory(base_view({})), pools[2], threads=2,
                      lanes=owned_lanes(txs))  # fmt: skip
    with pytest.raises(RuntimeError, match="lane failed"):
        run.run()


def test_progress_ends_at_the_block_size(pools: dict[int, ThreadPoolExecutor]) -> None:
    txs = [FakeTx(sender(i % 2), (("put", b"a/%d" % (i % 3)),), slow=True) for i in range(200)]
    calls: list[tuple[int, int]] = []
    outcome, _ = parallel(
        txs, {}, pools[2], 2, progress=lambda done, total: calls.append((done, total))
    )
    assert not isinstance(outcome, str)
    assert calls[-1] == (200, 200)
    assert all(0 <= done <= total == 200 for done, total in calls)
