"""Building the tree at one version from its leaves in key-hash order, in bounded memory.

A snapshot import feeds a :class:`TreeRestore` every ``(key hash, value hash)``
of the state, in strictly ascending key-hash order, chunk by chunk. As soon as
a node's subtree is complete (every later key hash leaves it), the node is
written and its hash goes to its parent, so the builder only holds the open
internal nodes on the current path (at most 64) and one pending leaf: a leaf's
depth is only known once its successor is (one more nibble than it shares with
either neighbour). The writes are byte for byte those of
``JellyfishTree.update(version, pairs, base_version=None)``, in the same order.

:meth:`TreeRestore.state` encodes the whole builder, so an import can store it
in the same atomic batch as the writes it has been given and later continue
with :meth:`TreeRestore.resume`, ending with the same writes and root as an
uninterrupted run.

State format 1 (integers big-endian)::

    magic "jmtr" (4) | format 1 (1) | version (8) | leaves added (8) | open nodes k (1)
    if leaves added > 0: pending key hash (32) + value hash (32)
    k times, the open node at depth 0 .. k - 1:
        existence bitmap (2) | leaf bitmap (2) | the hash of each child, in nibble order (32 each)

Every child of an open node was written at ``version``, so no versions are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from supervm.layout import TREE_NODE_PREFIX, TREE_ROOT_PREFIX
from supervm.storage import BatchOp
from supervm.tree.hashing import HASH_SIZE, INTERNAL_TAG, LEAF_TAG, PLACEHOLDER
from supervm.tree.node import MAX_DEPTH, TreeError, check_version

__all__ = ["TreeRestore"]

_sha256 = hashlib.sha256
_MAGIC: Final = b"jmtr"
_FORMAT: Final = 1
_HEAD_SIZE: Final = len(_MAGIC) + 1 + 8 + 8 + 1
_BYTE: Final = tuple(bytes((i,)) for i in range(256))
#: Each byte with its low nibble cleared: the last byte of an odd-length packed path.
_HIGH_HALF: Final = tuple(bytes((i & 0xF0,)) for i in range(256))
#: Right shift of a key hash's int that brings nibble ``d`` to the bottom.
_SHIFT: Final = tuple(252 - 4 * d for d in range(MAX_DEPTH))
#: Open-node bits (existence << 16 | leaf) for a leaf child, and an internal child, at a nibble.
_LEAF_BIT: Final = tuple(0x10001 << n for n in range(16))
_CHILD_BIT: Final = tuple(0x10000 << n for n in range(16))
_T: Final = INTERNAL_TAG
_TP: Final = INTERNAL_TAG + PLACEHOLDER
#: Slot positions (ascending) of each existence bitmap seen so far.
_POSITIONS: dict[int, tuple[int, ...]] = {}


def _positions(exists: int) -> tuple[int, ...]:
    found = _POSITIONS.get(exists)
    if found is None:
        found = _POSITIONS[exists] = tuple(i for i in range(16) if exists >> i & 1)
    return found


def _range_hash(
    pos: tuple[int, ...], hashes: list[bytes], leaves: int, lo: int, hi: int, width: int
) -> bytes:
    """Hash of children ``lo:hi`` (at least one), which fill an aligned range of ``1 << width``
    slots, as :func:`~supervm.tree.node.internal_node_hash` defines it."""
    sha = _sha256
    if hi - lo == 1:
        h = hashes[lo]
        p = pos[lo]
        if leaves >> p & 1:
            return h
        for level in range(width):
            h = sha(_TP + h).digest() if p >> level & 1 else sha(_T + h + PLACEHOLDER).digest()
        return h
    width -= 1
    mid = lo
    while mid < hi and not pos[mid] >> width & 1:
        mid += 1
    if mid == lo:
        return sha(_TP + _range_hash(pos, hashes, leaves, lo, hi, width)).digest()
    if mid == hi:
        return sha(_T + _range_hash(pos, hashes, leaves, lo, hi, width) + PLACEHOLDER).digest()
    left = _range_hash(pos, hashes, leaves, lo, mid, width)
    right = _range_hash(pos, hashes, leaves, mid, hi, width)
    return sha(_T + left + right).digest()


def _node_hash(bits: int, hashes: list[bytes]) -> bytes:
    """The hash of an internal node: ``bits`` is its existence bitmap << 16 | its leaf bitmap,
    ``hashes`` its children's hashes in nibble order."""
    exists = bits >> 16
    leaves = bits & 0xFFFF
    if leaves == exists and len(hashes) == 2:
        # Two leaves: one binary node where their slots part, then a wrap for each shared bit.
        low = exists & -exists
        a = low.bit_length() - 1
        h = _sha256(_T + hashes[0] + hashes[1]).digest()
        part = (((exists ^ low).bit_length() - 1) ^ a).bit_length()
        for level in range(part, 4):
            h = _sha256(_TP + h if a >> level & 1 else _T + h + PLACEHOLDER).digest()
        return h
    return _range_hash(_positions(exists), hashes, leaves, 0, len(hashes), 4)


def _packed(kh: bytes, depth: int) -> bytes:
    half = depth >> 1
    return kh[:half] + _HIGH_HALF[kh[half]] if depth & 1 else kh[:half]


def _pair(item: object) -> tuple[bytes, bytes]:
    """``item`` if it is a (key hash, value hash) pair of 32-byte hashes, else the error."""
    if type(item) is not tuple or len(item) != 2:
        raise TypeError(f"leaves must be (key hash, value hash) tuples, got {item!r:.80}")
    for value, what in zip(item, ("key hash", "value hash"), strict=True):
        if type(value) is not bytes:
            raise TypeError(f"a leaf's {what} must be bytes, not {type(value).__name__}")
        if len(value) != HASH_SIZE:
            raise TreeError(f"a leaf's {what} must be {HASH_SIZE} bytes, got {len(value)}")
    return item


class TreeRestore:
    """Builds the tree at ``version`` from leaves added in strictly ascending key-hash order.

    Memory stays O(tree depth) whatever the number of leaves. Each call returns
    the node writes it completed; :meth:`finish` returns the rest and the root
    record. A call that raises adds nothing.
    """

    __slots__ = (
        "_bits",
        "_depth",
        "_finished",
        "_hashes",
        "_last",
        "_leaves",
        "_pending",
        "_prefix",
        "_vb",
        "_version",
    )

    def __init__(self, version: int) -> None:
        self._version = check_version(version, "the version")
        self._vb = version.to_bytes(8, "big")
        self._prefix = TREE_NODE_PREFIX + self._vb
        # The open internal nodes, by depth: existence bitmap << 16 | leaf bitmap, and the
        # hashes of the children set so far (all written at this version), in nibble order.
        self._bits: list[int] = []
        self._hashes: list[list[bytes]] = []
        # The pending leaf: key hash, its int, encoded leaf, leaf hash.
        self._pending: tuple[bytes, int, bytes, bytes] | None = None
        # Nibbles the pending leaf shares with its predecessor (-1: none); the open nodes
        # are those at depths 0 to this.
        self._depth = -1
        self._leaves = 0
        self._last: bytes | None = None
        self._finished = False

    @property
    def version(self) -> int:
        """The version being built."""
        return self._version

    @property
    def leaves(self) -> int:
        """How many leaves have been added."""
        return self._leaves

    @property
    def last_key_hash(self) -> bytes | None:
        """The key hash of the last leaf added (``None`` before the first)."""
        return self._last

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._finished

    def add(self, key_hash: bytes, value_hash: bytes) -> list[BatchOp]:
        """Add the next leaf; returns the node writes (storage key, value) this completed."""
        return self._feed(((key_hash, value_hash),), False)

    def add_many(self, leaves: Iterable[tuple[bytes, bytes]]) -> list[BatchOp]:
        """Add ``(key hash, value hash)`` leaves in order; returns the node writes they completed.

        If one is refused, none of them is added.
        """
        return self._feed(leaves, True)

    def _feed(self, leaves: Iterable[tuple[bytes, bytes]], several: bool) -> list[BatchOp]:
        """Add ``leaves``; undone if one is refused (only ``several`` need saving: a single
        leaf is refused before anything changes)."""
        if self._finished:
            raise TreeError("this tree restore is finished: no more leaves can be added")
        bits = self._bits
        hashes = self._hashes
        saved_bits = list(bits) if several else bits
        saved_hashes = [list(h) for h in hashes] if several else hashes
        sha = _sha256
        from_bytes = int.from_bytes
        byte = _BYTE
        high_half = _HIGH_HALF
        shift = _SHIFT
        leaf_bit = _LEAF_BIT
        child_bit = _CHILD_BIT
        tag = LEAF_TAG
        prefix = self._prefix
        vb = self._vb
        node_hash = _node_hash
        out: list[BatchOp] = []
        append = out.append
        it = iter(leaves)
        count = self._leaves
        cp = self._depth
        top = cp
        try:
            if self._pending is None:
                for item in it:
                    try:
                        kh, vh = item
                    except (TypeError, ValueError):
                        kh, vh = _pair(item)
                    _pair((kh, vh))
                    pk, pki, plv = kh, from_bytes(kh, "big"), tag + kh + vh
                    ph = sha(plv).digest()
                    count = 1
                    break
                else:
                    return out
            else:
                pk, pki, plv, ph = self._pending
            for item in it:
                try:
                    kh, vh = item
                except (TypeError, ValueError):
                    kh, vh = _pair(item)
                if type(kh) is not bytes or len(kh) != 32 or type(vh) is not bytes or len(vh) != 32:
                    _pair((kh, vh))
                ki = from_bytes(kh, "big")
                if ki <= pki:
                    if ki == pki:
                        raise TreeError(f"duplicate key hash {kh.hex()}")
                    raise TreeError(f"leaves out of order: key hash {kh.hex()} follows {pk.hex()}")
                # c: the nibbles the pending leaf shares with this one. The pending leaf goes
                # one nibble below the longer of the prefixes it shares with its neighbours.
                c = (256 - (pki ^ ki).bit_length()) >> 2
                if c > cp:
                    while top < c:
                        bits.append(0)
                        hashes.append([])
                        top += 1
                    parent = c
                else:
                    parent = cp
                depth = parent + 1
                half = depth >> 1
                append(
                    (
                        prefix
                        + byte[depth]
                        + (pk[:half] + high_half[pk[half]] if depth & 1 else pk[:half]),
                        plv,
                    )
                )
                bits[parent] |= leaf_bit[pki >> shift[parent] & 15]
                hashes[parent].append(ph)
                # Every open node below depth c is complete: no later leaf is under it.
                while top > c:
                    b = bits.pop()
                    h = hashes.pop()
                    half = top >> 1
                    append(
                        (
                            prefix
                            + byte[top]
                            + (pk[:half] + high_half[pk[half]] if top & 1 else pk[:half]),
                            (0x100000000 | b).to_bytes(5, "big") + vb + vb.join(h),
                        )
                    )
                    nh = node_hash(b, h)
                    top -= 1
                    bits[top] |= child_bit[pki >> shift[top] & 15]
                    hashes[top].append(nh)
                cp = c
                count += 1
                pk = kh
                pki = ki
                plv = tag + kh + vh
                ph = sha(plv).digest()
        except BaseException:
            if several:
                bits[:] = saved_bits
                hashes[:] = saved_hashes
            raise
        self._pending = (pk, pki, plv, ph)
        self._depth = cp
        self._leaves = count
        self._last = pk
        return out

    def finish(self) -> tuple[list[BatchOp], bytes]:
        """The remaining node writes plus the root record (``TREE_ROOT_PREFIX`` + version),
        and the root hash (:data:`~supervm.tree.hashing.PLACEHOLDER` when empty)."""
        if self._finished:
            raise TreeError("this tree restore is already finished")
        self._finished = True
        out: list[BatchOp] = []
        record = TREE_ROOT_PREFIX + self._vb
        pending = self._pending
        if pending is None:
            out.append((record, b""))
            return out, PLACEHOLDER
        pk, pki, plv, root = pending
        prefix = self._prefix
        vb = self._vb
        bits = self._bits
        hashes = self._hashes
        parent = self._depth
        out.append((prefix + _BYTE[parent + 1] + _packed(pk, parent + 1), plv))
        if parent >= 0:
            bits[parent] |= _LEAF_BIT[pki >> _SHIFT[parent] & 15]
            hashes[parent].append(root)
            for top in range(parent, -1, -1):
                b = bits.pop()
                h = hashes.pop()
                out.append(
                    (
                        prefix + _BYTE[top] + _packed(pk, top),
                        (0x100000000 | b).to_bytes(5, "big") + vb + vb.join(h),
                    )
                )
                root = _node_hash(b, h)
                if top:
                    bits[top - 1] |= _CHILD_BIT[pki >> _SHIFT[top - 1] & 15]
                    hashes[top - 1].append(root)
        out.append((record, vb + b"\x00"))
        self._pending = None
        self._depth = -1
        return out, root

    def state(self) -> bytes:
        """Canonical bytes of the builder's whole state, for :meth:`resume`."""
        if self._finished:
            raise TreeError("a finished tree restore has no state to resume from")
        parts = [
            _MAGIC,
            _BYTE[_FORMAT],
            self._vb,
            self._leaves.to_bytes(8, "big"),
            _BYTE[len(self._hashes)],
        ]
        if self._pending is not None:
            parts.append(self._pending[2][1:])
        for b, h in zip(self._bits, self._hashes, strict=True):
            parts.append(b.to_bytes(4, "big"))
            parts.extend(h)
        return b"".join(parts)

    @classmethod
    def resume(cls, version: int, state: bytes) -> TreeRestore:
        """The builder that :meth:`state` encoded, to go on building ``version``.

        :class:`TreeError` if ``state`` is malformed or belongs to another version.
        """
        restore = cls(version)
        if type(state) is not bytes:
            raise TypeError(f"a tree restore state must be bytes, not {type(state).__name__}")
        bad = "malformed tree restore state: "
        if len(state) < _HEAD_SIZE or state[:4] != _MAGIC:
            raise TreeError(bad + "it does not start with a tree restore header")
        if state[4] != _FORMAT:
            raise TreeError(bad + f"unknown format {state[4]} (expected {_FORMAT})")
        stored = int.from_bytes(state[5:13], "big")
        if stored != version:
            raise TreeError(
                f"the tree restore state is for version {stored}, not version {version}"
            )
        leaves = int.from_bytes(state[13:21], "big")
        depth = state[21]
        at = _HEAD_SIZE
        if leaves == 0:
            if depth or len(state) != at:
                raise TreeError(bad + "a state with no leaves holds nothing else")
            return restore
        if depth > MAX_DEPTH:
            raise TreeError(bad + f"{depth} open nodes (at most {MAX_DEPTH})")
        if leaves == 1 and depth:
            raise TreeError(bad + "a single leaf has no open nodes above it")
        if leaves > 1 and not depth:
            raise TreeError(bad + f"{leaves} leaves but no open root node")
        pk = state[at : at + HASH_SIZE]
        vh = state[at + HASH_SIZE : at + 2 * HASH_SIZE]
        at += 2 * HASH_SIZE
        if len(vh) != HASH_SIZE:
            raise TreeError(bad + "the pending leaf is truncated")
        pki = int.from_bytes(pk, "big")
        for d in range(depth):
            head = state[at : at + 4]
            if len(head) != 4:
                raise TreeError(bad + f"the open node at depth {d} is truncated")
            b = int.from_bytes(head, "big")
            at += 4
            exists = b >> 16
            if b & 0xFFFF & ~exists:
                raise TreeError(
                    bad + f"the open node at depth {d} marks children it does not have as leaves"
                )
            if exists >> (pki >> _SHIFT[d] & 15):
                raise TreeError(
                    bad + f"the open node at depth {d} has a child at or after the pending "
                    "leaf's nibble"
                )
            if d == depth - 1 and not exists:
                raise TreeError(bad + f"the open node at depth {d} has no children")
            children = []
            for _ in range(exists.bit_count()):
                h = state[at : at + HASH_SIZE]
                if len(h) != HASH_SIZE:
                    raise TreeError(bad + f"the open node at depth {d} is truncated")
                if h == PLACEHOLDER:
                    raise TreeError(bad + f"the open node at depth {d} has a placeholder child")
                children.append(h)
                at += HASH_SIZE
            restore._bits.append(b)
            restore._hashes.append(children)
        if at != len(state):
            raise TreeError(bad + f"{len(state) - at} trailing bytes")
        plv = LEAF_TAG + pk + vh
        restore._pending = (pk, pki, plv, _sha256(plv).digest())
        restore._depth = depth - 1
        restore._leaves = leaves
        restore._last = pk
        return restore
