"""Transactions, blocks and what executing a block gives."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from supervm.chain.header import BlockFormatError, BlockHeader, merkle_root
from supervm.state import WriteSet
from supervm.tree import TreeUpdate
from supervm.vm.runtime import Receipt

__all__ = [
    "Block",
    "BlockResult",
    "Execution",
    "ExecutionStats",
    "Transaction",
    "decode_transactions",
    "encode_transactions",
    "receipts_root",
    "transactions_root",
]

_TX_VERSION = 1


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

    def encode(self) -> bytes:
        """The canonical encoding (what the transactions root and the block body hold)."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        method = self.method.encode()
        return b"".join((
            bytes((_TX_VERSION,)), _frame(self.contract), _frame(method), _frame(self.input),
            _frame(self.sender), struct.pack(">QB", self.gas_limit, 1 if self.owned else 0),
        ))  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        """The transaction encoded in ``data``; :class:`BlockFormatError` for anything else."""
        reader = _Reader(data, "transaction")
        version = reader.take(1)[0]
        if version != _TX_VERSION:
            raise BlockFormatError(
                f"transaction format {version} is unknown (this reads {_TX_VERSION})"
            )
        contract, method, input_, sender = (reader.frame() for _ in range(4))
        gas_limit, owned = struct.unpack(">QB", reader.take(9))
        reader.end()
        if owned > 1:
            raise BlockFormatError(f"malformed transaction: owned flag {owned}")
        try:
            name = method.decode()
        except UnicodeDecodeError:
            raise BlockFormatError("malformed transaction: method name is not UTF-8") from None
        return cls(contract, name, input_, sender, gas_limit, bool(owned))

    @property
    def hash(self) -> bytes:
        """SHA-256 over a domain tag and :meth:`encode`."""
        return hashlib.sha256(b"supervm/tx/v1" + self.encode()).digest()


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
class Execution:
    """What executing a block gives, before the state root: receipts and the write set."""

    receipts: tuple[Receipt, ...]
    #: Final value of every key the block changed (``None``: deleted), sorted by key.
    write_set: WriteSet
    receipts_root: bytes
    stats: ExecutionStats = field(default_factory=ExecutionStats, compare=False)


@dataclass(frozen=True)
class BlockResult:
    """An executed block: its header, receipts, write set and the state tree's update."""

    header: BlockHeader
    receipts: tuple[Receipt, ...]
    #: Final value of every key the block changed (``None``: deleted), sorted by key.
    write_set: WriteSet
    #: The state tree's nodes for this block (written with it).
    tree: TreeUpdate = field(compare=False, repr=False)
    #: The block's transactions (committed as its body).
    transactions: tuple[Transaction, ...] = field(default=(), compare=False, repr=False)
    stats: ExecutionStats = field(default_factory=ExecutionStats, compare=False)

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def timestamp(self) -> int:
        return self.header.timestamp

    @property
    def parent_hash(self) -> bytes:
        return self.header.parent_hash

    @property
    def block_hash(self) -> bytes:
        return self.header.hash

    @property
    def state_root(self) -> bytes:
        return self.header.state_root

    @property
    def receipts_root(self) -> bytes:
        return self.header.receipts_root

    def encode(self) -> bytes:
        """Canonical bytes of everything but the stats (equal results, equal bytes)."""
        parts = [self.header.encode()]
        parts += [_frame(r.encode()) for r in self.receipts]
        parts += [_write_bytes(k, v) for k, v in self.write_set]
        return b"".join(parts)


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Reads length-framed fields from bytes, raising :class:`BlockFormatError` on malformation."""

    def __init__(self, data: bytes, what: str) -> None:
        if type(data) is not bytes:
            raise BlockFormatError(f"a {what} is bytes, not {type(data).__name__}")
        self.data, self.at, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise BlockFormatError(f"truncated {self.what} ({len(self.data)} bytes)")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def frame(self) -> bytes:
        (size,) = struct.unpack(">I", self.take(4))
        return self.take(size)

    def end(self) -> None:
        if self.at != len(self.data):
            raise BlockFormatError(f"{len(self.data) - self.at} bytes after the {self.what}")


def encode_transactions(transactions: Iterable[Transaction]) -> bytes:
    """A block body: the encoded transactions, each length-framed."""
    txs = list(transactions)
    return struct.pack(">I", len(txs)) + b"".join(_frame(tx.encode()) for tx in txs)


def decode_transactions(data: bytes) -> tuple[Transaction, ...]:
    """The transactions of a block body written by :func:`encode_transactions`."""
    reader = _Reader(data, "block body")
    (count,) = struct.unpack(">I", reader.take(4))
    txs = tuple(Transaction.decode(reader.frame()) for _ in range(count))
    reader.end()
    return txs


def transactions_root(transactions: Iterable[Transaction]) -> bytes:
    """Binary Merkle root over the encoded transactions, in block order."""
    return merkle_root([tx.encode() for tx in transactions])


def _write_bytes(key: bytes, value: bytes | None) -> bytes:
    return _frame(key) + (b"\0" if value is None else b"\1" + _frame(value))


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    """SHA-256 over the encoded receipts, in order."""
    digest = hashlib.sha256(b"supervm/receipts/v1")
    for receipt in receipts:
        digest.update(_frame(receipt.encode()))
    return digest.digest()
