"""A chain of blocks over one store: execute, commit atomically, resume after a crash."""

from __future__ import annotations

import struct

from supervm.chain.block import GENESIS_DIGEST, Block, BlockResult
from supervm.chain.executor import BlockExecutor, Progress
from supervm.chain.ownership import OwnershipRegistry
from supervm.errors import SuperVMError
from supervm.layout import DIGEST_KEY, HEIGHT_KEY, block_key
from supervm.state import BatchOp
from supervm.storage import Storage
from supervm.vm.runtime import Runtime

__all__ = ["Chain", "ChainError"]


class ChainError(SuperVMError):
    """A block does not follow the chain's head (wrong height or parent)."""


class Chain:
    """Blocks executed by a :class:`BlockExecutor` and committed to ``storage``.

    Committing a block writes its write set, its height and its state digest
    (and a per-height record) in one atomic batch, so after a crash the store
    holds exactly the blocks whose commit returned, and :meth:`head` resumes
    from the last of them.
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

    def head(self) -> tuple[int, bytes]:
        """Height and state digest of the last committed block (0 and zeros at genesis)."""
        raw = self.storage.get(HEIGHT_KEY)
        if raw is None:
            return 0, GENESIS_DIGEST
        digest = self.storage.get(DIGEST_KEY)
        if digest is None or len(raw) != 8:
            raise ChainError("chain metadata is corrupt: height without digest")
        return struct.unpack(">Q", raw)[0], digest

    def block_record(self, height: int) -> tuple[bytes, bytes] | None:
        """(state digest, receipts root) of the committed block at ``height``."""
        raw = self.storage.get(block_key(height))
        return None if raw is None else (raw[:32], raw[32:])

    def deploy(self, code: bytes, *, salt: bytes = b"") -> bytes:
        """Deploy a contract outside any block; returns its address."""
        return self.runtime.deploy(code, salt=salt)

    def execute(
        self, block: Block, *, mode: str = "parallel", progress: Progress | None = None
    ) -> BlockResult:
        """Execute ``block`` on top of the head without committing it."""
        height, digest = self.head()
        if block.height != height + 1:
            raise ChainError(f"block {block.height} does not follow head {height}")
        return self.executor.execute(block, self.storage, digest, mode=mode, progress=progress)

    def commit(self, result: BlockResult) -> None:
        """Write ``result`` in one atomic batch; it must extend the current head."""
        height, digest = self.head()
        if result.height != height + 1 or result.parent_digest != digest:
            raise ChainError(
                f"result for block {result.height} does not extend head {height} "
                f"({digest.hex()[:16]}...)"
            )
        ops: list[BatchOp] = list(result.write_set)
        ops.append((HEIGHT_KEY, struct.pack(">Q", result.height)))
        ops.append((DIGEST_KEY, result.state_digest))
        ops.append((block_key(result.height), result.state_digest + result.receipts_root))
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
