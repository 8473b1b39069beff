"""A chain of blocks over one store: execute, commit atomically, resume after a crash."""

from __future__ import annotations

import struct
from typing import NamedTuple

from supervm.chain.block import (
    Block,
    BlockResult,
    Transaction,
    decode_transactions,
    encode_transactions,
    transactions_root,
)
from supervm.chain.executor import BlockExecutor, Progress
from supervm.chain.header import ZERO_HASH, BlockFormatError, BlockHeader
from supervm.chain.ownership import OwnershipRegistry
from supervm.errors import SuperVMError
from supervm.layout import (
    CONTRACT_PREFIX,
    HEIGHT_KEY,
    block_key,
    hash_key,
    header_key,
    in_state_tree,
)
from supervm.state import BatchOp
from supervm.storage import Storage
from supervm.tree import PLACEHOLDER, JellyfishTree
from supervm.vm.engine import code_hash
from supervm.vm.runtime import (
    DEPLOY_ADDRESS,
    DEPLOY_METHOD,
    Runtime,
    contract_address,
    deploy_input,
)

__all__ = ["DEPLOYER", "GENESIS", "Chain", "ChainError", "Head"]

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
    ) -> None:
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
            raise ChainError(f"block {height} has a header but no transactions stored")
        try:
            txs = decode_transactions(raw)
        except BlockFormatError as exc:
            raise ChainError(
                f"the transactions stored for block {height} are corrupt: {exc}"
            ) from None
        return Block(height, header.timestamp, txs)

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
        self, block: Block, *, mode: str = "parallel", progress: Progress | None = None
    ) -> BlockResult:
        """Execute ``block`` on top of the head and compute its header; nothing is written."""
        head = self.head()
        if block.height != head.height + 1:
            raise ChainError(f"block {block.height} does not follow head {head.height}")
        run = self.executor.execute(block, self.storage, mode=mode, progress=progress)
        changes = [(key, value) for key, value in run.write_set if in_state_tree(key)]
        tree = self.tree.update(
            block.height, changes, base_version=head.height if head.height else None
        )
        header = BlockHeader(
            height=block.height,
            parent_hash=head.block_hash,
            timestamp=block.timestamp,
            transactions_root=transactions_root(block.transactions),
            state_root=tree.root_hash,
            receipts_root=run.receipts_root,
        )
        return BlockResult(header, run.receipts, run.write_set, tree, block.transactions, run.stats)

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
        ops += result.tree.writes
        ops.append((header_key(header.height), header.encode()))
        ops.append((block_key(header.height), encode_transactions(result.transactions)))
        ops.append((hash_key(header.hash), struct.pack(">Q", header.height)))
        ops.append((HEIGHT_KEY, struct.pack(">Q", header.height)))
        self.runtime.write(ops)

    def apply(
        self, block: Block, *, mode: str = "parallel", progress: Progress | None = None
    ) -> BlockResult:
        """Execute and commit ``block``."""
        result = self.execute(block, mode=mode, progress=progress)
        self.commit(result)
        return result

    def close(self) -> None:
        """Stop worker threads (the store stays open)."""
        self.executor.close()


def _height(height: int) -> int:
    if type(height) is not int or height < 0:
        raise ValueError(f"a height is an int >= 0, not {height!r}")
    return height
