"""One optimistic parallel run of a block's transactions, in the Block-STM manner.

A :class:`ParallelRun` knows nothing of wasm or blocks: it is given a function
that executes transaction ``index`` against a state view and returns its
receipt, the number of transactions, the block's multi-version memory over the
pre-block state and a pool of threads. It first runs the owned-object lanes
(each in order on one thread, results final), then lets ``threads`` workers
take execution and validation tasks from a :class:`Scheduler` until every
transaction is validated. It gives up, so that the caller runs the block
sequentially, after too many executions, or when the first executions show
transactions too short for threads to pay off. A worker's exception stops every
worker and is raised by :meth:`ParallelRun.run`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, wait
from typing import Protocol

from supervm.chain.block import ExecutionStats
from supervm.chain.mvmemory import Dependency, MVMemory, TxView, Version
from supervm.chain.scheduler import Scheduler, Task
from supervm.state import BatchOp, OverlayView, StateView
from supervm.vm.runtime import Receipt

__all__ = ["Declared", "Outcome", "ParallelRun", "Progress", "RunTx", "owned_lanes"]

#: Progress callback: (transactions done, transactions in the block).
Progress = Callable[[int, int], None]

#: Executes transaction ``index`` against ``view`` and returns its receipt. A read of
#: the view may raise :class:`Dependency`, which must reach the caller.
RunTx = Callable[[int, StateView], Receipt]

#: Receipts in transaction order, the block's write set, and how it ran.
Outcome = tuple[list[Receipt], list[BatchOp], ExecutionStats]

#: What one incarnation read: point reads and prefix scans, with the versions seen.
ReadSet = tuple[list[tuple[bytes, Version]], list[tuple[bytes, list[tuple[bytes, Version]]]]]

#: After this many executions, blocks of short transactions switch to sequential.
PROBE = 64


class Declared(Protocol):
    """What :func:`owned_lanes` needs of a transaction (a :class:`Transaction` has it)."""

    @property
    def sender(self) -> bytes: ...

    @property
    def owned(self) -> bool: ...


def owned_lanes(transactions: Iterable[Declared]) -> list[list[int]]:
    """The owned-object lanes: each sender's owned-only transactions up to its first shared one.

    Only a sender writes its objects, so its owned-only transactions that no
    shared transaction of its own precedes read nothing another transaction of
    the block writes before them: they run in order, and their results are final.
    """
    lanes: dict[bytes, list[int]] = {}
    shared_seen: set[bytes] = set()
    for index, tx in enumerate(transactions):
        if tx.owned and tx.sender not in shared_seen:
            lanes.setdefault(tx.sender, []).append(index)
        else:
            shared_seen.add(tx.sender)
    return list(lanes.values())


class ParallelRun:
    """Executes ``count`` transactions with ``run_tx`` on ``pool``; see :meth:`run`."""

    def __init__(
        self,
        run_tx: RunTx,
        count: int,
        memory: MVMemory,
        pool: Executor,
        *,
        threads: int,
        lanes: Iterable[list[int]] = (),
        max_reexecution_factor: int = 3,
        min_parallel_gas: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.run_tx = run_tx
        self.count = count
        self.memory = memory
        self.pool = pool
        self.threads = threads
        #: Owned-object lanes: transaction indices each run in order on one thread.
        self.lanes = list(lanes)
        self.min_parallel_gas = min_parallel_gas
        self.progress = progress
        self.stats = ExecutionStats(mode="parallel", threads=threads)
        self.receipts: list[Receipt | None] = [None] * count
        self.read_sets: list[ReadSet] = [([], [])] * count
        self.budget = max_reexecution_factor * count + 16
        self.probe = min(count, PROBE)
        #: Set by run() once the lanes are done; its lock guards everything below.
        self.scheduler: Scheduler
        self.lock: threading.Condition
        self.executions = 0
        self.validations = 0
        self.aborts = 0
        self.gas = 0
        self.failure: list[BaseException] = []
        self.reason: list[str] = []
        self.gave_up = threading.Event()

    def run(self) -> Outcome | str:
        """Receipts, write set and stats; or why the block should run sequentially."""
        count = self.count
        stats = self.stats
        ran = [self.pool.submit(self.run_lane, lane) for lane in self.lanes]
        finished = {index for future in ran for index in future.result()}
        stats.owned_fast_path = len(finished)
        stats.executions += len(finished)

        self.scheduler = Scheduler(count, finished)
        self.lock = self.scheduler.lock
        futures = [self.pool.submit(self.worker) for _ in range(self.threads)]
        if self.progress is not None:
            while wait(futures, timeout=0.05).not_done:
                with self.lock:
                    done = min(self.scheduler.validation_idx, self.scheduler.execution_idx, count)
                self.progress(done, count)
        for future in futures:
            future.result()
        if self.failure:
            raise self.failure[0]
        stats.executions += self.executions
        stats.validations = self.validations
        stats.aborts = self.aborts
        if self.gave_up.is_set():
            return self.reason[0] if self.reason else "parallel execution stopped"
        if self.progress is not None:
            self.progress(count, count)
        final = [r for r in self.receipts if r is not None]
        assert len(final) == count
        return final, self.memory.final_writes(), stats

    def run_lane(self, indices: list[int]) -> list[int]:
        """Run an owned-object lane; return the indices it ran (it stops at its first scan)."""
        view = OverlayView(self.memory.base)
        for position, index in enumerate(indices):
            receipt = self.run_tx(index, view)
            if receipt.scan_set:
                # Which keys a scan meets depends on shared keys that other senders
                # may add earlier in the block: from here on the lane needs Block-STM.
                return indices[:position]
            if receipt.write_set:
                view.update(receipt.write_set)
                self.memory.record(index, 0, receipt.write_set)
            self.receipts[index] = receipt
        return indices

    def give_up(self, why: str) -> None:
        """Stop every worker; the block runs sequentially. Called with the lock held."""
        self.reason.append(why)
        self.gave_up.set()
        self.scheduler.done = True
        self.lock.notify_all()

    def execute(self, index: int, incarnation: int) -> Task | None:
        """Run one incarnation; return the next task for this worker, if any."""
        memory = self.memory
        while True:
            view = TxView(memory, index)
            try:
                receipt = self.run_tx(index, view)
            except Dependency as dep:
                with self.lock:
                    if self.scheduler.add_dependency(index, dep.blocking):
                        return None
                continue
            wrote_new = memory.record(index, incarnation, receipt.write_set)
            self.read_sets[index] = (view.reads, view.scans)
            self.receipts[index] = receipt
            with self.lock:
                self.executions += 1
                self.gas += receipt.gas_used
                executed = self.executions
                if executed > self.budget:
                    self.give_up("too many re-executions")
                    return None
                if executed == self.probe and self.gas < self.min_parallel_gas * executed:
                    self.give_up(
                        f"transactions average {self.gas // executed:,} gas: "
                        "too short for threads to pay off"
                    )
                    return None
                return self.scheduler.finish_execution(index, incarnation, wrote_new)

    def validate(self, index: int, incarnation: int) -> Task | None:
        """Validate one incarnation's reads, aborting it when they went stale."""
        point_reads, scans = self.read_sets[index]
        valid = self.memory.validate(index, point_reads, scans)
        with self.lock:
            self.validations += 1
            aborted = not valid and self.scheduler.try_abort(index, incarnation)
            if aborted:
                self.aborts += 1
        if aborted:
            self.memory.mark_estimates(index)
        with self.lock:
            return self.scheduler.finish_validation(index, aborted)

    def worker(self) -> None:
        """Take tasks until the scheduler is done; an exception stops every worker."""
        scheduler = self.scheduler
        lock = self.lock
        task = None
        try:
            while not self.gave_up.is_set():
                if task is None:
                    with lock:
                        if scheduler.done:
                            return
                        task = scheduler.next_task()
                        if task is None:
                            lock.wait(0.001)
                            continue
                kind, index, incarnation = task
                if kind == "execute":
                    task = self.execute(index, incarnation)
                else:
                    task = self.validate(index, incarnation)
        except BaseException as exc:  # a store error or a bug: stop everyone
            with lock:
                self.failure.append(exc)
                self.gave_up.set()
                scheduler.done = True
                lock.notify_all()
