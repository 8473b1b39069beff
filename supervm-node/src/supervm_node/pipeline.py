"""The block pipeline: signature check -> execution and state root -> atomic commit.

With ``threads >= 2`` each stage runs on a thread of its own and consecutive blocks
overlap, as in Aptos: while block k commits, block k+1 executes on the state after
block k (its write set and tree nodes laid over the store, :meth:`Chain.execute`'s
``parent``), and the signatures of block k+2 are checked in ``threads - 1`` worker
processes (checking threads would wait for the GIL, which execution holds, at every
signature). At most one executed block waits for its commit, so
the state an execution reads is the store plus at most one block. With ``threads=1``
every stage runs in turn on one thread, and signatures are checked one by one.

A block commits in one atomic batch (:meth:`Chain.commit`); a crash leaves the store at
the last committed block and nothing of a later one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from supervm.chain import Block, BlockResult, Chain, Transaction
from supervm_node.signing import SignatureChecker

__all__ = ["BlockPipeline", "Committed", "PipelineStats"]

log = logging.getLogger("supervm_node.pipeline")

_STOP = object()


@dataclass(frozen=True)
class Committed:
    """A block the pipeline committed, with the time each stage took (seconds)."""

    result: BlockResult
    refused: tuple[Transaction, ...]
    seconds: dict[str, float]


@dataclass
class PipelineStats:
    """Totals since the pipeline started."""

    blocks: int = 0
    transactions: int = 0
    refused: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"signatures": 0.0, "execute": 0.0, "commit": 0.0}
    )


class BlockPipeline:
    """Runs lists of transactions through the stages into committed blocks, in order.

    ``submit(txs)`` queues one block's transactions (blocking while ``depth`` blocks
    wait); ``on_commit(committed)`` is called on the commit thread after each commit;
    ``on_refused(txs)`` gets the transactions whose signatures did not verify (they
    are left out of the block). ``verified(tx)`` may say a transaction's signature was
    already checked (by the mempool), so it is not checked again. ``timestamp()``
    gives each block's timestamp (never below its parent's).
    """

    def __init__(
        self,
        chain: Chain,
        *,
        threads: int = 2,
        mode: str = "parallel",
        on_commit: Callable[[Committed], None] | None = None,
        on_refused: Callable[[list[Transaction]], None] | None = None,
        verified: Callable[[Transaction], bool] | None = None,
        timestamp: Callable[[], int] | None = None,
        depth: int = 2,
    ) -> None:
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be an int >= 1, not {threads!r}")
        self.chain = chain
        self.threads = threads
        self.mode = mode if threads > 1 else "sequential"
        self.stats = PipelineStats()
        self._on_commit = on_commit
        self._on_refused = on_refused
        self._verified = verified
        self._timestamp = timestamp or (lambda: int(time.time()))
        # Pipelined, execution holds one core and the GIL: the signatures go to worker
        # processes on the other cores (threads would wait for the GIL at every check).
        self._checker = SignatureChecker(max(1, threads - 1), processes=threads > 1)
        if threads > 1:
            self._checker.start()
        self._error: BaseException | None = None
        self._inbox: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._in_flight = 0
        head = chain.head()
        header = chain.header(head.height) if head.height else None
        self._last_timestamp = header.timestamp if header is not None else 0
        stages: tuple[tuple[str, Callable[[], None]], ...]
        if threads > 1:
            self._executable: queue.Queue[object] = queue.Queue(maxsize=1)
            self._committable: queue.Queue[object] = queue.Queue(maxsize=1)
            #: Executions may run at most two blocks ahead of the commits: block k+1
            #: executes while block k commits, block k+2 waits for block k's commit.
            self._parent_done = threading.Semaphore(2)
            stages = (
                ("signatures", self._signature_stage),
                ("execute", self._execute_stage),
                ("commit", self._commit_stage),
            )
        else:
            stages = (("block", self._serial_stage),)
        for name, target in stages:
            thread = threading.Thread(target=self._guard(target), name=f"supervm-{name}")
            thread.daemon = True
            self._threads.append(thread)
            thread.start()

    # -- the caller's side ---------------------------------------------------------------

    @property
    def error(self) -> BaseException | None:
        """What stopped the pipeline, if something did."""
        return self._error

    def submit(self, txs: list[Transaction]) -> None:
        """Queue ``txs`` as the next block (nothing happens for an empty list)."""
        if self._error is not None:
            raise RuntimeError("the block pipeline stopped") from self._error
        if not txs:
            return
        with self._idle:
            self._in_flight += 1
        self._inbox.put(list(txs))

    def in_flight(self) -> int:
        """Blocks submitted and not committed (or dropped) yet."""
        return self._in_flight

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted block is committed; False at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._in_flight and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return self._error is None

    def close(self) -> None:
        """Commit what was submitted, then stop the stage threads."""
        self._inbox.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._checker.close()

    # -- stages ----------------------------------------------------------------------------

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a store error or a bug: stop, say why
                log.exception("the block pipeline stopped: %s", exc)
                self._error = exc
                with self._idle:
                    self._idle.notify_all()
                # Unblock the other stages.
                for box in ("_inbox", "_executable", "_committable"):
                    q = getattr(self, box, None)
                    if q is not None:
                        with contextlib.suppress(queue.Full):
                            q.put_nowait(_STOP)

        return run

    def _check(self, txs: list[Transaction]) -> tuple[list[Transaction], float]:
        start = time.perf_counter()
        verified = self._verified
        unknown = [tx for tx in txs if verified is None or not verified(tx)]
        bad: set[bytes] = set()
        if unknown:
            results = self._checker.check(unknown)
            bad = {tx.hash for tx, ok in zip(unknown, results, strict=True) if not ok}
        if bad:
            refused = [tx for tx in txs if tx.hash in bad]
            txs = [tx for tx in txs if tx.hash not in bad]
            self.stats.refused += len(refused)
            if self._on_refused is not None:
                self._on_refused(refused)
        return txs, time.perf_counter() - start

    def _block(self, height: int, txs: list[Transaction]) -> Block:
        timestamp = max(self._last_timestamp, self._timestamp())
        self._last_timestamp = timestamp
        return Block(height, timestamp, tuple(txs))

    def _finish(self, result: BlockResult, seconds: dict[str, float]) -> None:
        start = time.perf_counter()
        self.chain.commit(result)
        seconds["commit"] = time.perf_counter() - start
        stats = self.stats
        stats.blocks += 1
        stats.transactions += len(result.transactions)
        for stage, spent in seconds.items():
            stats.seconds[stage] = stats.seconds.get(stage, 0.0) + spent
        if self._on_commit is not None:
            self._on_commit(Committed(result, (), seconds))
        self._done()

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _serial_stage(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            assert isinstance(item, list)
            txs, checking = self._check(item)
            if not txs:
                self._done()
                continue
            start = time.perf_counter()
            block = self._block(self.chain.head().height + 1, txs)
            result = self.chain.execute(block, mode=self.mode)
            seconds = {"signatures": checking, "execute": time.perf_counter() - start}
            self._finish(result, seconds)

    def _signature_stage(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                self._executable.put(_STOP)
                return
            assert isinstance(item, list)
            txs, checking = self._check(item)
            if not txs:
                self._done()
                continue
            self._executable.put((txs, checking))

    def _execute_stage(self) -> None:
        parent: BlockResult | None = None
        while True:
            item = self._executable.get()
            if item is _STOP:
                self._committable.put(_STOP)
                return
            assert isinstance(item, tuple)
            txs, checking = item
            # Wait until the block before ``parent`` is committed: the state read is the
            # store plus at most ``parent``.
            self._parent_done.acquire()
            if self._error is not None:
                return
            start = time.perf_counter()
            height = parent.height + 1 if parent is not None else self.chain.head().height + 1
            block = self._block(height, txs)
            result = self.chain.execute(block, mode=self.mode, parent=parent)
            seconds = {"signatures": checking, "execute": time.perf_counter() - start}
            self._committable.put((result, seconds))
            parent = result

    def _commit_stage(self) -> None:
        while True:
            item = self._committable.get()
            if item is _STOP:
                return
            assert isinstance(item, tuple)
            result, seconds = item
            self._finish(result, seconds)
            self._parent_done.release()
