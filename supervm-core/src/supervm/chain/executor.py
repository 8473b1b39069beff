"""Executing a block: sequentially, or in parallel in the Block-STM manner.

Both modes produce the same receipts, write set and digest for the same block
and pre-block state. The parallel mode runs transactions optimistically on a
pool of threads (each with its own wasmtime stores), validates what every
transaction read against what lower transactions wrote, and re-executes the
ones whose reads went stale; after too many re-executions it gives up and runs
the block sequentially. Transactions declared owned-only, whose sender has no
earlier shared transaction in the block, take the owned-object fast path: no
other sender may write their objects, so each sender's run of them executes in
order on one thread and is never validated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from supervm.chain.block import (
    Block,
    BlockResult,
    ExecutionStats,
    Transaction,
    receipts_root,
    state_digest,
)
from supervm.chain.mvmemory import Dependency, MVMemory, TxView
from supervm.chain.scheduler import Scheduler
from supervm.state import BatchOp, OverlayView, StateView
from supervm.vm.runtime import Receipt, Runtime

__all__ = ["BlockExecutor"]

#: Progress callback: (transactions done, transactions in the block).
Progress = Callable[[int, int], None]


class BlockExecutor:
    """Runs blocks of transactions with a :class:`Runtime` against a pre-block state."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        threads: int = 2,
        max_reexecution_factor: int = 3,
        min_parallel_gas: int = 5_000_000,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.runtime = runtime
        self.threads = threads
        self.max_reexecution_factor = max_reexecution_factor
        #: Threads only overlap wasm execution (host calls hold the GIL): blocks whose
        #: transactions are known to average less gas than this run sequentially.
        self.min_parallel_gas = min_parallel_gas
        self._gas_seen: dict[tuple[bytes, str], float] = {}
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="supervm-exec")
        return self._pool

    def _run(self, tx: Transaction, block: Block, view: StateView) -> Receipt:
        return self.runtime.run(
            tx.contract, tx.method, tx.input, sender=tx.sender, gas_limit=tx.gas_limit,
            block_height=block.height, block_timestamp=block.timestamp, view=view,
            owned_only=tx.owned,
        )  # fmt: skip

    def execute(
        self,
        block: Block,
        base: StateView,
        parent_digest: bytes,
        *,
        mode: str = "parallel",
        progress: Progress | None = None,
    ) -> BlockResult:
        """Execute ``block`` on ``base`` (nothing is written) and return its result."""
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"mode must be 'sequential' or 'parallel', not {mode!r}")
        start = time.perf_counter()
        outcome = None
        reason = ""
        if mode == "parallel":
            reason = self._why_not_parallel(block)
            if not reason:
                parallel = self._parallel(block, base, progress)
                if isinstance(parallel, str):
                    reason = parallel
                else:
                    outcome = parallel
        if outcome is None:
            stats = ExecutionStats(mode="sequential", threads=1, fallback_reason=reason)
            stats.fell_back_to_sequential = bool(reason)
            receipts, writes = self._sequential(block, base, stats, progress)
        else:
            receipts, writes, stats = outcome
        stats.seconds = time.perf_counter() - start
        self._learn(block, receipts)
        return BlockResult(
            height=block.height,
            timestamp=block.timestamp,
            receipts=tuple(receipts),
            write_set=tuple(writes),
            parent_digest=parent_digest,
            state_digest=state_digest(parent_digest, block.height, writes),
            receipts_root=receipts_root(receipts),
            stats=stats,
        )

    def _why_not_parallel(self, block: Block) -> str:
        """Why ``block`` should run sequentially, or "" to run it in parallel."""
        txs = block.transactions
        if self.threads < 2 or len(txs) < 2:
            return "one thread or one transaction"
        seen = self._gas_seen
        known = [seen.get((tx.contract, tx.method)) for tx in txs]
        if None in known:
            return ""
        average = sum(known) / len(known)  # type: ignore[arg-type]
        if average < self.min_parallel_gas:
            return f"transactions average {average:,.0f} gas: too short for threads to pay off"
        return ""

    def _learn(self, block: Block, receipts: list[Receipt]) -> None:
        seen = self._gas_seen
        for tx, receipt in zip(block.transactions, receipts, strict=True):
            key = (tx.contract, tx.method)
            previous = seen.get(key)
            gas = float(receipt.gas_used)
            seen[key] = gas if previous is None else 0.9 * previous + 0.1 * gas

    # -- sequential --------------------------------------------------------------------

    def _sequential(
        self, block: Block, base: StateView, stats: ExecutionStats, progress: Progress | None
    ) -> tuple[list[Receipt], list[BatchOp]]:
        view = OverlayView(base)
        overlay = view.overlay
        receipts = []
        total = len(block.transactions)
        for done, tx in enumerate(block.transactions, 1):
            receipt = self._run(tx, block, view)
            stats.executions += 1
            if receipt.write_set:
                overlay.update(receipt.write_set)
            receipts.append(receipt)
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total)
        return receipts, sorted(overlay.items())

    # -- parallel -----------------------------------------------------------------------

    def _owned_lanes(self, block: Block) -> dict[bytes, list[int]]:
        """Owned-only transactions per sender, up to that sender's first shared one."""
        lanes: dict[bytes, list[int]] = {}
        shared_seen: set[bytes] = set()
        for index, tx in enumerate(block.transactions):
            if tx.owned and tx.sender not in shared_seen:
                lanes.setdefault(tx.sender, []).append(index)
            else:
                shared_seen.add(tx.sender)
        return lanes

    def _parallel(
        self, block: Block, base: StateView, progress: Progress | None
    ) -> tuple[list[Receipt], list[BatchOp], ExecutionStats] | str:
        txs = block.transactions
        count = len(txs)
        stats = ExecutionStats(mode="parallel", threads=self.threads)
        memory = MVMemory(base)
        receipts: list[Receipt | None] = [None] * count
        pool = self._workers()

        # Owned-object fast path: each lane in order on one thread, results final.
        lanes = self._owned_lanes(block)

        def run_lane(indices: list[int]) -> list[int]:
            """Run a lane; return the indices it ran (a lane stops at its first scan)."""
            view = OverlayView(base)
            for position, index in enumerate(indices):
                receipt = self._run(txs[index], block, view)
                if receipt.scan_set:
                    # Which keys a scan meets depends on shared keys that other senders
                    # may add earlier in the block: from here on the lane needs Block-STM.
                    return indices[:position]
                if receipt.write_set:
                    view.overlay.update(receipt.write_set)
                    memory.record(index, 0, receipt.write_set)
                receipts[index] = receipt
            return indices

        ran = [pool.submit(run_lane, lane) for lane in lanes.values()]
        finished = {index for future in ran for index in future.result()}
        stats.owned_fast_path = len(finished)
        stats.executions += len(finished)

        scheduler = Scheduler(count, finished)
        reads: list[tuple[list, list]] = [([], [])] * count  # type: ignore[type-arg]
        budget = self.max_reexecution_factor * count + 16
        counters = {"executions": 0, "validations": 0, "aborts": 0, "gas": 0}
        failure: list[BaseException] = []
        gave_up = threading.Event()
        lock = scheduler.lock
        # After this many executions, blocks of short transactions switch to sequential.
        probe = min(count, 64)
        reason: list[str] = []

        def give_up(why: str) -> None:
            reason.append(why)
            gave_up.set()
            scheduler.done = True
            lock.notify_all()

        def execute(index: int, incarnation: int) -> tuple[str, int, int] | None:
            while True:
                view = TxView(memory, index)
                try:
                    receipt = self._run(txs[index], block, view)
                except Dependency as dep:
                    with lock:
                        if scheduler.add_dependency(index, dep.blocking):
                            return None
                    continue
                wrote_new = memory.record(index, incarnation, receipt.write_set)
                reads[index] = (view.reads, view.scans)
                receipts[index] = receipt
                with lock:
                    counters["executions"] += 1
                    counters["gas"] += receipt.gas_used
                    executed = counters["executions"]
                    if executed > budget:
                        give_up("too many re-executions")
                        return None
                    if executed == probe and counters["gas"] < self.min_parallel_gas * executed:
                        give_up(
                            f"transactions average {counters['gas'] // executed:,} gas: "
                            "too short for threads to pay off"
                        )
                        return None
                    return scheduler.finish_execution(index, incarnation, wrote_new)

        def validate(index: int, incarnation: int) -> tuple[str, int, int] | None:
            point_reads, scans = reads[index]
            valid = memory.validate(index, point_reads, scans)
            with lock:
                counters["validations"] += 1
                aborted = not valid and scheduler.try_abort(index, incarnation)
                if aborted:
                    counters["aborts"] += 1
            if aborted:
                memory.mark_estimates(index)
            with lock:
                return scheduler.finish_validation(index, aborted)

        def worker() -> None:
            task = None
            try:
                while not gave_up.is_set():
                    if task is None:
                        with lock:
                            if scheduler.done:
                                return
                            task = scheduler.next_task()
                            if task is None:
                                lock.wait(0.001)
                                continue
                    kind, index, incarnation = task
                    task = (execute if kind == "execute" else validate)(index, incarnation)
            except BaseException as exc:  # a store error or a bug: stop everyone
                failure.append(exc)
                gave_up.set()
                with lock:
                    scheduler.done = True
                    lock.notify_all()

        futures = [pool.submit(worker) for _ in range(self.threads)]
        if progress is not None:
            while wait(futures, timeout=0.05).not_done:
                with lock:
                    done = min(scheduler.validation_idx, scheduler.execution_idx, count)
                progress(done, count)
        for future in futures:
            future.result()
        if failure:
            raise failure[0]
        stats.executions += counters["executions"]
        stats.validations = counters["validations"]
        stats.aborts = counters["aborts"]
        if gave_up.is_set():
            return reason[0] if reason else "parallel execution stopped"
        if progress is not None:
            progress(count, count)
        final = [r for r in receipts if r is not None]
        assert len(final) == count
        return final, memory.final_writes(), stats
