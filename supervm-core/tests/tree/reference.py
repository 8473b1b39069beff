"""A naive reference: the canonical root of a state, computed straight from its definition.

Independent of :mod:`supervm.tree`: hashes are computed here from the byte
layouts in ``docs/tree.md``.
"""

from __future__ import annotations

import hashlib

EMPTY = bytes(32)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def bit(digest: bytes, index: int) -> int:
    """Bit ``index`` of ``digest``, most significant bit of byte 0 first."""
    return (digest[index // 8] >> (7 - index % 8)) & 1


def canonical_root(pairs: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The canonical root of ``{key hash: value hash}`` at bit ``depth``."""
    if not pairs:
        return EMPTY
    if len(pairs) == 1:
        ((kh, vh),) = pairs.items()
        return sha256(b"\x00" + kh + vh)
    left = {kh: vh for kh, vh in pairs.items() if bit(kh, depth) == 0}
    right = {kh: vh for kh, vh in pairs.items() if bit(kh, depth) == 1}
    return sha256(b"\x01" + canonical_root(left, depth + 1) + canonical_root(right, depth + 1))


def reference_root(state: dict[bytes, bytes]) -> bytes:
    """The canonical root of a state ``{key: value}``."""
    return canonical_root({sha256(key): sha256(value) for key, value in state.items()})


def binary_depth(state: dict[bytes, bytes], key: bytes) -> int:
    """How many bits down ``key``'s path ends (at a leaf or an empty subtree)."""
    pairs = {sha256(k): sha256(v) for k, v in state.items()}
    kh = sha256(key)
    depth = 0
    while len(pairs) > 1:
        pairs = {h: v for h, v in pairs.items() if bit(h, depth) == bit(kh, depth)}
        depth += 1
    return depth


def _unpack(packed: bytes, count: int) -> list[int]:
    nibbles = []
    for byte in packed:
        nibbles += [byte >> 4, byte & 15]
    return nibbles[:count]


def _pack(nibbles: list[int]) -> bytes:
    out = bytearray((len(nibbles) + 1) // 2)
    for i, nibble in enumerate(nibbles):
        out[i // 2] |= nibble << 4 if i % 2 == 0 else nibble
    return bytes(out)


def _slots_hash(slots: list[tuple[bytes, bool] | None], lo: int, width: int) -> bytes:
    present = [slot for slot in slots[lo : lo + width] if slot is not None]
    if not present:
        return EMPTY
    if len(present) == 1 and (present[0][1] or width == 1):
        return present[0][0]
    half = width // 2
    return sha256(b"\x01" + _slots_hash(slots, lo, half) + _slots_hash(slots, lo + half, half))


def _walk(data: dict[bytes, bytes], node_key: bytes, nodes: dict[bytes, bytes]) -> bytes:
    raw = data[b"t/n/" + node_key]
    nodes[node_key] = raw
    if raw[0] == 0:
        assert len(raw) == 65
        return sha256(b"\x00" + raw[1:65])
    assert raw[0] == 1
    exists = int.from_bytes(raw[1:3], "big")
    leaves = int.from_bytes(raw[3:5], "big")
    path = _unpack(node_key[9:], node_key[8])
    slots: list[tuple[bytes, bool] | None] = [None] * 16
    pos = 5
    for i in range(16):
        if exists & (1 << i):
            child_version, child_hash = raw[pos : pos + 8], raw[pos + 8 : pos + 40]
            pos += 40
            child_key = child_version + bytes([len(path) + 1]) + _pack([*path, i])
            assert _walk(data, child_key, nodes) == child_hash
            slots[i] = (child_hash, bool(leaves & (1 << i)))
    assert pos == len(raw)
    return _slots_hash(slots, 0, 16)


def stored_tree(data: dict[bytes, bytes], version: int) -> tuple[bytes, dict[bytes, bytes]]:
    """Read the tree at ``version`` from raw storage ``data``, naively, from the byte layouts.

    Returns the root hash and every reachable node as ``{encoded node key: encoded node}``.
    """
    record = data[b"t/r/" + version.to_bytes(8, "big")]
    if record == b"":
        return EMPTY, {}
    nodes: dict[bytes, bytes] = {}
    return _walk(data, record, nodes), nodes
