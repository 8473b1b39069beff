"""The state root computed from scratch over a set of pairs, without a stored tree.

What :class:`~supervm.tree.jmt.JellyfishTree` maintains incrementally, computed
directly from the definition (see docs/tree.md): the root of the sparse binary
Merkle tree over the key hashes, with every subtree that holds one leaf
collapsed to that leaf. A store's root can be checked against its flat state
this way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

__all__ = ["root_of"]

_PLACEHOLDER = b"\0" * 32


def root_of(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """The state root of ``pairs`` (a mapping, or pairs with unique keys)."""
    sha = hashlib.sha256
    if isinstance(pairs, Mapping):
        pairs = pairs.items()
    leaves = sorted((sha(key).digest(), sha(value).digest()) for key, value in pairs)
    if len(leaves) != len({kh for kh, _ in leaves}):
        raise ValueError("root_of: a key appears more than once")
    return _root([kh for kh, _ in leaves], [vh for _, vh in leaves], 0, len(leaves), 0)


def _root(keys: list[bytes], values: list[bytes], lo: int, hi: int, depth: int) -> bytes:
    if lo == hi:
        return _PLACEHOLDER
    if hi - lo == 1:
        return hashlib.sha256(b"\0" + keys[lo] + values[lo]).digest()
    split = _first_with_bit(keys, lo, hi, depth)
    left = _root(keys, values, lo, split, depth + 1)
    right = _root(keys, values, split, hi, depth + 1)
    return hashlib.sha256(b"\1" + left + right).digest()


def _first_with_bit(keys: list[bytes], lo: int, hi: int, depth: int) -> int:
    """The first index in sorted ``keys[lo:hi]`` whose bit ``depth`` is 1."""
    byte, mask = depth >> 3, 0x80 >> (depth & 7)
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid][byte] & mask:
            hi = mid
        else:
            lo = mid + 1
    return lo
