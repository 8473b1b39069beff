"""A node: admits signed transactions into its mempool and produces blocks from them.

``Node(storage, chain_id=7)`` runs a :class:`~supervm.chain.Chain` on ``storage``;
:meth:`Node.start` starts the producer, which cuts a block every ``block_time_ms`` or as
soon as ``max_block_txs`` transactions are ready, and runs it through the
:class:`~supervm_node.pipeline.BlockPipeline`. :meth:`Node.submit` checks a transaction
(chain id, size, signature, duplicate, nonce, contract) and holds it, or raises
:class:`~supervm_node.errors.TransactionRefused`; nothing refused reaches a block.

A transaction is acknowledged as included once its block is committed (:meth:`lookup`
says ``included``): the block was written in one atomic batch, so it survives a crash.
Pending transactions live in memory only; after a restart a client sends them again (one
already included is refused as a duplicate).

``Node(storage, chain_id=7, follow=URL)`` is a read-only follower instead: no producer; a
:class:`~supervm_node.follower.Follower` keeps the chain in step with the node at ``URL``
(``sync``: ``reexecute`` or ``apply``; ``fast_sync``: an empty store starts from the peer's
snapshot), every read works the same and :meth:`submit` refuses with ``read_only``.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from supervm.chain import BlockHeader, BlockResult, Chain, Head, Transaction
from supervm.chain.accounts import read_nonce
from supervm.errors import SuperVMError
from supervm.layout import CHAIN_ID_KEY, CONTRACT_PREFIX
from supervm.storage import Storage
from supervm.vm.runtime import (
    DEPLOY_ADDRESS,
    DEPLOY_METHOD,
    Receipt,
    contract_address,
    parse_deploy_input,
)
from supervm_node.errors import Refusal, TransactionRefused
from supervm_node.follower import Follower
from supervm_node.follower import fast_sync as fast_sync_from
from supervm_node.mempool import Mempool, MempoolLimits
from supervm_node.metrics import InstrumentedStorage, NodeMetrics, StorageMetrics
from supervm_node.pipeline import BlockPipeline, Committed
from supervm_node.signing import SignatureChecker, verify_transaction
from supervm_node.snapshots import SnapshotCache

__all__ = ["MAX_TRANSACTION_SIZE", "Node", "NodeConfigError", "TxInfo"]

log = logging.getLogger("supervm_node.node")

#: The largest encoded transaction the node takes (a deploy carries its code).
MAX_TRANSACTION_SIZE = 128 * 1024


#: How many committed blocks :meth:`Node.lookup` keeps decoded.
_DECODED_BLOCKS = 64


class NodeConfigError(SuperVMError):
    """The node cannot run with these settings on this store."""


@dataclass(frozen=True)
class TxInfo:
    """What the node knows of a transaction: pending, or included with its receipt."""

    transaction: Transaction
    status: str
    height: int | None = None
    index: int | None = None
    block_hash: bytes | None = None
    receipt: Receipt | None = None


class Node:
    """A chain, a mempool and a block producer over one store (or, with ``follow``, a
    follower of another node).

    ``threads``: the pipeline's threads (1: every stage in turn) and the executor's.
    ``backend``: the label of the store in the storage metrics (its URL scheme).
    ``prune``: prune the history beyond ``keep_blocks`` in the background.
    ``data_dir``: where snapshots are kept (served, or downloaded by ``fast_sync``;
    default: a temporary directory).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        chain_id: int,
        block_time_ms: int = 200,
        max_block_txs: int = 2000,
        threads: int = 2,
        mempool: MempoolLimits | None = None,
        keep_blocks: int | None = None,
        registry: CollectorRegistry | None = None,
        backend: str = "store",
        storage_metrics: bool = True,
        prune: bool = False,
        follow: str | None = None,
        sync: str = "reexecute",
        fast_sync: bool = False,
        sync_batch: int = 64,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if type(chain_id) is not int or not 0 <= chain_id < 1 << 64:
            raise ValueError(f"chain_id must be an int in [0, 2**64), not {chain_id!r}")
        if type(block_time_ms) is not int or block_time_ms < 1:
            raise ValueError(f"block_time_ms must be an int >= 1, not {block_time_ms!r}")
        if type(max_block_txs) is not int or max_block_txs < 1:
            raise ValueError(f"max_block_txs must be an int >= 1, not {max_block_txs!r}")
        self.registry = CollectorRegistry() if registry is None else registry
        self.metrics = NodeMetrics(self.registry)
        if storage_metrics:
            storage = InstrumentedStorage(storage, StorageMetrics(self.registry), backend)
        self.storage = storage
        self.chain_id = chain_id
        self.data_dir = None if data_dir is None else Path(data_dir)
        if follow is not None and fast_sync:
            folder = self.data_dir if self.data_dir is not None else Path(tempfile.gettempdir())
            fast_sync_from(storage, follow, folder / "downloads")
        if prune and keep_blocks is None:
            raise NodeConfigError("pruning needs keep_blocks: how many blocks to keep")
        self._check_chain_id(storage, chain_id)
        self.chain = Chain(storage, threads=threads, keep_blocks=keep_blocks)
        self.prune = prune
        self.follower: Follower | None = None
        if follow is not None:
            self.follower = Follower(
                self.chain, follow, chain_id=chain_id, mode=sync, batch=sync_batch,
                threads=threads, registry=self.registry, on_commit=self._followed,
            )  # fmt: skip
        self._snapshots: SnapshotCache | None = None
        self.threads = threads
        self.block_time = block_time_ms / 1000
        self.max_block_txs = max_block_txs
        self.mempool = Mempool(self.chain_nonce, mempool)
        #: Checks the signatures of a batch of submissions on several threads.
        self._checker = SignatureChecker(threads)
        self._verified: set[bytes] = set()
        self._head_changed = threading.Condition()
        self._pipeline: BlockPipeline | None = None
        self._producer: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_block_at: float | None = None
        self._deploying: dict[bytes, int] = {}
        self._blocks: dict[
            int, tuple[BlockHeader, tuple[Transaction, ...], tuple[Receipt, ...] | None]
        ] = {}
        self._lock = threading.Lock()
        self.metrics.head.set(self.chain.head().height)

    @staticmethod
    def _check_chain_id(storage: Storage, chain_id: int) -> None:
        raw = storage.get(CHAIN_ID_KEY)
        if raw is None:
            storage.set(CHAIN_ID_KEY, struct.pack(">Q", chain_id))
            return
        (stored,) = struct.unpack(">Q", raw)
        if stored != chain_id:
            raise NodeConfigError(
                f"this store holds chain {stored}; the node was started with chain id {chain_id}"
            )

    # -- running ------------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether the node follows another instead of taking transactions."""
        return self.follower is not None

    def start(self) -> None:
        """Start producing blocks (a follower: start following)."""
        if self.prune:
            self.chain.start_pruning()
        if self.follower is not None:
            self.follower.start()
            return
        if self._producer is not None:
            return
        self._stop.clear()
        self._pipeline = BlockPipeline(
            self.chain,
            threads=self.threads,
            on_commit=self._committed,
            on_refused=self._refused,
            verified=lambda tx: tx.hash in self._verified,
        )
        self._producer = threading.Thread(target=self._produce, name="supervm-producer")
        self._producer.daemon = True
        self._producer.start()
        log.info(
            "producing blocks",
            extra={"chain_id": self.chain_id, "height": self.chain.head().height},
        )

    def stop(self) -> None:
        """Stop cutting blocks, commit those in the pipeline, stop its threads (a
        follower: stop following after the block being committed)."""
        if self._snapshots is not None:
            self._snapshots.close()
        if self.follower is not None:
            self.follower.stop()
            self.chain.close()
            log.info("stopped", extra={"height": self.chain.head().height})
            return
        if self._producer is None:
            self.chain.stop_pruning()
            return
        self._stop.set()
        self._wake.set()
        self._producer.join()
        self._producer = None
        assert self._pipeline is not None
        self._pipeline.close()
        self._pipeline = None
        self.chain.close()
        log.info("stopped", extra={"height": self.chain.head().height})

    @property
    def producing(self) -> bool:
        """Whether the producer runs and its pipeline has not failed."""
        pipeline = self._pipeline
        return self._producer is not None and pipeline is not None and pipeline.error is None

    def _produce(self) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        while not self._stop.is_set():
            deadline = time.monotonic() + self.block_time
            while not self._stop.is_set() and self.mempool.pending < self.max_block_txs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
                self._wake.clear()
            if pipeline.error is not None:
                return
            txs = self.mempool.take(self.max_block_txs)
            if txs:
                try:
                    pipeline.submit(txs)
                except RuntimeError:
                    self._drop(txs)
                    return
            self.metrics.mempool_count.set(self.mempool.count)
            self.metrics.mempool_bytes.set(self.mempool.bytes)

    def _committed(self, done: Committed) -> None:
        result = done.result
        self.mempool.committed(result.transactions)
        with self._lock:
            for tx in result.transactions:
                self._verified.discard(tx.hash)
                if tx.contract == DEPLOY_ADDRESS:
                    self._forget_deploy(tx)
        now = time.monotonic()
        metrics = self.metrics
        if self._last_block_at is not None:
            metrics.block_interval.observe(now - self._last_block_at)
        self._last_block_at = now
        metrics.observe_block(result, done.seconds)
        metrics.mempool_count.set(self.mempool.count)
        metrics.mempool_bytes.set(self.mempool.bytes)
        with self._head_changed:
            self._head_changed.notify_all()
        log.debug(
            "block committed",
            extra={"height": result.height, "transactions": len(result.transactions)},
        )

    def _followed(self, result: BlockResult, seconds: float) -> None:
        """A block the follower committed: the metrics, and wake those who wait for it."""
        now = time.monotonic()
        if self._last_block_at is not None:
            self.metrics.block_interval.observe(now - self._last_block_at)
        self._last_block_at = now
        self.metrics.observe_block(result, {"follow": seconds})
        with self._head_changed:
            self._head_changed.notify_all()

    def _refused(self, txs: list[Transaction]) -> None:
        log.warning("transactions with bad signatures left out", extra={"count": len(txs)})
        self._drop(txs)

    def _drop(self, txs: list[Transaction]) -> None:
        """Taken transactions that no block will hold: forget them and what follows them."""
        dropped = self.mempool.returned(txs)
        with self._lock:
            for tx in dropped:
                self._verified.discard(tx.hash)
                if tx.contract == DEPLOY_ADDRESS:
                    self._forget_deploy(tx)

    # -- admitting --------------------------------------------------------------------------

    def submit(self, tx: Transaction, *, _signature_ok: bool | None = None) -> bytes:
        """Check ``tx`` and hold it for a block; its hash. Raises :class:`TransactionRefused`."""
        if not isinstance(tx, Transaction):
            raise TypeError(f"a transaction is a Transaction, not {type(tx).__name__}")
        try:
            if self.follower is not None:
                raise TransactionRefused(
                    Refusal.READ_ONLY,
                    f"this node follows {self.follower.client.url} and takes no transactions: "
                    "send them to the producer",
                )
            self._admit(tx, _signature_ok)
        except TransactionRefused as exc:
            self.metrics.refused.labels(exc.reason.value).inc()
            raise
        self.metrics.admitted.inc()
        if self.mempool.pending >= self.max_block_txs:
            self._wake.set()
        return tx.hash

    def submit_many(self, txs: list[Transaction]) -> list[bytes | TransactionRefused]:
        """:meth:`submit` each of ``txs`` in order, their signatures checked in parallel
        first; each one's hash, or why it was refused."""
        single = len(txs) < 2 or self.read_only
        verdicts = [None] * len(txs) if single else self._checker.check(txs)
        answers: list[bytes | TransactionRefused] = []
        for tx, verdict in zip(txs, verdicts, strict=True):
            try:
                answers.append(self.submit(tx, _signature_ok=verdict))
            except TransactionRefused as exc:
                answers.append(exc)
        return answers

    def _admit(self, tx: Transaction, signature_ok: bool | None) -> None:
        size = len(tx.encode())
        if size > MAX_TRANSACTION_SIZE:
            raise TransactionRefused(
                Refusal.OVERSIZED,
                f"the transaction is {size} bytes; the limit is {MAX_TRANSACTION_SIZE}",
                limit=MAX_TRANSACTION_SIZE,
            )
        if not tx.signed:
            raise TransactionRefused(Refusal.BAD_SIGNATURE, "the transaction is not signed")
        if tx.chain_id != self.chain_id:
            raise TransactionRefused(
                Refusal.WRONG_CHAIN,
                f"the transaction is for chain {tx.chain_id}; this node runs chain {self.chain_id}",
                expected=self.chain_id,
            )
        ok = verify_transaction(tx) if signature_ok is None else signature_ok
        if not ok:
            raise TransactionRefused(
                Refusal.BAD_SIGNATURE,
                f"the signature does not verify under public key {tx.public_key.hex()}",
            )
        if self.chain.find_transaction(tx.hash) is not None:
            raise TransactionRefused(
                Refusal.DUPLICATE, f"transaction {tx.hash.hex()} is already included"
            )
        deployed = None
        if tx.contract == DEPLOY_ADDRESS:
            deployed = self._deploy_target(tx)
        elif not self._contract_exists(tx.contract):
            raise TransactionRefused(
                Refusal.NO_CONTRACT, f"there is no contract at address {tx.contract.hex()}"
            )
        with self._lock:
            self.mempool.add(tx)
            self._verified.add(tx.hash)
            if deployed is not None:
                self._deploying[deployed] = self._deploying.get(deployed, 0) + 1

    def _deploy_target(self, tx: Transaction) -> bytes | None:
        if tx.method != DEPLOY_METHOD:
            return None  # refused at execution, with a receipt
        try:
            code, salt = parse_deploy_input(tx.input)
        except ValueError:
            return None
        return contract_address(code, salt)

    def _forget_deploy(self, tx: Transaction) -> None:
        address = self._deploy_target(tx)
        if address is not None and address in self._deploying:
            left = self._deploying[address] - 1
            if left:
                self._deploying[address] = left
            else:
                del self._deploying[address]

    def _contract_exists(self, address: bytes) -> bool:
        if self.storage.get(CONTRACT_PREFIX + address) is not None:
            return True
        with self._lock:
            return address in self._deploying

    # -- reading ------------------------------------------------------------------------------

    def chain_nonce(self, address: bytes) -> int:
        """The nonce the committed chain expects next from ``address``."""
        return read_nonce(self.chain.latest(), address)

    def lookup(self, tx_hash: bytes) -> TxInfo | None:
        """The transaction ``tx_hash``: included (with its receipt), pending, or unknown."""
        found = self.chain.find_transaction(tx_hash)
        if found is not None:
            height, index = found
            block = self._committed_block(height)
            if block is not None:
                header, txs, receipts = block
                receipt = receipts[index] if receipts is not None else None
                return TxInfo(txs[index], "included", height, index, header.hash, receipt)
        tx = self.mempool.get(tx_hash)
        if tx is not None:
            return TxInfo(tx, "pending")
        return None

    def _committed_block(
        self, height: int
    ) -> tuple[BlockHeader, tuple[Transaction, ...], tuple[Receipt, ...] | None] | None:
        """A committed block's header, transactions and receipts, decoded once for many
        lookups (a node never unwinds its blocks while it runs)."""
        cached = self._blocks.get(height)
        if cached is not None:
            return cached
        header = self.chain.header(height)
        block = self.chain.block(height)
        if header is None or block is None:
            return None
        entry = (header, block.transactions, self.chain.receipts(height))
        with self._lock:
            if len(self._blocks) >= _DECODED_BLOCKS:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[height] = entry
        return entry

    def wait_for_block(self, after: int, timeout: float) -> Head:
        """The head, as soon as its height is above ``after`` or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._head_changed:
            while True:
                head = self.chain.head()
                left = deadline - time.monotonic()
                if head.height > after or left <= 0:
                    return head
                self._head_changed.wait(min(left, 0.5))

    def recent_blocks(self, count: int) -> list[BlockHeader]:
        """The headers of the last ``count`` blocks, newest first."""
        height = self.chain.head().height
        headers = []
        for h in range(height, max(0, height - count), -1):
            header = self.chain.header(h)
            if header is not None:
                headers.append(header)
        return headers

    def sync_status(self) -> dict[str, object]:
        """What ``svm_syncStatus`` answers: a follower's state against its peer, or a
        producer's height (lag 0)."""
        if self.follower is not None:
            return self.follower.status().to_json()
        height = self.chain.head().height
        return {
            "role": "producer", "state": "producing" if self.producing else "stopped",
            "height": height, "peer_height": None, "lag": 0, "rate": 0.0, "peer": None,
            "mode": None, "error": None,
        }  # fmt: skip

    def snapshots(self) -> SnapshotCache:
        """The snapshots this node serves to followers (made on first use)."""
        with self._lock:
            if self._snapshots is None:
                folder = None if self.data_dir is None else self.data_dir / "snapshots"
                self._snapshots = SnapshotCache(self.chain, self.storage, folder)
            return self._snapshots

    def health(self) -> dict[str, object]:
        """Whether the node is healthy: it produces blocks and its pipeline has not failed
        (a follower: it follows and has refused no block)."""
        head = self.chain.head()
        since = None if self._last_block_at is None else time.monotonic() - self._last_block_at
        if self.follower is not None:
            status = self.follower.status()
            return {
                "ok": self.follower.running and status.state != "refused",
                "height": head.height,
                "producing": False,
                "following": status.state,
                "lag": status.lag,
                "seconds_since_block": since,
                "mempool": 0,
                "error": status.error,
            }
        pipeline = self._pipeline
        error = None if pipeline is None or pipeline.error is None else str(pipeline.error)
        return {
            "ok": self.producing,
            "height": head.height,
            "producing": self.producing,
            "seconds_since_block": since,
            "mempool": self.mempool.count,
            "error": error,
        }
