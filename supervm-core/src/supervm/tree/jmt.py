"""The Jellyfish Merkle tree: a versioned sparse Merkle tree over the store.

Each version's tree is a 16-ary trie over key hashes whose root hash equals the
canonical binary root of the state (see ``docs/tree.md``). An update builds the
new version in memory from the nodes of its base version and returns the
writes: new nodes (never overwriting old ones), the version's root record, and
stale records for the nodes it replaced. Old versions stay readable until their
stale nodes are pruned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, NamedTuple, TypeAlias

from supervm.layout import TREE_NODE_PREFIX, TREE_ROOT_PREFIX, TREE_STALE_PREFIX
from supervm.state import StateView
from supervm.storage import BatchOp
from supervm.tree.hashing import LEAF_TAG, PLACEHOLDER, key_hash, key_nibble
from supervm.tree.node import (
    EMPTY,
    LEAF,
    Child,
    InternalNode,
    LeafNode,
    Node,
    NodeKey,
    TreeError,
    check_version,
    decode_node,
    describe_key,
    encode_internal,
    encode_stale_record,
    internal_node_hash,
    node_levels,
)
from supervm.tree.proof import Proof

__all__ = ["JellyfishTree", "TreeUpdate"]

_sha256 = hashlib.sha256
_BYTE: Final = tuple(bytes((i,)) for i in range(256))
_HIGH: Final = tuple(bytes((n << 4,)) for n in range(16))
_key_of = itemgetter(0)


@dataclass(frozen=True)
class TreeUpdate:
    """What :meth:`JellyfishTree.update` computed; nothing is written until ``writes`` are."""

    version: int
    root_hash: bytes
    #: New nodes, the root record and stale records, as storage keys and values.
    writes: tuple[BatchOp, ...]
    #: The encoded keys of the nodes this update replaced or removed.
    stale_keys: tuple[bytes, ...]
    nodes_written: int

    @property
    def stale(self) -> tuple[NodeKey, ...]:
        """The nodes this update replaced or removed (each has a stale record in ``writes``)."""
        return tuple(map(NodeKey.from_trusted, self.stale_keys))


class _Leaf(NamedTuple):
    """A leaf in the making: where it is stored now (``origin``), if anywhere."""

    key_hash: bytes
    value_hash: bytes
    hash: bytes
    origin: bytes | None


#: A rebuilt subtree: empty, a leaf to place, or an internal node (new or untouched).
_Result: TypeAlias = Child | _Leaf | None
#: A change ready to apply: the key hash and the new leaf (``None`` for a delete).
_Change: TypeAlias = tuple[bytes, _Leaf | None]


def _be8(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _extend(packed: bytes, depth: int, nibble: int) -> bytes:
    """The packed path of child ``nibble`` of the node at ``packed`` (``depth`` nibbles)."""
    if depth & 1:
        return packed[:-1] + _BYTE[packed[-1] | nibble]
    return packed + _HIGH[nibble]


def _on_path(kh: bytes, packed: bytes, depth: int) -> bool:
    """Whether key hash ``kh`` starts with the ``depth`` nibbles packed in ``packed``."""
    half = depth >> 1
    if kh[:half] != packed[:half]:
        return False
    return not depth & 1 or kh[half] >> 4 == packed[half] >> 4


class _Batch:
    """One update in progress: the nodes it writes and the nodes it makes stale."""

    __slots__ = ("nodes", "stale", "tree", "vb", "version")

    def __init__(self, tree: JellyfishTree, version: int) -> None:
        self.tree = tree
        self.version = version
        self.vb = _be8(version)
        self.nodes: list[BatchOp] = []
        self.stale: list[bytes] = []

    def subtree(
        self, old: Child | None, packed: bytes, depth: int, changes: list[_Change], lo: int, hi: int
    ) -> _Result:
        """The subtree at ``packed`` (``depth`` nibbles) with ``changes[lo:hi]`` applied."""
        if old is None:
            leaves = [leaf for _, leaf in changes[lo:hi] if leaf is not None]
            return self.build(packed, depth, leaves, 0, len(leaves))
        if lo == hi:
            return old
        nk = _be8(old.version) + _BYTE[depth] + packed
        node = self.tree._load(nk, old.is_leaf, old.hash)
        if isinstance(node, LeafNode):
            return self.merge_leaf(node, old.hash, nk, packed, depth, changes, lo, hi)
        original = node.slots
        slots: list[_Result] = list(original)
        touched: list[tuple[int, bytes]] = []
        half, shift = depth >> 1, 0 if depth & 1 else 4
        i = lo
        while i < hi:
            nibble = (changes[i][0][half] >> shift) & 15
            j = i + 1
            while j < hi and (changes[j][0][half] >> shift) & 15 == nibble:
                j += 1
            child = original[nibble]
            child_packed = _extend(packed, depth, nibble)
            result = self.subtree(child, child_packed, depth + 1, changes, i, j)
            if result is not child:
                slots[nibble] = result
                touched.append((nibble, child_packed))
            i = j
        if not touched:
            return old
        present = [slot for slot in slots if slot is not None]
        if not present:
            self.stale.append(nk)
            return None
        if len(present) == 1:
            only = present[0]
            if isinstance(only, _Leaf):
                self.stale.append(nk)
                return only
            if only.is_leaf:
                nibble = slots.index(only)
                leaf_key = _be8(only.version) + _BYTE[depth + 1] + _extend(packed, depth, nibble)
                leaf = self.tree._leaf(leaf_key)
                self.stale.append(nk)
                return _Leaf(leaf.key_hash, leaf.value_hash, only.hash, leaf_key)
        placed: list[Child | None] = list(original)
        changed = False
        for nibble, child_packed in touched:
            child = self.place(slots[nibble], child_packed, depth + 1)
            placed[nibble] = child
            if child != original[nibble]:
                changed = True
        if not changed:
            return old
        self.stale.append(nk)
        return self.write_internal(packed, depth, placed)

    def merge_leaf(
        self,
        leaf: LeafNode,
        leaf_hash: bytes,
        nk: bytes,
        packed: bytes,
        depth: int,
        changes: list[_Change],
        lo: int,
        hi: int,
    ) -> _Result:
        """The subtree where the leaf stored at ``nk`` was, with ``changes[lo:hi]`` applied."""
        kh0 = leaf.key_hash
        vh0 = leaf.value_hash
        kept = True
        leaves: list[_Leaf] = []
        for kh, new in changes[lo:hi]:
            if kh == kh0:
                if new is not None and new.value_hash == vh0:
                    continue
                kept = False
            if new is not None:
                leaves.append(new)
        if kept:
            leaves.append(_Leaf(kh0, vh0, leaf_hash, nk))
            leaves.sort(key=_key_of)
        else:
            self.stale.append(nk)
        return self.build(packed, depth, leaves, 0, len(leaves))

    def build(self, packed: bytes, depth: int, leaves: list[_Leaf], lo: int, hi: int) -> _Result:
        """The subtree at ``packed`` holding exactly ``leaves[lo:hi]`` (sorted by key hash)."""
        if lo == hi:
            return None
        if hi - lo == 1:
            return leaves[lo]
        slots: list[Child | None] = [None] * 16
        half, shift = depth >> 1, 0 if depth & 1 else 4
        i = lo
        while i < hi:
            nibble = (leaves[i].key_hash[half] >> shift) & 15
            j = i + 1
            while j < hi and (leaves[j].key_hash[half] >> shift) & 15 == nibble:
                j += 1
            child_packed = _extend(packed, depth, nibble)
            result = self.build(child_packed, depth + 1, leaves, i, j)
            slots[nibble] = self.place(result, child_packed, depth + 1)
            i = j
        return self.write_internal(packed, depth, slots)

    def place(self, result: _Result, packed: bytes, depth: int) -> Child | None:
        """``result`` as the child at ``packed``: a leaf is written there unless already there."""
        if not isinstance(result, _Leaf):
            return result
        path = _BYTE[depth] + packed
        origin = result.origin
        if origin is not None:
            if origin[8:] == path:
                return Child(int.from_bytes(origin[:8], "big"), result.hash, True)
            self.stale.append(origin)
        self.nodes.append(
            (TREE_NODE_PREFIX + self.vb + path, LEAF_TAG + result.key_hash + result.value_hash)
        )
        return Child(self.version, result.hash, True)

    def write_internal(self, packed: bytes, depth: int, slots: list[Child | None]) -> Child:
        self.nodes.append(
            (TREE_NODE_PREFIX + self.vb + _BYTE[depth] + packed, encode_internal(slots))
        )
        return Child(self.version, internal_node_hash(slots), False)


class JellyfishTree:
    """The versioned state tree, read through a :class:`~supervm.state.StateView`.

    Decoded internal nodes are cached by node key and hash, as their parents
    name them: a node key is written again after a store is emptied or blocks
    are unwound, but a node with the same hash has the same content. Root nodes
    are read from the store. The cache holds at most ``cache_size`` nodes and is
    emptied when full.
    """

    def __init__(self, view: StateView, *, cache_size: int = 1 << 15) -> None:
        self.view = view
        self._cache: dict[bytes, InternalNode] = {}
        self._cache_size = cache_size

    def over(self, view: StateView) -> JellyfishTree:
        """This tree read through ``view`` instead (e.g. uncommitted nodes over the store),
        sharing its node cache (nodes are cached by key and hash, so the cache holds)."""
        tree = JellyfishTree(view, cache_size=self._cache_size)
        tree._cache = self._cache
        return tree

    # -- reading --------------------------------------------------------------------------

    def _load(self, nk: bytes, is_leaf: bool | None = None, expected: bytes = b"") -> Node:
        """The node with encoded key ``nk``; ``is_leaf`` and ``expected`` (its hash) are
        what its parent says of it (nothing for a root, which is not cached)."""
        cache_key = nk + expected if expected else b""
        node: Node | None = self._cache.get(cache_key) if expected else None
        if node is None:
            node = self._read(nk)
            if expected and isinstance(node, InternalNode) and self._cache_size > 0:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[cache_key] = node
        if is_leaf is not None and isinstance(node, LeafNode) != is_leaf:
            said, found = ("a leaf", "an internal node") if is_leaf else ("internal", "a leaf")
            raise TreeError(
                f"tree node at {describe_key(nk)} is {found} but its parent says it is {said}"
            )
        return node

    def _read(self, nk: bytes) -> Node:
        """The node stored at encoded key ``nk``, decoded; TreeError if missing or malformed."""
        raw = self.view.get(TREE_NODE_PREFIX + nk)
        if raw is None:
            raise TreeError(f"tree node at {describe_key(nk)} is missing from the store")
        try:
            return decode_node(raw)
        except TreeError as exc:
            raise TreeError(f"tree node at {describe_key(nk)} is malformed: {exc}") from None

    def _leaf(self, nk: bytes) -> LeafNode:
        """The leaf with encoded key ``nk``, which its parent says is a leaf."""
        node = self._load(nk, True)
        assert isinstance(node, LeafNode)  # _load checked it
        return node

    def _root_record(self, version: int) -> bytes:
        raw = self.view.get(TREE_ROOT_PREFIX + _be8(version))
        if raw is None:
            raise TreeError(f"the state tree has no root recorded for version {version}")
        if raw:
            try:
                key = NodeKey.decode(raw)
            except TreeError as exc:
                raise TreeError(
                    f"the root record of version {version} is malformed: {exc}"
                ) from None
            if key.path:
                raise TreeError(
                    f"the root record of version {version} names a node off the root path ({key})"
                )
        return raw

    def root_key(self, version: int) -> NodeKey | None:
        """The root node's key at ``version`` (``None``: empty); :class:`TreeError` if unknown."""
        raw = self._root_record(check_version(version, "the version"))
        return NodeKey.decode(raw) if raw else None

    def root_hash(self, version: int) -> bytes:
        """The root hash at ``version``: :data:`PLACEHOLDER` for an empty tree."""
        raw = self._root_record(check_version(version, "the version"))
        return self._load(raw).hash if raw else PLACEHOLDER

    def has_version(self, version: int) -> bool:
        """Whether ``version`` has a root record."""
        return (
            self.view.get(TREE_ROOT_PREFIX + _be8(check_version(version, "the version")))
            is not None
        )

    def get_value_hash(self, key: bytes, version: int) -> bytes | None:
        """The hash of ``key``'s value at ``version``, ``None`` if the key is absent."""
        if type(key) is not bytes:
            raise TypeError(f"tree keys must be bytes, not {type(key).__name__}")
        nk = self._root_record(check_version(version, "the version"))
        if not nk:
            return None
        kh = key_hash(key)
        packed = b""
        depth = 0
        is_leaf: bool | None = None
        expected = b""
        while True:
            node = self._load(nk, is_leaf, expected)
            if isinstance(node, LeafNode):
                return node.value_hash if node.key_hash == kh else None
            nibble = key_nibble(kh, depth)
            child = node.slots[nibble]
            if child is None:
                return None
            packed = _extend(packed, depth, nibble)
            depth += 1
            nk = _be8(child.version) + _BYTE[depth] + packed
            is_leaf = child.is_leaf
            expected = child.hash

    def prove(self, key: bytes, version: int) -> Proof:
        """A proof of ``key``'s value at ``version``, or of its absence."""
        if type(key) is not bytes:
            raise TypeError(f"tree keys must be bytes, not {type(key).__name__}")
        nk = self._root_record(check_version(version, "the version"))
        if not nk:
            return Proof(None, ())
        kh = key_hash(key)
        siblings: list[bytes] = []
        packed = b""
        depth = 0
        is_leaf: bool | None = None
        expected = b""
        while True:
            node = self._load(nk, is_leaf, expected)
            if isinstance(node, LeafNode):
                return self._proof((node.key_hash, node.value_hash), siblings)
            levels = node_levels(node.slots)
            nibble = key_nibble(kh, depth)
            for width in (3, 2, 1, 0):
                index = nibble >> width
                siblings.append(levels[width][index ^ 1][1])
                kind, _, slot = levels[width][index]
                if kind == EMPTY:
                    return self._proof(None, siblings)
                if kind == LEAF:
                    child = node.slots[slot]
                    assert child is not None
                    leaf_key = _be8(child.version) + _BYTE[depth + 1] + _extend(packed, depth, slot)
                    leaf = self._leaf(leaf_key)
                    return self._proof((leaf.key_hash, leaf.value_hash), siblings)
            # The key's slot holds an internal child (kind BRANCH at width 1): go down.
            child = node.slots[nibble]
            assert child is not None
            packed = _extend(packed, depth, nibble)
            depth += 1
            nk = _be8(child.version) + _BYTE[depth] + packed
            is_leaf = False
            expected = child.hash

    @staticmethod
    def _proof(leaf: tuple[bytes, bytes] | None, top_down: list[bytes]) -> Proof:
        top_down.reverse()
        return Proof(leaf, tuple(top_down))

    def check(self, version: int) -> int:
        """Walk the whole tree at ``version`` and return its number of leaves.

        Decodes every node from the store, recomputes every hash, and checks the
        invariants (no lone leaf under an internal node, leaves where their key
        hash puts them, child versions not newer than their parents); raises
        :class:`TreeError` naming the first node found wrong.
        """
        version = check_version(version, "the version")
        nk = self._root_record(version)
        if not nk:
            return 0
        root_version = int.from_bytes(nk[:8], "big")
        if root_version > version:
            raise TreeError(
                f"the root of version {version} is at {describe_key(nk)}, a later version"
            )
        _, _, count = self._check_node(nk, b"", 0)
        return count

    def _check_node(self, nk: bytes, packed: bytes, depth: int) -> tuple[bytes, bool, int]:
        """``(hash, is_leaf, leaves)`` of the subtree stored at ``nk``, checked."""
        where = describe_key(nk)
        node = self._read(nk)
        if isinstance(node, LeafNode):
            kh = node.key_hash
            if not _on_path(kh, packed, depth):
                raise TreeError(
                    f"tree leaf at {where} holds key hash {kh.hex()}, which is not on its path"
                )
            return node.hash, True, 1
        if depth >= 64:
            raise TreeError(f"tree node at {where} is an internal node below the deepest level")
        node_version = int.from_bytes(nk[:8], "big")
        leaves = 0
        for nibble, child in enumerate(node.slots):
            if child is None:
                continue
            if child.version > node_version:
                raise TreeError(
                    f"tree node at {where} names child {nibble:x} at version {child.version}, "
                    "later than its own"
                )
            child_packed = _extend(packed, depth, nibble)
            child_key = _be8(child.version) + _BYTE[depth + 1] + child_packed
            got, is_leaf, count = self._check_node(child_key, child_packed, depth + 1)
            if is_leaf != child.is_leaf:
                said = "a leaf" if child.is_leaf else "internal"
                raise TreeError(
                    f"tree node at {where} says child {nibble:x} is {said}, "
                    f"but the node at {describe_key(child_key)} is not"
                )
            if got != child.hash:
                raise TreeError(
                    f"tree node at {where} records hash {child.hash.hex()} for child {nibble:x}, "
                    f"but that subtree hashes to {got.hex()}"
                )
            leaves += count
        if leaves < 2:
            raise TreeError(
                f"tree node at {where} is internal but its subtree holds only one leaf "
                "(that leaf belongs in its place)"
            )
        return internal_node_hash(node.slots), False, leaves

    # -- writing --------------------------------------------------------------------------

    def update(
        self,
        version: int,
        changes: Iterable[tuple[bytes, bytes | None]],
        *,
        base_version: int | None,
        checked: bool = False,
    ) -> TreeUpdate:
        """The tree at ``version``: the tree at ``base_version`` (``None``: empty) with
        ``changes`` applied (``(key, value)`` puts, ``(key, None)`` deletes).

        ``checked=True`` says the changes are known to be ``(bytes, bytes | None)``
        pairs with unique keys (a block's write set): their checks are skipped.

        Reads committed nodes through the view and writes nothing: the returned
        :attr:`TreeUpdate.writes` hold the new nodes, the root record of
        ``version`` and a stale record (at ``version``) for each replaced node.
        """
        version = check_version(version, "the version")
        if base_version is not None:
            base_version = check_version(base_version, "the base version")
            if version <= base_version:
                raise ValueError(
                    f"version {version} must be greater than its base version {base_version}"
                )
        prepared = self._prepare_checked(changes) if checked else self._prepare(changes)
        root_record = TREE_ROOT_PREFIX + _be8(version)
        if self.view.get(root_record) is not None:
            raise ValueError(f"the state tree already has version {version}")
        old: Child | None = None
        old_record = b""
        if base_version is not None:
            old_record = self._root_record(base_version)
            if old_record:
                node = self._load(old_record)
                old = Child(
                    int.from_bytes(old_record[:8], "big"), node.hash, isinstance(node, LeafNode)
                )
        batch = _Batch(self, version)
        result = batch.subtree(old, b"", 0, prepared, 0, len(prepared))
        root = batch.place(result, b"", 0)
        if root is None:
            record, root_hash = b"", PLACEHOLDER
        else:
            record, root_hash = _be8(root.version) + _BYTE[0], root.hash
        writes = batch.nodes
        nodes_written = len(writes)
        writes.append((root_record, record))
        if batch.stale:
            writes.append((TREE_STALE_PREFIX + batch.vb, encode_stale_record(batch.stale)))
        return TreeUpdate(
            version=version,
            root_hash=root_hash,
            writes=tuple(writes),
            stale_keys=tuple(batch.stale),
            nodes_written=nodes_written,
        )

    @staticmethod
    def _prepare_checked(changes: Iterable[tuple[bytes, bytes | None]]) -> list[_Change]:
        """:meth:`_prepare` for changes known to be well-formed, with unique keys."""
        prepared: list[_Change] = []
        append = prepared.append
        sha = _sha256
        tag = LEAF_TAG
        for key, value in changes:
            kh = sha(key).digest()
            if value is None:
                append((kh, None))
            else:
                vh = sha(value).digest()
                append((kh, _Leaf(kh, vh, sha(tag + kh + vh).digest(), None)))
        prepared.sort(key=_key_of)
        return prepared

    @staticmethod
    def _prepare(changes: Iterable[tuple[bytes, bytes | None]]) -> list[_Change]:
        """Checked changes as (key hash, new leaf or ``None``), sorted by key hash."""
        seen: set[bytes] = set()
        checked: list[tuple[bytes, bytes | None]] = []
        for change in changes:
            if type(change) is not tuple or len(change) != 2:
                raise TypeError(f"tree changes must be (key, value) pairs, got {change!r:.80}")
            key, value = change
            if type(key) is not bytes:
                raise TypeError(f"tree keys must be bytes, not {type(key).__name__}")
            if key in seen:
                raise ValueError(f"key {key[:40].hex()} is changed twice in one tree update")
            seen.add(key)
            if value is not None and type(value) is not bytes:
                raise TypeError(f"tree values must be bytes or None, not {type(value).__name__}")
            checked.append((key, value))
        return JellyfishTree._prepare_checked(checked)
