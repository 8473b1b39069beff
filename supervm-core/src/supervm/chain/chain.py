"""A chain of blocks over one store: execute, commit atomically, resume after a crash."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from supervm.chain.block import (
    Block,
    BlockResult,
    ExecutionStats,
    Transaction,
    decode_receipts,
    decode_transactions,
    encode_receipts,
    encode_transactions,
    transactions_root,
)
from supervm.chain.executor import BlockExecutor, Progress
from supervm.chain.header import ZERO_HASH, BlockFormatError, BlockHeader
from supervm.chain.history import HeightView, History, PrunedHeightError, PruneReport
from supervm.chain.incomplete import IncompleteStoreError, refuse_incomplete
from supervm.chain.ownership import OwnershipRegistry
from supervm.chain.proofs import StateProof
from supervm.errors import SuperVMError
from supervm.layout import (
    CONTRACT_PREFIX,
    HEIGHT_KEY,
    TREE_NODE_PREFIX,
    TREE_ROOT_PREFIX,
    TREE_STALE_PREFIX,
    block_key,
    hash_key,
    header_key,
    in_state_tree,
    receipts_key,
    state_key,
    tx_key,
)
from supervm.state import BatchOp, OverlayView, StateView, WriteSet
from supervm.storage import Storage
from supervm.tree import PLACEHOLDER, JellyfishTree, Proof
from supervm.vm.engine import code_hash
from supervm.vm.runtime import (
    DEPLOY_ADDRESS,
    DEPLOY_METHOD,
    Receipt,
    Runtime,
    contract_address,
    deploy_input,
)

__all__ = [
    "DEPLOYER",
    "GENESIS",
    "Chain",
    "ChainError",
    "Head",
    "IncompleteStoreError",
    "PruneReport",
    "PrunedHeightError",
    "RevertReport",
]

#: The sender of the deploy transactions :meth:`Chain.deploy` makes.
DEPLOYER = b"\xde" * 20


class ChainError(SuperVMError):
    """A block does not follow the chain's head, or the chain's records are corrupt."""


class Head(NamedTuple):
    """The last committed block: its height, hash and state root."""

    height: int
    block_hash: bytes
    state_root: bytes


#: The head of a chain with no block: height 0, no hash, the empty state's root.
GENESIS = Head(0, ZERO_HASH, PLACEHOLDER)


@dataclass(frozen=True)
class RevertReport:
    """What :meth:`Chain.revert_to` unwound."""

    from_height: int
    to_height: int
    keys_restored: int
    operations: int


class Chain:
    """Blocks executed by a :class:`BlockExecutor` and committed to ``storage``.

    Committing a block writes, in one atomic batch, its write set, the state
    tree's new nodes, its header, its transactions and the new head height, so
    after a crash the store holds exactly the blocks whose commit returned, and
    :meth:`head` resumes from the last of them. The tree's version is the
    block height.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        threads: int = 2,
        runtime: Runtime | None = None,
        max_reexecution_factor: int = 3,
        keep_blocks: int | None = None,
    ) -> None:
        """A chain on ``storage``.

        ``keep_blocks``: keep the history of only the last N blocks (recorded
        in the store, so it holds for every later opening; :meth:`prune` and
        :meth:`start_pruning` delete what is older). Without it the store's
        recorded setting holds (none: an archive, every height kept).
        """
        refuse_incomplete(storage)
        self.storage = storage
        if runtime is None:
            self.ownership = OwnershipRegistry(storage)
            runtime = Runtime(storage, release_gil=threads > 1, ownership=self.ownership)
        elif isinstance(runtime.ownership, OwnershipRegistry) and runtime.storage is storage:
            self.ownership = runtime.ownership
        else:
            raise ValueError(
                "a Chain's runtime must run on the chain's store with an OwnershipRegistry "
                "over it: Runtime(storage, ownership=OwnershipRegistry(storage))"
            )
        self.runtime = runtime
        self.executor = BlockExecutor(
            self.runtime, threads=threads, max_reexecution_factor=max_reexecution_factor
        )
        self.tree = JellyfishTree(storage)
        self.history = History(storage)
        if keep_blocks is not None:
            self.history.set_keep_blocks(keep_blocks)
        self._pruner: threading.Thread | None = None
        self._stop_pruning = threading.Event()
        self._write_lock = threading.Lock()

    # -- reading -----------------------------------------------------------------

    def head(self) -> Head:
        """Height, block hash and state root of the last committed block (:data:`GENESIS`)."""
        raw = self.storage.get(HEIGHT_KEY)
        if raw is None:
            return GENESIS
        if len(raw) != 8:
            raise ChainError(f"chain metadata is corrupt: head height is {raw.hex()}")
        height = struct.unpack(">Q", raw)[0]
        header = self.header(height)
        if header is None:
            raise ChainError(f"chain metadata is corrupt: no header for the head, {height}")
        return Head(height, header.hash, header.state_root)

    def header(self, height: int) -> BlockHeader | None:
        """The header of the committed block at ``height`` (``None`` if there is none)."""
        raw = self.storage.get(header_key(_height(height)))
        if raw is None:
            return None
        try:
            header = BlockHeader.decode(raw)
        except BlockFormatError as exc:
            raise ChainError(f"the header stored for block {height} is corrupt: {exc}") from None
        if header.height != height:
            raise ChainError(f"the header stored for block {height} names block {header.height}")
        return header

    def block(self, height: int) -> Block | None:
        """The committed block at ``height``: its timestamp and transactions."""
        header = self.header(height)
        if header is None:
            return None
        raw = self.storage.get(block_key(height))
        if raw is None:
            horizon = self.history.horizon()
            if height <= horizon:
                raise PrunedHeightError(
                    f"the transactions of block {height} are not kept: this store holds "
                    f"blocks from height {horizon} (it was started from a snapshot)",
                    height=height,
                    horizon=horizon,
                )
            raise ChainError(f"block {height} has a header but no transactions stored")
        return Block(height, header.timestamp, _decoded_body(raw, height))

    def receipts(self, height: int) -> tuple[Receipt, ...] | None:
        """The receipts of the committed block at ``height`` (without read and write sets).

        ``None`` when the store holds none for it: no such block, or a block
        imported from a write set (:meth:`import_block`), which carries none.
        """
        raw = self.storage.get(receipts_key(_height(height)))
        if raw is None:
            return None
        try:
            return decode_receipts(raw)
        except BlockFormatError as exc:
            raise ChainError(f"the receipts stored for block {height} are corrupt: {exc}") from None

    def find_transaction(self, tx_hash: bytes) -> tuple[int, int] | None:
        """The height and index in its block of the committed transaction ``tx_hash``."""
        raw = self.storage.get(tx_key(tx_hash))
        if raw is None:
            return None
        height, index = struct.unpack(">QI", raw)
        return int(height), int(index)

    def identity(self) -> bytes:
        """The chain's identity: the hash of its first block (zeros before any block)."""
        first = self.header(1)
        return ZERO_HASH if first is None else first.hash

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of the committed block whose hash is ``block_hash``."""
        raw = self.storage.get(hash_key(block_hash))
        return None if raw is None else struct.unpack(">Q", raw)[0]

    # -- writing -----------------------------------------------------------------

    def deploy(self, code: bytes, *, salt: bytes = b"", timestamp: int | None = None) -> bytes:
        """Deploy a contract in a block of its own (one deploy transaction); its address.

        The block's timestamp defaults to its parent's (0 for the first block),
        so that the same deployments give the same chain. When the address
        already holds this code, no block is made; when the code is refused
        (:class:`ChainError`), nothing is committed.
        """
        code = bytes(code)
        address = contract_address(code, salt)
        if self.storage.get(CONTRACT_PREFIX + address) == code_hash(code):
            return address
        head = self.head()
        if timestamp is None:
            parent = self.header(head.height) if head.height else None
            timestamp = parent.timestamp if parent is not None else 0
        tx = Transaction(DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(code, salt), sender=DEPLOYER)
        result = self.execute(Block(head.height + 1, timestamp, (tx,)), mode="sequential")
        (receipt,) = result.receipts
        if not receipt.ok:
            # Nothing is committed: a deployment that fails makes no block.
            raise ChainError(f"deploying the contract failed: {receipt.error or receipt.status}")
        self.commit(result)
        return receipt.return_data

    def execute(
        self,
        block: Block,
        *,
        mode: str = "parallel",
        progress: Progress | None = None,
        parent: BlockResult | None = None,
    ) -> BlockResult:
        """Execute ``block`` on top of the head and compute its header; nothing is written.

        ``parent``: an executed block not committed yet, which extends the head;
        ``block`` then runs on the state after it (so a pipeline can execute a
        block while its parent commits). When ``parent`` has been committed
        meanwhile, the result is the same.
        """
        head = self.head()
        base: StateView = self.storage
        tree = self.tree
        if parent is not None and parent.block_hash != head.block_hash:
            if parent.height != head.height + 1 or parent.parent_hash != head.block_hash:
                raise ChainError(
                    f"the parent given, block {parent.height}, does not extend head {head.height}"
                )
            pending: dict[bytes, bytes | None] = dict(parent.write_set)
            pending.update(parent.tree.writes)
            base = OverlayView(self.storage, pending)
            tree = self.tree.over(base)
            head = Head(parent.height, parent.block_hash, parent.state_root)
        if block.height != head.height + 1:
            raise ChainError(f"block {block.height} does not follow head {head.height}")
        run = self.executor.execute(block, base, mode=mode, progress=progress)
        changes = [(key, value) for key, value in run.write_set if in_state_tree(key)]
        # The write set is sorted, its keys unique: the tree need not check it again.
        tree_update = tree.update(
            block.height, changes, base_version=head.height if head.height else None,
            checked=True,
        )  # fmt: skip
        header = BlockHeader(
            height=block.height,
            parent_hash=head.block_hash,
            timestamp=block.timestamp,
            transactions_root=transactions_root(block.transactions),
            state_root=tree_update.root_hash,
            receipts_root=run.receipts_root,
        )
        return BlockResult(
            header, run.receipts, run.write_set, tree_update, block.transactions, run.stats
        )

    def commit(self, result: BlockResult) -> None:
        """Write ``result`` in one atomic batch; it must extend the current head."""
        head = self.head()
        header = result.header
        if header.height != head.height + 1 or header.parent_hash != head.block_hash:
            raise ChainError(
                f"result for block {header.height} does not extend head {head.height} "
                f"({head.block_hash.hex()[:16]}...)"
            )
        if result.tree.version != header.height:
            raise ChainError(f"result for block {header.height} carries another block's tree")
        ops: list[BatchOp] = list(result.write_set)
        ops += self.history.block_ops(header.height, result.write_set)
        ops += result.tree.writes
        ops.append((header_key(header.height), header.encode()))
        ops.append((block_key(header.height), encode_transactions(result.transactions)))
        if result.receipts:
            ops.append((receipts_key(header.height), encode_receipts(result.receipts)))
        ops += [
            (tx_key(tx.hash), struct.pack(">QI", header.height, index))
            for index, tx in enumerate(result.transactions)
        ]
        ops.append((hash_key(header.hash), struct.pack(">Q", header.height)))
        ops.append((HEIGHT_KEY, struct.pack(">Q", header.height)))
        with self._write_lock:
            self.runtime.write(ops)

    def import_block(
        self,
        header: BlockHeader,
        transactions: tuple[Transaction, ...],
        write_set: WriteSet,
    ) -> BlockResult:
        """Commit a block executed elsewhere, trusting its write set but checking its header.

        The header must extend the head, its transactions root must match
        ``transactions`` and its state root the tree after ``write_set``
        (sorted, unique keys, state keys only); otherwise :class:`ChainError`
        and nothing is written.
        """
        head = self.head()
        if header.height != head.height + 1:
            raise ChainError(f"block {header.height} does not follow head {head.height}")
        if header.parent_hash != head.block_hash:
            raise ChainError(
                f"block {header.height}'s parent is {header.parent_hash.hex()[:16]}..., "
                f"not the head {head.block_hash.hex()[:16]}... (another chain or a fork)"
            )
        transactions = tuple(transactions)
        if transactions_root(transactions) != header.transactions_root:
            raise ChainError(f"block {header.height}'s transactions do not match its header")
        write_set = _checked_write_set(write_set, header.height)
        tree = self.tree.update(
            header.height, write_set, base_version=head.height if head.height else None,
            checked=True,
        )  # fmt: skip
        if tree.root_hash != header.state_root:
            raise ChainError(
                f"block {header.height}'s write set gives state root {tree.root_hash.hex()}, "
                f"but its header says {header.state_root.hex()}"
            )
        result = BlockResult(
            header, (), write_set, tree, transactions, ExecutionStats(mode="imported")
        )
        self.commit(result)
        return result

    def apply(
        self, block: Block, *, mode: str = "parallel", progress: Progress | None = None
    ) -> BlockResult:
        """Execute and commit ``block``."""
        result = self.execute(block, mode=mode, progress=progress)
        self.commit(result)
        return result

    # -- history -------------------------------------------------------------------

    def latest(self) -> StateView:
        """The latest state, following each new block: a read is one storage get."""
        return LatestView(self.storage)

    def at(self, height: int) -> HeightView:
        """The state after the block at ``height``, read-only (a :class:`StateView`).

        Raises :class:`PrunedHeightError` below the store's horizon and
        ``ValueError`` above the head.
        """
        self.history.check_height(height, self.head().height)
        return HeightView(self.history, height)

    def prove(self, key: bytes, height: int | None = None) -> StateProof:
        """A proof of ``key``'s value at ``height`` (default: the head), or of its absence.

        ``key`` is a raw store key; :meth:`prove_state` takes a contract's own key.
        """
        if type(key) is not bytes:
            raise TypeError(f"a key is bytes, not {type(key).__name__}")
        if not key:
            raise ValueError("a key is non-empty bytes: the empty key has no proof")
        if not in_state_tree(key):
            raise ValueError(f"key {key.hex()} is chain metadata, not state: it has no proof")
        head = self.head()
        height = head.height if height is None else height
        self.history.check_height(height, head.height)
        if height == 0:
            return StateProof(key, None, 0, PLACEHOLDER, Proof(None, ()))
        header = self.header(height)
        assert header is not None
        value = self.history.value_at(key, height)
        proof = self.tree.prove(key, height)
        return StateProof(key, value, height, header.state_root, proof)

    def prove_state(self, contract: bytes, key: bytes, height: int | None = None) -> StateProof:
        """:meth:`prove` for ``key`` as ``contract`` sees it."""
        return self.prove(state_key(contract, key), height)

    # -- unwinding and pruning ---------------------------------------------------------

    def revert_to(self, height: int) -> RevertReport:
        """Unwind every block above ``height`` in one atomic batch.

        Afterwards the store holds exactly the state, tree, root and head it
        had after the block at ``height``. Below the pruning horizon the
        history needed is gone: :class:`PrunedHeightError`, nothing changed.
        """
        head = self.head()
        self.history.check_height(height, head.height)
        ops: list[BatchOp] = []
        restored = 0
        for undone in range(head.height, height, -1):
            unwind, keys = self.history.unwind_ops(undone)
            restored += keys
            ops += unwind
            version = struct.pack(">Q", undone)
            for prefix in (TREE_NODE_PREFIX, TREE_STALE_PREFIX):
                ops += [(key, None) for key, _ in self.storage.scan(prefix + version)]
            ops.append((TREE_ROOT_PREFIX + version, None))
            header = self.header(undone)
            if header is not None:
                ops.append((hash_key(header.hash), None))
            ops.append((header_key(undone), None))
            ops += [(tx_key(tx.hash), None) for tx in self._body(undone)]
            ops.append((block_key(undone), None))
            ops.append((receipts_key(undone), None))
        if not ops:
            return RevertReport(head.height, height, 0, 0)
        if height:
            ops.append((HEIGHT_KEY, struct.pack(">Q", height)))
        else:
            ops.append((HEIGHT_KEY, None))
        with self._write_lock:
            self.runtime.write(ops)
        # Contracts deployed by the unwound blocks are gone.
        self.runtime.forget_contracts()
        return RevertReport(head.height, height, restored, len(ops))

    def _body(self, height: int) -> tuple[Transaction, ...]:
        """The transactions stored for block ``height`` (none if its body is not kept)."""
        raw = self.storage.get(block_key(height))
        return () if raw is None else _decoded_body(raw, height)

    @property
    def keep_blocks(self) -> int | None:
        """How many recent blocks' history the store keeps (``None``: all, an archive).

        Setting it records the setting in the store; :meth:`prune` applies it.
        """
        return self.history.keep_blocks()

    @keep_blocks.setter
    def keep_blocks(self, keep: int | None) -> None:
        with self._write_lock:
            self.history.set_keep_blocks(keep)

    def horizon(self) -> int:
        """The lowest height whose state can still be read, proved or reverted to."""
        return self.history.horizon()

    def prune(
        self,
        keep_blocks: int | None = None,
        *,
        max_keys: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> PruneReport:
        """Delete history and tree nodes that heights below ``head - keep_blocks`` need.

        ``keep_blocks`` defaults to the store's setting; with neither, nothing
        is pruned (an archive). ``max_keys`` bounds the work of one call (run
        it again to go on); ``progress(keys)`` is called after each batch.
        """
        keep = self.keep_blocks if keep_blocks is None else keep_blocks
        horizon = self.horizon()
        if keep is not None:
            if type(keep) is not int or keep < 0:
                raise ValueError(f"keep_blocks must be an int >= 0, not {keep!r}")
            horizon = max(horizon, self.head().height - keep)
        with self._write_lock:
            return self.history.prune(horizon, max_keys=max_keys, progress=progress)

    def start_pruning(self, interval: float = 1.0, batch: int = 10_000) -> None:
        """Prune in a background thread every ``interval`` seconds, ``batch`` keys a turn."""
        if self._pruner is not None:
            return
        self._stop_pruning.clear()

        def run() -> None:
            while not self._stop_pruning.wait(interval):
                report = self.prune(max_keys=batch)
                while not report.complete and not self._stop_pruning.is_set():
                    report = self.prune(max_keys=batch)

        self._pruner = threading.Thread(target=run, name="supervm-pruner", daemon=True)
        self._pruner.start()

    def stop_pruning(self) -> None:
        """Stop the background pruning (after its current batch)."""
        if self._pruner is not None:
            self._stop_pruning.set()
            self._pruner.join()
            self._pruner = None

    def close(self) -> None:
        """Stop worker threads and background pruning (the store stays open)."""
        self.stop_pruning()
        self.executor.close()


class LatestView:
    """The chain's latest state as a :class:`StateView` (chain records hidden)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def get(self, key: bytes) -> bytes | None:
        if not in_state_tree(key):
            raise ValueError(f"key {key.hex()} is chain metadata, not state")
        return self._storage.get(key)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return (item for item in self._storage.scan(prefix) if in_state_tree(item[0]))


def _checked_write_set(write_set: WriteSet, height: int) -> WriteSet:
    """``write_set`` as a tuple, if its keys are state keys in strictly ascending order."""
    ops = tuple(write_set)
    previous = b""
    for op in ops:
        if type(op) is not tuple or len(op) != 2:
            raise ChainError(f"block {height}'s write set holds {op!r:.60}, not a (key, value)")
        key, value = op
        if type(key) is not bytes or (value is not None and type(value) is not bytes):
            raise ChainError(f"block {height}'s write set holds a key or value that is not bytes")
        if key <= previous:
            raise ChainError(f"block {height}'s write set is not in strictly ascending key order")
        if not in_state_tree(key):
            raise ChainError(
                f"block {height}'s write set writes {key[:40]!r}, which is not state "
                "(chain records are written by the chain)"
            )
        previous = key
    return ops


def _decoded_body(raw: bytes, height: int) -> tuple[Transaction, ...]:
    """The transactions of block ``height``'s stored body; ChainError if it is corrupt."""
    try:
        return decode_transactions(raw)
    except BlockFormatError as exc:
        raise ChainError(f"the transactions stored for block {height} are corrupt: {exc}") from None


def _height(height: int) -> int:
    if type(height) is not int or height < 0:
        raise ValueError(f"a height is an int >= 0, not {height!r}")
    return height
