"""Transactions, blocks and what executing a block gives."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from supervm.chain.accounts import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, address_of
from supervm.chain.header import BlockFormatError, BlockHeader, merkle_root
from supervm.state import WriteSet
from supervm.tree import TreeUpdate
from supervm.vm.runtime import Event, Receipt, Status

__all__ = [
    "Block",
    "BlockResult",
    "Execution",
    "ExecutionStats",
    "Transaction",
    "decode_receipts",
    "decode_transactions",
    "encode_receipts",
    "encode_transactions",
    "receipts_root",
    "transactions_root",
]

_TX_VERSION = 1
_SIGNED_TX_VERSION = 2
#: What a signature signs: this tag, then the signed transaction's encoding without it.
SIGNING_DOMAIN = b"supervm/tx-sign/v2"
_ZERO_SENDER = b"\0" * 20


@dataclass(frozen=True)
class Transaction:
    """One call in a block.

    ``owned=True`` declares that the call touches only objects owned by its
    sender; such calls take the owned-object fast path and fail with status
    ``forbidden`` if they touch anything else.

    A *signed* transaction carries a ``public_key``, a ``signature``, a
    ``nonce`` and a ``chain_id``; its ``sender`` is the key's address
    (:func:`~supervm.chain.accounts.address_of`), set here. Executing it checks
    the nonce against the sender's and advances it, even when the call fails.
    Whether the signature verifies is for a node to check (``supervm_node``);
    the chain only commits to it.
    """

    contract: bytes
    method: str
    input: bytes = b""
    sender: bytes = _ZERO_SENDER
    gas_limit: int = 10_000_000
    owned: bool = False
    nonce: int | None = None
    chain_id: int = 0
    public_key: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not self.public_key and self.nonce is None:
            return
        if type(self.public_key) is not bytes or len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a signed transaction's public key is {PUBLIC_KEY_SIZE} bytes")
        if type(self.signature) is not bytes or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise ValueError(f"a signature is {SIGNATURE_SIZE} bytes (or empty before signing)")
        for name, number in (("nonce", self.nonce), ("chain_id", self.chain_id)):
            if type(number) is not int or not 0 <= number < 1 << 64:
                raise ValueError(f"a signed transaction's {name} is an int in [0, 2**64)")
        address = address_of(self.public_key)
        if self.sender != _ZERO_SENDER and self.sender != address:
            raise ValueError(
                f"sender {self.sender.hex()} is not the public key's address {address.hex()}"
            )
        object.__setattr__(self, "sender", address)

    @property
    def signed(self) -> bool:
        """Whether this is a signed transaction (it has a public key and a nonce)."""
        return self.nonce is not None

    def encode(self) -> bytes:
        """The canonical encoding (what the transactions root and the block body hold)."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        if self.nonce is not None:
            return self._unsigned + self.signature
        method = self.method.encode()
        return b"".join((
            bytes((_TX_VERSION,)), _frame(self.contract), _frame(method), _frame(self.input),
            _frame(self.sender), struct.pack(">QB", self.gas_limit, 1 if self.owned else 0),
        ))  # fmt: skip

    @cached_property
    def _unsigned(self) -> bytes:
        assert self.nonce is not None
        return b"".join((
            struct.pack(">BQQ", _SIGNED_TX_VERSION, self.chain_id, self.nonce), self.public_key,
            _frame(self.contract), _frame(self.method.encode()), _frame(self.input),
            struct.pack(">QB", self.gas_limit, 1 if self.owned else 0),
        ))  # fmt: skip

    def signing_payload(self) -> bytes:
        """The bytes a signed transaction's signature signs (independent of the signature)."""
        if self.nonce is None:
            raise ValueError("an unsigned transaction has nothing to sign: give it a nonce")
        return SIGNING_DOMAIN + self._unsigned

    def with_signature(self, signature: bytes) -> Transaction:
        """This transaction carrying ``signature``."""
        return Transaction(
            self.contract, self.method, self.input, self.sender, self.gas_limit, self.owned,
            self.nonce, self.chain_id, self.public_key, signature,
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        """The transaction encoded in ``data``; :class:`BlockFormatError` for anything else."""
        reader = _Reader(data, "transaction")
        version = reader.take(1)[0]
        if version == _SIGNED_TX_VERSION:
            return cls._decode_signed(reader)
        if version != _TX_VERSION:
            raise BlockFormatError(
                f"transaction format {version} is unknown (this reads {_TX_VERSION} "
                f"and {_SIGNED_TX_VERSION})"
            )
        contract, method, input_, sender = (reader.frame() for _ in range(4))
        gas_limit, owned = struct.unpack(">QB", reader.take(9))
        reader.end()
        return cls(contract, _method_name(method), input_, sender, gas_limit, _flag(owned))

    @classmethod
    def _decode_signed(cls, reader: _Reader) -> Transaction:
        chain_id, nonce = struct.unpack(">QQ", reader.take(16))
        public_key = reader.take(PUBLIC_KEY_SIZE)
        contract, method, input_ = (reader.frame() for _ in range(3))
        gas_limit, owned = struct.unpack(">QB", reader.take(9))
        signature = reader.take(SIGNATURE_SIZE)
        reader.end()
        return cls(
            contract, _method_name(method), input_, _ZERO_SENDER, gas_limit, _flag(owned),
            nonce, chain_id, public_key, signature,
        )  # fmt: skip

    @property
    def hash(self) -> bytes:
        """SHA-256 over a domain tag and :meth:`encode`."""
        return self._hash

    @cached_property
    def _hash(self) -> bytes:
        return hashlib.sha256(b"supervm/tx/v1" + self.encode()).digest()


def _method_name(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise BlockFormatError("malformed transaction: method name is not UTF-8") from None


def _flag(owned: int) -> bool:
    if owned > 1:
        raise BlockFormatError(f"malformed transaction: owned flag {owned}")
    return bool(owned)


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


def encode_receipts(receipts: Iterable[Receipt]) -> bytes:
    """What a block's receipts keep once committed: status, return data, gas, error, events.

    (Read and write sets are not kept: the receipts root commits to them.)
    """
    parts = []
    rs = list(receipts)
    parts.append(struct.pack(">I", len(rs)))
    for r in rs:
        parts += [
            _frame(r.status.value.encode()), _frame(r.return_data), struct.pack(">Q", r.gas_used),
            b"\0" if r.error is None else b"\1" + _frame(r.error.encode()),
            struct.pack(">I", len(r.events)),
        ]  # fmt: skip
        for event in r.events:
            parts += [_frame(event.contract), _frame(event.topic), _frame(event.data)]
    return b"".join(parts)


def decode_receipts(data: bytes) -> tuple[Receipt, ...]:
    """The receipts :func:`encode_receipts` wrote (without read and write sets)."""
    reader = _Reader(data, "receipts record")
    (count,) = struct.unpack(">I", reader.take(4))
    receipts = []
    for _ in range(count):
        try:
            status = Status(reader.frame().decode())
        except (UnicodeDecodeError, ValueError):
            raise BlockFormatError("malformed receipts record: unknown status") from None
        return_data = reader.frame()
        (gas,) = struct.unpack(">Q", reader.take(8))
        error = None
        if reader.take(1) == b"\1":
            error = reader.frame().decode(errors="replace")
        (events,) = struct.unpack(">I", reader.take(4))
        found = tuple(Event(reader.frame(), reader.frame(), reader.frame()) for _ in range(events))
        receipts.append(Receipt(status, return_data, gas, found, error))
    reader.end()
    return tuple(receipts)
