"""Blocks, transactions, block results and the state digest."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from supervm.state import BatchOp, WriteSet
from supervm.vm.runtime import Receipt

__all__ = [
    "GENESIS_DIGEST",
    "Block",
    "BlockResult",
    "ExecutionStats",
    "Transaction",
    "state_digest",
]

#: The digest a chain starts from.
GENESIS_DIGEST = b"\0" * 32


@dataclass(frozen=True)
class Transaction:
    """One call in a block.

    ``owned=True`` declares that the call touches only objects owned by its
    sender; such calls take the owned-object fast path and fail with status
    ``forbidden`` if they touch anything else.
    """

    contract: bytes
    method: str
    input: bytes = b""
    sender: bytes = b"\0" * 20
    gas_limit: int = 10_000_000
    owned: bool = False


@dataclass(frozen=True)
class Block:
    """A height, a timestamp and transactions in their canonical order."""

    height: int
    timestamp: int
    transactions: tuple[Transaction, ...]

    def __post_init__(self) -> None:
        if type(self.height) is not int or self.height < 1:
            raise ValueError("block height must be an int >= 1")
        if type(self.timestamp) is not int or self.timestamp < 0:
            raise ValueError("block timestamp must be a non-negative int")
        if not isinstance(self.transactions, tuple):
            object.__setattr__(self, "transactions", tuple(self.transactions))
        for tx in self.transactions:
            if not isinstance(tx, Transaction):
                raise TypeError(f"block transactions must be Transaction, not {type(tx).__name__}")


@dataclass
class ExecutionStats:
    """How a block was executed (not part of its result's identity)."""

    mode: str = "sequential"
    threads: int = 1
    executions: int = 0
    validations: int = 0
    aborts: int = 0
    owned_fast_path: int = 0
    fell_back_to_sequential: bool = False
    fallback_reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class BlockResult:
    """Receipts in transaction order, the block's write set and the chained state digest."""

    height: int
    timestamp: int
    receipts: tuple[Receipt, ...]
    #: Final value of every key the block changed (``None``: deleted), sorted by key.
    write_set: WriteSet
    parent_digest: bytes
    state_digest: bytes
    receipts_root: bytes
    stats: ExecutionStats = field(default_factory=ExecutionStats, compare=False)

    def encode(self) -> bytes:
        """Canonical bytes of everything but the stats (equal results, equal bytes)."""
        parts = [
            struct.pack(">QQ", self.height, self.timestamp),
            self.parent_digest,
            self.state_digest,
            self.receipts_root,
        ]
        parts += [_frame(r.encode()) for r in self.receipts]
        parts += [_write_bytes(k, v) for k, v in self.write_set]
        return b"".join(parts)


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _write_bytes(key: bytes, value: bytes | None) -> bytes:
    return _frame(key) + (b"\0" if value is None else b"\1" + _frame(value))


def state_digest(parent: bytes, height: int, write_set: Iterable[BatchOp]) -> bytes:
    """SHA-256 over the parent digest, the height and the block's sorted writes."""
    digest = hashlib.sha256()
    digest.update(b"supervm/state/v1")
    digest.update(parent)
    digest.update(struct.pack(">Q", height))
    for key, value in write_set:
        digest.update(_write_bytes(key, value))
    return digest.digest()


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    """SHA-256 over the encoded receipts, in order."""
    digest = hashlib.sha256(b"supervm/receipts/v1")
    for receipt in receipts:
        digest.update(_frame(receipt.encode()))
    return digest.digest()
