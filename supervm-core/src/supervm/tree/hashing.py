"""SHA-256 hashing of the state tree: keys, values, leaves and internal nodes.

Every hash is 32 bytes. Leaf and internal hashes are domain-separated by a
one-byte tag, so a leaf can never be taken for an internal node or the other
way round; the hash of an empty subtree is :data:`PLACEHOLDER` (32 zero bytes),
which no SHA-256 output is expected to equal.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = [
    "HASH_SIZE",
    "INTERNAL_TAG",
    "LEAF_TAG",
    "PLACEHOLDER",
    "internal_hash",
    "key_bit",
    "key_hash",
    "key_nibble",
    "leaf_hash",
    "value_hash",
]

#: Size of every hash in the tree, in bytes.
HASH_SIZE: Final = 32
#: The hash of an empty subtree.
PLACEHOLDER: Final = bytes(HASH_SIZE)
#: First byte of a leaf's hash input.
LEAF_TAG: Final = b"\x00"
#: First byte of an internal node's hash input.
INTERNAL_TAG: Final = b"\x01"

_sha256 = hashlib.sha256


def key_hash(key: bytes) -> bytes:
    """SHA-256 of a state key: where the key sits in the tree."""
    return _sha256(key).digest()


def value_hash(value: bytes) -> bytes:
    """SHA-256 of a value."""
    return _sha256(value).digest()


def leaf_hash(key_hash: bytes, value_hash: bytes) -> bytes:
    """Hash of a leaf: ``sha256(0x00 + key_hash + value_hash)``."""
    return _sha256(LEAF_TAG + key_hash + value_hash).digest()


def internal_hash(left: bytes, right: bytes) -> bytes:
    """Hash of a binary node: ``sha256(0x01 + left + right)``."""
    return _sha256(INTERNAL_TAG + left + right).digest()


def key_bit(key_hash: bytes, index: int) -> int:
    """Bit ``index`` of a key hash (0 is the most significant bit of byte 0)."""
    return (key_hash[index >> 3] >> (7 - (index & 7))) & 1


def key_nibble(key_hash: bytes, index: int) -> int:
    """Nibble ``index`` of a key hash (0 is the high nibble of byte 0)."""
    byte = key_hash[index >> 1]
    return byte & 0x0F if index & 1 else byte >> 4
