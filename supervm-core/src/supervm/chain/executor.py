"""Executing a block: sequentially, or in parallel in the Block-STM manner.

Both modes produce the same receipts and write set for the same block
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

import struct
import time
from concurrent.futures import ThreadPoolExecutor

from supervm.chain.accounts import nonce_key
from supervm.chain.block import Block, Execution, ExecutionStats, Transaction, receipts_root
from supervm.chain.mvmemory import MVMemory
from supervm.chain.parallel import Outcome, ParallelRun, Progress, RunTx, owned_lanes
from supervm.state import BatchOp, OverlayView, StateView
from supervm.vm.runtime import Receipt, Runtime, Status

__all__ = ["BlockExecutor", "Progress", "run_sequential"]


def run_sequential(
    run_tx: RunTx, count: int, base: StateView, stats: ExecutionStats, progress: Progress | None
) -> tuple[list[Receipt], list[BatchOp]]:
    """Run transactions ``0..count-1`` in order, each over the writes of those before it."""
    view = OverlayView(base)
    receipts = []
    for done in range(1, count + 1):
        receipt = run_tx(done - 1, view)
        stats.executions += 1
        if receipt.write_set:
            view.update(receipt.write_set)
        receipts.append(receipt)
        if progress is not None and (done % 256 == 0 or done == count):
            progress(done, count)
    return receipts, sorted(view.overlay.items())


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
        if tx.nonce is not None:
            return self._run_signed(tx, block, view)
        return self.runtime.run(
            tx.contract, tx.method, tx.input, sender=tx.sender, gas_limit=tx.gas_limit,
            block_height=block.height, block_timestamp=block.timestamp, view=view,
            owned_only=tx.owned,
        )  # fmt: skip

    def _run_signed(self, tx: Transaction, block: Block, view: StateView) -> Receipt:
        """Check the sender's nonce, run the call, advance the nonce (even if the call failed)."""
        key = nonce_key(tx.sender)
        raw = view.get(key)
        expected = 0 if raw is None else struct.unpack(">Q", raw)[0]
        if tx.nonce != expected:
            return Receipt(
                Status.REJECTED,
                error=f"nonce {tx.nonce} is not the sender's next nonce, {expected}",
                read_set=(key,),
            )
        receipt = self.runtime.run(
            tx.contract, tx.method, tx.input, sender=tx.sender, gas_limit=tx.gas_limit,
            block_height=block.height, block_timestamp=block.timestamp, view=view,
            owned_only=tx.owned,
        )  # fmt: skip
        bump = (key, struct.pack(">Q", expected + 1))
        return receipt._replace(
            read_set=tuple(sorted({*receipt.read_set, key})),
            write_set=tuple(sorted((*receipt.write_set, bump))),
        )

    def execute(
        self,
        block: Block,
        base: StateView,
        *,
        mode: str = "parallel",
        progress: Progress | None = None,
    ) -> Execution:
        """Execute ``block`` on ``base`` (nothing is written): receipts and write set."""
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
        return Execution(
            receipts=tuple(receipts),
            write_set=tuple(writes),
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
        txs = block.transactions
        return run_sequential(
            lambda index, view: self._run(txs[index], block, view),
            len(txs), base, stats, progress,
        )  # fmt: skip

    # -- parallel -----------------------------------------------------------------------

    def _parallel(self, block: Block, base: StateView, progress: Progress | None) -> Outcome | str:
        txs = block.transactions
        run = ParallelRun(
            lambda index, view: self._run(txs[index], block, view),
            len(txs),
            MVMemory(base),
            self._workers(),
            threads=self.threads,
            lanes=owned_lanes(txs),
            max_reexecution_factor=self.max_reexecution_factor,
            min_parallel_gas=self.min_parallel_gas,
            progress=progress,
        )
        return run.run()
