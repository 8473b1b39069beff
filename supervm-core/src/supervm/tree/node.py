"""Tree nodes, node keys, their byte encodings and the storage keys they live under.

A node key names a node by the version that wrote it and its nibble path from
the root. A node is a :class:`LeafNode` (one key hash and its value hash) or an
:class:`InternalNode` (up to 16 children, one per nibble). The hash of an
internal node is the binary Merkle hash of its 16 slots, in which a range
holding a single leaf takes that leaf's hash (see :func:`internal_node_hash`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple, TypeAlias

from supervm.errors import SuperVMError
from supervm.layout import TREE_NODE_PREFIX, TREE_ROOT_PREFIX, TREE_STALE_PREFIX
from supervm.tree.hashing import HASH_SIZE, INTERNAL_TAG, PLACEHOLDER, leaf_hash

__all__ = [
    "BRANCH",
    "EMPTY",
    "LEAF",
    "MAX_DEPTH",
    "MAX_VERSION",
    "Child",
    "InternalNode",
    "LeafNode",
    "Node",
    "NodeKey",
    "TreeError",
    "check_version",
    "decode_node",
    "decode_stale_record",
    "describe_key",
    "encode_internal",
    "encode_stale_record",
    "internal_node_hash",
    "node_levels",
    "node_storage_key",
    "pack_nibbles",
    "root_record_key",
    "stale_record_key",
]

#: Nibbles in a key hash: the deepest a node can sit.
MAX_DEPTH: Final = 2 * HASH_SIZE
#: Largest version a node key can hold (8 bytes, big-endian).
MAX_VERSION: Final = (1 << 64) - 1

_LEAF_BYTE: Final = 0
_INTERNAL_BYTE: Final = 1
_LEAF_SIZE: Final = 1 + 2 * HASH_SIZE
_CHILD_SIZE: Final = 8 + HASH_SIZE
_HEADER_SIZE: Final = 5
_sha256 = hashlib.sha256
#: Each byte value as its two nibbles.
_UNPACKED: Final = tuple(bytes((byte >> 4, byte & 0x0F)) for byte in range(256))


class TreeError(SuperVMError):
    """The state tree is missing a node or version, or holds malformed or inconsistent data."""


def check_version(version: object, what: str) -> int:
    """``version`` if it is an int in 0..2**64-1 (``TypeError``/``ValueError`` naming ``what``)."""
    if type(version) is not int:
        raise TypeError(f"{what} must be an int, not {type(version).__name__}")
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"{what} must be in 0..2**64-1, got {version}")
    return version


@dataclass(frozen=True, slots=True)
class NodeKey:
    """Where a node sits: the version that wrote it and its nibble path from the root."""

    version: int
    path: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_version(self.version, "a node key's version")
        if type(self.path) is not tuple:
            raise TypeError(f"a node key's path must be a tuple, not {type(self.path).__name__}")
        if len(self.path) > MAX_DEPTH:
            raise ValueError(f"a node key's path holds at most 64 nibbles, got {len(self.path)}")
        for nibble in self.path:
            if type(nibble) is not int or not 0 <= nibble <= 15:
                raise ValueError(f"a node key's path holds nibbles 0..15, got {nibble!r}")

    def encode(self) -> bytes:
        """Version (8 bytes, big-endian), nibble count (1 byte), nibbles packed two a byte."""
        return self.version.to_bytes(8, "big") + bytes((len(self.path),)) + pack_nibbles(self.path)

    @classmethod
    def decode(cls, data: bytes) -> NodeKey:
        """The node key ``data`` encodes; :class:`TreeError` unless it is exactly one."""
        if type(data) is not bytes:
            raise TypeError(f"an encoded node key must be bytes, not {type(data).__name__}")
        if len(data) < 9:
            raise TreeError(f"an encoded node key has at least 9 bytes, got {len(data)}")
        count = data[8]
        if count > MAX_DEPTH:
            raise TreeError(f"a node key's nibble count is at most 64, got {count}")
        expected = 9 + (count + 1) // 2
        if len(data) != expected:
            raise TreeError(
                f"a node key with {count} nibbles has {expected} bytes, got {len(data)}"
            )
        if count & 1 and data[-1] & 0x0F:
            raise TreeError(f"the pad nibble of node key {data.hex()} is not zero")
        path: list[int] = []
        for byte in data[9:]:
            path.append(byte >> 4)
            path.append(byte & 0x0F)
        return cls(int.from_bytes(data[:8], "big"), tuple(path[:count]))

    @classmethod
    def from_trusted(cls, data: bytes) -> NodeKey:
        """The node key ``data`` encodes, which must be well formed (no checks)."""
        key = object.__new__(cls)
        object.__setattr__(key, "version", int.from_bytes(data[:8], "big"))
        unpacked = b"".join(map(_UNPACKED.__getitem__, data[9:]))
        object.__setattr__(key, "path", tuple(unpacked[: data[8]]))
        return key

    @property
    def path_hex(self) -> str:
        """The path as hex digits, one a nibble (empty for the root)."""
        return "".join(f"{nibble:x}" for nibble in self.path)

    def __str__(self) -> str:
        where = f"path {self.path_hex}" if self.path else "the root path"
        return f"version {self.version}, {where}"


def pack_nibbles(path: Sequence[int]) -> bytes:
    """Nibbles two a byte, high nibble first; an odd last nibble gets a zero low nibble."""
    out = bytearray((len(path) + 1) // 2)
    for i, nibble in enumerate(path):
        out[i >> 1] |= nibble << 4 if not i & 1 else nibble
    return bytes(out)


def describe_key(encoded: bytes) -> str:
    """An encoded node key for messages: decoded when possible, else hex."""
    try:
        return str(NodeKey.decode(encoded))
    except (TreeError, TypeError):
        return f"with malformed key {encoded.hex()}"


class Child(NamedTuple):
    """An internal node's reference to a child: its version, its hash, whether it is a leaf."""

    version: int
    hash: bytes
    is_leaf: bool


@dataclass(frozen=True, slots=True)
class LeafNode:
    """A leaf: the key hash it stands for and the hash of its value."""

    key_hash: bytes
    value_hash: bytes

    def __post_init__(self) -> None:
        for name in ("key_hash", "value_hash"):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != HASH_SIZE:
                raise ValueError(f"a leaf's {name} must be 32 bytes, got {value!r}")

    @classmethod
    def _trusted(cls, key_hash: bytes, value_hash: bytes) -> LeafNode:
        """A leaf from two hashes known to be 32 bytes each (a decoded leaf), unchecked."""
        leaf = object.__new__(cls)
        object.__setattr__(leaf, "key_hash", key_hash)
        object.__setattr__(leaf, "value_hash", value_hash)
        return leaf

    @property
    def hash(self) -> bytes:
        """``leaf_hash(key_hash, value_hash)``."""
        return leaf_hash(self.key_hash, self.value_hash)

    def encode(self) -> bytes:
        """``0x00`` + key hash + value hash (65 bytes)."""
        return b"\x00" + self.key_hash + self.value_hash


class InternalNode:
    """An internal node: children by nibble (0..15). Immutable.

    ``slots`` holds the same as a 16-tuple, ``None`` where there is no child. A
    node has at least one child, and a node with one child only if that child
    is internal (a lone leaf is moved up in its place).
    """

    __slots__ = ("slots",)
    slots: tuple[Child | None, ...]

    def __init__(self, children: Mapping[int, Child]) -> None:
        slots: list[Child | None] = [None] * 16
        for nibble, child in children.items():
            if type(nibble) is not int or not 0 <= nibble <= 15:
                raise ValueError(
                    f"internal node children are keyed by nibbles 0..15, got {nibble!r}"
                )
            if not isinstance(child, Child):
                raise TypeError(f"internal node children must be Child, not {type(child).__name__}")
            check_version(child.version, "a child's version")
            if type(child.hash) is not bytes or len(child.hash) != HASH_SIZE:
                raise ValueError(f"child {nibble}'s hash must be 32 bytes, got {child.hash!r}")
            if child.hash == PLACEHOLDER:
                raise ValueError(f"child {nibble}'s hash is the empty-subtree placeholder")
            if type(child.is_leaf) is not bool:
                raise TypeError(f"child {nibble}'s is_leaf must be a bool")
            slots[nibble] = child
        present = [child for child in slots if child is not None]
        if not present:
            raise ValueError("an internal node needs at least one child")
        if len(present) == 1 and present[0].is_leaf:
            raise ValueError("an internal node's only child cannot be a leaf (it takes its place)")
        object.__setattr__(self, "slots", tuple(slots))

    @classmethod
    def from_slots(cls, slots: Sequence[Child | None]) -> InternalNode:
        """The node with these 16 slots, which must already be valid (no checks)."""
        node = object.__new__(cls)
        object.__setattr__(node, "slots", tuple(slots))
        return node

    @property
    def children(self) -> Mapping[int, Child]:
        """The children by nibble, in nibble order (read-only)."""
        return MappingProxyType({i: c for i, c in enumerate(self.slots) if c is not None})

    @property
    def hash(self) -> bytes:
        """The binary Merkle hash of the 16 slots (:func:`internal_node_hash`)."""
        return internal_node_hash(self.slots)

    def encode(self) -> bytes:
        """See :func:`encode_internal`."""
        return encode_internal(self.slots)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"InternalNode is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InternalNode):
            return NotImplemented
        return self.slots == other.slots

    def __hash__(self) -> int:
        return hash(self.slots)

    def __repr__(self) -> str:
        return f"InternalNode(children={dict(self.children)!r})"


Node: TypeAlias = LeafNode | InternalNode


def encode_internal(slots: Sequence[Child | None]) -> bytes:
    """``0x01`` + existence bitmap + leaf bitmap (2 bytes each, big-endian, bit i = ``1 << i``)
    + version (8 bytes, big-endian) and hash (32 bytes) of each child in nibble order."""
    exists = leaves = 0
    parts = [b""]
    for i, child in enumerate(slots):
        if child is not None:
            exists |= 1 << i
            if child.is_leaf:
                leaves |= 1 << i
            parts.append(child.version.to_bytes(8, "big"))
            parts.append(child.hash)
    parts[0] = b"\x01" + exists.to_bytes(2, "big") + leaves.to_bytes(2, "big")
    return b"".join(parts)


def decode_node(data: bytes) -> Node:
    """The node ``data`` encodes; :class:`TreeError` on any malformation."""
    if type(data) is not bytes:
        raise TypeError(f"an encoded node must be bytes, not {type(data).__name__}")
    if not data:
        raise TreeError("an encoded node is empty")
    tag = data[0]
    if tag == _LEAF_BYTE:
        if len(data) != _LEAF_SIZE:
            raise TreeError(f"an encoded leaf has {_LEAF_SIZE} bytes, got {len(data)}")
        return LeafNode._trusted(data[1:33], data[33:])
    if tag != _INTERNAL_BYTE:
        raise TreeError(
            f"an encoded node starts with 0x00 (leaf) or 0x01 (internal), not {tag:#04x}"
        )
    if len(data) < _HEADER_SIZE:
        raise TreeError(f"an encoded internal node has at least 5 bytes, got {len(data)}")
    exists = int.from_bytes(data[1:3], "big")
    leaves = int.from_bytes(data[3:5], "big")
    if leaves & ~exists:
        raise TreeError(
            f"the leaf bitmap {leaves:016b} marks children the existence bitmap "
            f"{exists:016b} does not have"
        )
    count = exists.bit_count()
    expected = _HEADER_SIZE + _CHILD_SIZE * count
    if len(data) != expected:
        raise TreeError(
            f"an encoded internal node with {count} children has {expected} bytes, got {len(data)}"
        )
    if count == 0:
        raise TreeError("an encoded internal node has no children")
    if count == 1 and leaves:
        raise TreeError("an encoded internal node's only child is a leaf (it belongs in its place)")
    slots: list[Child | None] = [None] * 16
    pos = _HEADER_SIZE
    bits = exists
    while bits:
        low = bits & -bits
        child_hash = data[pos + 8 : pos + _CHILD_SIZE]
        if child_hash == PLACEHOLDER:
            raise TreeError(f"child {low.bit_length() - 1}'s hash is the empty-subtree placeholder")
        slots[low.bit_length() - 1] = Child(
            int.from_bytes(data[pos : pos + 8], "big"), child_hash, leaves & low != 0
        )
        pos += _CHILD_SIZE
        bits ^= low
    return InternalNode.from_slots(slots)


# One entry of a binary level inside an internal node: (kind, hash, slot). ``kind`` is
# EMPTY (no child in the range), LEAF (exactly one child, a leaf, in slot ``slot``) or
# BRANCH (anything else: hashed as a binary node, or an internal child at width 1).
EMPTY: Final = 0
LEAF: Final = 1
BRANCH: Final = 2
_Entry: TypeAlias = tuple[int, bytes, int]
_EMPTY_ENTRY: Final[_Entry] = (EMPTY, PLACEHOLDER, -1)


def internal_node_hash(slots: Sequence[Child | None]) -> bytes:
    """Binary Merkle hash of 16 slots, a range holding one leaf taking that leaf's hash.

    hash(range) is the placeholder for an empty range, the child's hash for a
    range of one leaf or of width 1, else ``internal_hash(hash(left), hash(right))``.
    """
    level: list[tuple[bytes, bool] | None] = [
        None if child is None else (child.hash, child.is_leaf) for child in slots
    ]
    sha = _sha256
    tag = INTERNAL_TAG
    while len(level) > 1:
        up: list[tuple[bytes, bool] | None] = []
        append = up.append
        for i in range(0, len(level), 2):
            a = level[i]
            b = level[i + 1]
            if a is None:
                if b is None or b[1]:
                    append(b)
                else:
                    append((sha(tag + PLACEHOLDER + b[0]).digest(), False))
            elif b is None:
                append(a if a[1] else (sha(tag + a[0] + PLACEHOLDER).digest(), False))
            else:
                append((sha(tag + a[0] + b[0]).digest(), False))
        level = up
    top = level[0]
    return PLACEHOLDER if top is None else top[0]


def node_levels(slots: Sequence[Child | None]) -> list[list[_Entry]]:
    """The binary levels inside an internal node, bottom-up.

    ``levels[w]`` holds ``16 >> w`` entries ``(kind, hash, slot)``, entry ``j``
    covering slots ``[j << w, (j + 1) << w)``; ``levels[4][0]`` is the node.
    """
    bottom: list[_Entry] = []
    for i, child in enumerate(slots):
        if child is None:
            bottom.append(_EMPTY_ENTRY)
        else:
            bottom.append((LEAF if child.is_leaf else BRANCH, child.hash, i))
    levels = [bottom]
    while len(levels[-1]) > 1:
        below = levels[-1]
        up: list[_Entry] = []
        for i in range(0, len(below), 2):
            a = below[i]
            b = below[i + 1]
            if b[0] == EMPTY and a[0] != BRANCH:
                up.append(a)
            elif a[0] == EMPTY and b[0] == LEAF:
                up.append(b)
            else:
                up.append((BRANCH, _sha256(INTERNAL_TAG + a[1] + b[1]).digest(), -1))
        levels.append(up)
    return levels


def node_storage_key(key: NodeKey) -> bytes:
    """Storage key of a node: ``t/n/`` + encoded node key."""
    return TREE_NODE_PREFIX + key.encode()


def root_record_key(version: int) -> bytes:
    """Storage key of the root record of ``version``: ``t/r/`` + version (8 bytes, big-endian)."""
    return TREE_ROOT_PREFIX + check_version(version, "a tree version").to_bytes(8, "big")


def stale_record_key(version: int) -> bytes:
    """Storage key of the stale record of ``version``: ``t/s/`` + version (8 bytes)."""
    return TREE_STALE_PREFIX + check_version(version, "a tree version").to_bytes(8, "big")


def encode_stale_record(keys: Iterable[bytes]) -> bytes:
    """The stale record of a version: each encoded node key it made stale, after its
    length (1 byte)."""
    return b"".join(bytes((len(key),)) + key for key in keys)


def decode_stale_record(data: bytes) -> list[bytes]:
    """The encoded node keys of a stale record; :class:`TreeError` if malformed."""
    if type(data) is not bytes:
        raise TypeError(f"a stale record must be bytes, not {type(data).__name__}")
    keys = []
    at = 0
    while at < len(data):
        size = data[at]
        key = data[at + 1 : at + 1 + size]
        if len(key) != size:
            raise TreeError(f"a stale record is truncated ({len(data)} bytes)")
        NodeKey.decode(key)  # raises on a malformed key
        keys.append(key)
        at += 1 + size
    return keys
