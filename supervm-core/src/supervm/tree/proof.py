"""Merkle proofs of a key's value, or of its absence, and their verification.

A :class:`Proof` is the leaf a key's path ends at (or ``None`` for an empty
subtree) and the sibling hashes on the binary path from there up to the root.
:func:`verify` checks a proof against a root hash and needs nothing else.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Final

from supervm.tree.hashing import (
    HASH_SIZE,
    PLACEHOLDER,
    internal_hash,
    key_bit,
    key_hash,
    leaf_hash,
    value_hash,
)
from supervm.tree.node import TreeError

__all__ = ["FORMAT_VERSION", "MAX_SIBLINGS", "Proof", "ProofError", "verify"]

#: First byte of an encoded proof.
FORMAT_VERSION: Final = 1
#: Most siblings a proof can hold (its count is one byte).
MAX_SIBLINGS: Final = 255
_FLAG_LEAF: Final = 0x01
_HEX_DIGITS: Final = frozenset(string.hexdigits)


class ProofError(TreeError, ValueError):
    """A proof is malformed, non-canonical, or cannot be made."""


def _check_hash(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be 32 bytes, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Proof:
    """A key's path to the root: where it ends, and the sibling hashes on the way."""

    #: ``(key_hash, value_hash)`` of the leaf the path ends at; ``None``: an empty subtree.
    leaf: tuple[bytes, bytes] | None
    #: Sibling hashes from the bottom (next to the leaf) up to the root, placeholders included.
    siblings: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.leaf is not None:
            if type(self.leaf) is not tuple or len(self.leaf) != 2:
                raise ProofError(
                    f"a proof's leaf is a (key_hash, value_hash) pair, not {self.leaf!r}"
                )
            _check_hash(self.leaf[0], "a proof leaf's key hash")
            _check_hash(self.leaf[1], "a proof leaf's value hash")
        if type(self.siblings) is not tuple:
            raise ProofError(f"a proof's siblings are a tuple, not {type(self.siblings).__name__}")
        if len(self.siblings) > MAX_SIBLINGS:
            raise ProofError(
                f"a proof holds at most {MAX_SIBLINGS} siblings, got {len(self.siblings)}"
            )
        for i, sibling in enumerate(self.siblings):
            _check_hash(sibling, f"sibling {i}")

    def encode(self) -> bytes:
        """The canonical binary form (see ``docs/tree.md``)."""
        count = len(self.siblings)
        parts = [bytes((FORMAT_VERSION, _FLAG_LEAF if self.leaf is not None else 0))]
        if self.leaf is not None:
            parts.extend(self.leaf)
        bitmap = bytearray((count + 7) // 8)
        hashes: list[bytes] = []
        for i, sibling in enumerate(self.siblings):
            if sibling == PLACEHOLDER:
                bitmap[i >> 3] |= 0x80 >> (i & 7)
            else:
                hashes.append(sibling)
        parts.append(bytes((count,)))
        parts.append(bytes(bitmap))
        parts.extend(hashes)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """The proof ``data`` encodes; :class:`ProofError` unless it is canonical and complete."""
        if type(data) is not bytes:
            raise ProofError(f"an encoded proof must be bytes, not {type(data).__name__}")
        if len(data) < 3:
            raise ProofError(f"an encoded proof has at least 3 bytes, got {len(data)}")
        if data[0] != FORMAT_VERSION:
            raise ProofError(f"proof format version {data[0]} is unknown (this reads 1)")
        flags = data[1]
        if flags & ~_FLAG_LEAF:
            raise ProofError(f"proof flags {flags:#04x} set unknown bits (only bit 0 is defined)")
        pos = 2
        leaf: tuple[bytes, bytes] | None = None
        if flags & _FLAG_LEAF:
            if len(data) < pos + 2 * HASH_SIZE:
                raise ProofError("the encoded proof ends inside its leaf")
            leaf = (data[pos : pos + HASH_SIZE], data[pos + HASH_SIZE : pos + 2 * HASH_SIZE])
            pos += 2 * HASH_SIZE
        if len(data) <= pos:
            raise ProofError("the encoded proof ends before its sibling count")
        count = data[pos]
        pos += 1
        bitmap_size = (count + 7) // 8
        bitmap = data[pos : pos + bitmap_size]
        if len(bitmap) != bitmap_size:
            raise ProofError("the encoded proof ends inside its placeholder bitmap")
        pos += bitmap_size
        if count & 7 and bitmap[-1] & (0xFF >> (count & 7)):
            raise ProofError("the placeholder bitmap's pad bits are not zero")
        siblings: list[bytes] = []
        for i in range(count):
            if bitmap[i >> 3] & (0x80 >> (i & 7)):
                siblings.append(PLACEHOLDER)
                continue
            sibling = data[pos : pos + HASH_SIZE]
            if len(sibling) != HASH_SIZE:
                raise ProofError(f"the encoded proof ends inside sibling {i}")
            if sibling == PLACEHOLDER:
                raise ProofError(f"sibling {i} is the placeholder but not marked in the bitmap")
            siblings.append(sibling)
            pos += HASH_SIZE
        if pos != len(data):
            raise ProofError(f"{len(data) - pos} bytes follow the end of the encoded proof")
        return cls(leaf, tuple(siblings))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: ``format``, ``leaf`` (``key_hash``/``value_hash`` or null),
        ``siblings`` (bottom-up), every hash as lowercase hex."""
        leaf = None
        if self.leaf is not None:
            leaf = {"key_hash": self.leaf[0].hex(), "value_hash": self.leaf[1].hex()}
        return {
            "format": FORMAT_VERSION,
            "leaf": leaf,
            "siblings": [sibling.hex() for sibling in self.siblings],
        }

    @classmethod
    def from_json(cls, data: object) -> Proof:
        """The proof a :meth:`to_json` dict describes; :class:`ProofError` on bad input."""
        if not isinstance(data, dict):
            raise ProofError(f"a JSON proof is an object, not {type(data).__name__}")
        if set(data) != {"format", "leaf", "siblings"}:
            raise ProofError(
                f"a JSON proof has exactly the fields format, leaf and siblings, got {sorted(data)}"
            )
        if type(data["format"]) is not int or data["format"] != FORMAT_VERSION:
            raise ProofError(f"JSON proof format {data['format']!r} is unknown (this reads 1)")
        raw_leaf = data["leaf"]
        leaf: tuple[bytes, bytes] | None = None
        if raw_leaf is not None:
            if not isinstance(raw_leaf, dict) or set(raw_leaf) != {"key_hash", "value_hash"}:
                raise ProofError(
                    f"a JSON proof's leaf is null or an object with key_hash and value_hash, "
                    f"got {raw_leaf!r}"
                )
            leaf = (
                _from_hex(raw_leaf["key_hash"], "the leaf's key_hash"),
                _from_hex(raw_leaf["value_hash"], "the leaf's value_hash"),
            )
        raw_siblings = data["siblings"]
        if not isinstance(raw_siblings, list):
            raise ProofError(f"a JSON proof's siblings are a list, not {raw_siblings!r}")
        siblings = tuple(_from_hex(s, f"sibling {i}") for i, s in enumerate(raw_siblings))
        return cls(leaf, siblings)


def _from_hex(value: object, what: str) -> bytes:
    if (
        not isinstance(value, str)
        or len(value) != 2 * HASH_SIZE
        or not _HEX_DIGITS.issuperset(value)
    ):
        raise ProofError(f"{what} must be 64 hex digits, got {value!r}")
    return bytes.fromhex(value)


def verify(root: bytes, key: bytes, value: bytes | None, proof: Proof | bytes) -> bool:
    """Whether ``proof`` shows that ``key`` holds ``value`` (``None``: is absent) under ``root``.

    ``proof`` may be encoded; anything that does not decode, or is not a proof,
    does not verify. Raises ``TypeError`` only for ``root``, ``key`` or ``value``.
    """
    if not isinstance(root, bytes):
        raise TypeError(f"the root must be bytes, not {type(root).__name__}")
    if not isinstance(key, bytes):
        raise TypeError(f"the key must be bytes, not {type(key).__name__}")
    if value is not None and not isinstance(value, bytes):
        raise TypeError(f"the value must be bytes or None, not {type(value).__name__}")
    if isinstance(proof, bytes):
        try:
            proof = Proof.decode(proof)
        except ProofError:
            return False
    elif not isinstance(proof, Proof):
        return False
    if len(root) != HASH_SIZE:
        return False
    kh = key_hash(key)
    siblings = proof.siblings
    n = len(siblings)
    leaf = proof.leaf
    if value is not None:
        if leaf is None or leaf[0] != kh or leaf[1] != value_hash(value):
            return False
    elif leaf is not None:
        if leaf[0] == kh:
            return False
        differ = int.from_bytes(leaf[0], "big") ^ int.from_bytes(kh, "big")
        if differ >> (8 * HASH_SIZE - n):
            return False
    h = PLACEHOLDER if leaf is None else leaf_hash(leaf[0], leaf[1])
    for i, sibling in enumerate(siblings):
        h = internal_hash(sibling, h) if key_bit(kh, n - 1 - i) else internal_hash(h, sibling)
    return h == root
