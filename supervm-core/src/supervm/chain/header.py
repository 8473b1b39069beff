"""Block headers: what a block commits to, and its hash.

A header names its height, its parent's hash, its timestamp and three roots:
the transactions (a binary Merkle root over the encoded transactions), the
state after the block (the root of the state tree, :mod:`supervm.tree`) and the
receipts. Its hash is SHA-256 over a domain tag and its canonical encoding, so
two nodes that agree on a block's hash agree on everything it commits to.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supervm.errors import SuperVMError

__all__ = [
    "HEADER_SIZE",
    "ZERO_HASH",
    "BlockFormatError",
    "BlockHeader",
    "merkle_root",
]

#: The parent hash of the first block.
ZERO_HASH = b"\0" * 32
_VERSION = 1
_LAYOUT = struct.Struct(">BQQ32s32s32s32s")
#: Bytes of an encoded header.
HEADER_SIZE = _LAYOUT.size
_HASH_TAG = b"supervm/header/v1"
_EMPTY_ROOT = hashlib.sha256(b"supervm/merkle/empty").digest()


class BlockFormatError(SuperVMError, ValueError):
    """Bytes that are not a header, transaction or block body this SuperVM can read."""


@dataclass(frozen=True)
class BlockHeader:
    """Height, parent hash, timestamp and the block's three roots."""

    height: int
    parent_hash: bytes
    timestamp: int
    transactions_root: bytes
    state_root: bytes
    receipts_root: bytes
    _hash: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.height) is not int or self.height < 1:
            raise ValueError(f"header height must be an int >= 1, not {self.height!r}")
        if type(self.timestamp) is not int or not 0 <= self.timestamp < 2**64:
            raise ValueError(
                f"header timestamp must be an int in [0, 2**64), not {self.timestamp!r}"
            )
        for name in ("parent_hash", "transactions_root", "state_root", "receipts_root"):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != 32:
                raise ValueError(f"header {name} must be 32 bytes, not {value!r}")

    def encode(self) -> bytes:
        """The canonical encoding (:data:`HEADER_SIZE` bytes)."""
        return _LAYOUT.pack(
            _VERSION, self.height, self.timestamp, self.parent_hash,
            self.transactions_root, self.state_root, self.receipts_root,
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        """The header encoded in ``data``; :class:`BlockFormatError` for anything else."""
        if type(data) is not bytes or len(data) != HEADER_SIZE:
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise BlockFormatError(f"a block header is {HEADER_SIZE} bytes, not {size}")
        version, height, timestamp, parent, txs, state, receipts = _LAYOUT.unpack(data)
        if version != _VERSION:
            raise BlockFormatError(
                f"block header format {version} is unknown (this reads {_VERSION})"
            )
        try:
            return cls(height, parent, timestamp, txs, state, receipts)
        except ValueError as exc:
            raise BlockFormatError(f"malformed block header: {exc}") from None

    @property
    def hash(self) -> bytes:
        """SHA-256 over a domain tag and :meth:`encode`: the block's identity."""
        if not self._hash:
            object.__setattr__(self, "_hash", hashlib.sha256(_HASH_TAG + self.encode()).digest())
        return self._hash

    def to_json(self) -> dict[str, Any]:
        """The header as a JSON-friendly dict (hashes in hex)."""
        return {
            "height": self.height,
            "hash": self.hash.hex(),
            "parent_hash": self.parent_hash.hex(),
            "timestamp": self.timestamp,
            "transactions_root": self.transactions_root.hex(),
            "state_root": self.state_root.hex(),
            "receipts_root": self.receipts_root.hex(),
        }


def merkle_root(items: Sequence[bytes]) -> bytes:
    """Binary Merkle root over ``items`` in order (RFC 6962's shape).

    A leaf hashes ``0x00 + item``, a node ``0x01 + left + right``; a level of
    odd length splits at the largest power of two below its length. No items
    give a fixed empty root.
    """
    if not items:
        return _EMPTY_ROOT
    sha = hashlib.sha256
    level = [sha(b"\0" + item).digest() for item in items]
    # Pairing level by level, an odd last hash carried up as it is, gives RFC 6962's tree.
    while len(level) > 1:
        up = [sha(b"\1" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            up.append(level[-1])
        level = up
    return level[0]
