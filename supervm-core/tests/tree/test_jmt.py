"""The Jellyfish tree against the canonical root, its node layout, stale records and errors."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_root, stored_tree

from supervm.memory import MemoryStorage
from supervm.tree import (
    PLACEHOLDER,
    Child,
    InternalNode,
    JellyfishTree,
    LeafNode,
    NodeKey,
    TreeError,
    TreeUpdate,
    decode_node,
    decode_stale_record,
    internal_hash,
    key_hash,
    leaf_hash,
    node_storage_key,
    root_record_key,
    stale_record_key,
    value_hash,
)

Changes = Iterable[tuple[bytes, bytes | None]]


def commit(
    store: MemoryStorage, tree: JellyfishTree, version: int, changes: Changes, base: int | None
) -> TreeUpdate:
    update = tree.update(version, changes, base_version=base)
    store.write_batch(update.writes)
    return update


def contents(store: MemoryStorage) -> dict[bytes, bytes]:
    return dict(store.scan(b""))


def leaf(key: bytes, value: bytes) -> bytes:
    return leaf_hash(key_hash(key), value_hash(value))


def find_keys(
    related: Callable[[bytes, bytes], bool], stem: bytes = b"key-"
) -> tuple[bytes, bytes]:
    """Two keys ``stem + number`` whose hashes are ``related``."""
    found: list[bytes] = []
    for i in itertools.count():
        key = stem + str(i).encode()
        for other in found:
            if related(key_hash(other), key_hash(key)):
                return other, key
        found.append(key)
        if len(found) > 64:
            found.pop(0)
    raise AssertionError("unreachable")


def sharing(nibbles: int) -> tuple[bytes, bytes]:
    """Two keys whose hashes share exactly their first ``nibbles`` nibbles."""
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        key = b"share-" + str(i).encode()
        digest = key_hash(key).hex()
        other = seen.get(digest[:nibbles])
        if other is not None and key_hash(other).hex()[nibbles] != digest[nibbles]:
            return other, key
        seen.setdefault(digest[:nibbles], key)
    raise AssertionError("unreachable")


@pytest.fixture
def store() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def tree(store: MemoryStorage) -> JellyfishTree:
    return JellyfishTree(store)


# -- small trees, by hand -----------------------------------------------------------------


def test_empty_tree(store: MemoryStorage, tree: JellyfishTree) -> None:
    update = commit(store, tree, 0, [], None)
    assert update.root_hash == PLACEHOLDER
    assert update.writes == ((root_record_key(0), b""),)
    assert update.stale == ()
    assert update.nodes_written == 0
    assert tree.root_hash(0) == PLACEHOLDER
    assert tree.root_key(0) is None
    assert tree.has_version(0)
    assert not tree.has_version(1)
    assert tree.check(0) == 0
    assert tree.get_value_hash(b"k", 0) is None


def test_unknown_versions(tree: JellyfishTree) -> None:
    for read in (tree.root_key, tree.root_hash, tree.check):
        with pytest.raises(TreeError, match="no root recorded for version 3"):
            read(3)
    with pytest.raises(TreeError, match="version 3"):
        tree.prove(b"k", 3)
    with pytest.raises(TreeError, match="version 3"):
        tree.get_value_hash(b"k", 3)


def test_single_key(store: MemoryStorage, tree: JellyfishTree) -> None:
    update = commit(store, tree, 1, [(b"alice", b"100")], None)
    assert update.root_hash == leaf(b"alice", b"100") == reference_root({b"alice": b"100"})
    assert tree.root_key(1) == NodeKey(1, ())
    assert update.nodes_written == 1
    stored = store.get(node_storage_key(NodeKey(1, ())))
    assert stored == b"\x00" + key_hash(b"alice") + value_hash(b"100")
    assert store.get(root_record_key(1)) == NodeKey(1, ()).encode()
    assert tree.check(1) == 1
    assert tree.get_value_hash(b"alice", 1) == value_hash(b"100")
    assert tree.get_value_hash(b"bob", 1) is None


def test_two_keys_differing_in_the_first_bit(store: MemoryStorage, tree: JellyfishTree) -> None:
    low, high = find_keys(lambda a, b: (a[0] >> 7) != (b[0] >> 7))
    if key_hash(low)[0] >> 7:
        low, high = high, low
    update = commit(store, tree, 1, [(high, b"h"), (low, b"l")], None)
    assert update.root_hash == internal_hash(leaf(low, b"l"), leaf(high, b"h"))
    assert update.root_hash == reference_root({low: b"l", high: b"h"})
    root = decode_node(store.get(node_storage_key(NodeKey(1, ()))) or b"")
    assert isinstance(root, InternalNode)
    assert dict(root.children) == {
        key_hash(low)[0] >> 4: Child(1, leaf(low, b"l"), True),
        key_hash(high)[0] >> 4: Child(1, leaf(high, b"h"), True),
    }
    assert update.nodes_written == 3
    assert tree.check(1) == 2


@pytest.mark.parametrize("shared", [1, 2, 5])
def test_keys_sharing_a_long_prefix(store: MemoryStorage, tree: JellyfishTree, shared: int) -> None:
    a, b = sharing(shared)
    state = {a: b"1", b: b"2"}
    update = commit(store, tree, 4, state.items(), None)
    assert update.root_hash == reference_root(state)
    assert tree.check(4) == 2
    # A chain of internal nodes with one internal child each, down to the node holding both.
    path = tuple(int(c, 16) for c in key_hash(a).hex()[:shared])
    for depth in range(shared):
        node = decode_node(store.get(node_storage_key(NodeKey(4, path[:depth]))) or b"")
        assert isinstance(node, InternalNode)
        assert list(node.children) == [path[depth]]
        assert not node.children[path[depth]].is_leaf
    bottom = decode_node(store.get(node_storage_key(NodeKey(4, path))) or b"")
    assert isinstance(bottom, InternalNode)
    assert len(bottom.children) == 2
    for key in state:
        at = (*path, int(key_hash(key).hex()[shared], 16))
        assert decode_node(store.get(node_storage_key(NodeKey(4, at))) or b"") == LeafNode(
            key_hash(key), value_hash(state[key])
        )
    assert update.nodes_written == shared + 3


def test_deleting_down_to_one_key_collapses_to_a_leaf(
    store: MemoryStorage, tree: JellyfishTree
) -> None:
    a, b = sharing(5)
    others = [b"x", b"y", b"z"]
    commit(store, tree, 1, [(a, b"1"), (b, b"2"), *((k, k) for k in others)], None)
    update = commit(store, tree, 2, [(k, None) for k in others], 1)
    assert update.root_hash == reference_root({a: b"1", b: b"2"})
    assert tree.check(2) == 2
    update = commit(store, tree, 3, [(b, None)], 2)
    assert update.root_hash == leaf(a, b"1")
    assert tree.root_key(3) == NodeKey(3, ())
    assert tree.check(3) == 1
    # The leaf moved up from depth 6: it and the whole chain above it went stale.
    old_leaf = NodeKey(1, tuple(int(c, 16) for c in key_hash(a).hex()[:6]))
    assert old_leaf in update.stale
    assert len(update.stale) == 8  # 6 internal nodes, two leaves
    # And back again: the tree does not depend on the history.
    update = commit(store, tree, 4, [(b, b"2"), *((k, k) for k in others)], 3)
    assert update.root_hash == tree.root_hash(1)
    assert tree.check(4) == 5


def test_a_leaf_moved_up_one_level(store: MemoryStorage, tree: JellyfishTree) -> None:
    a, b = sharing(1)
    c = next(
        k for k in (b"c%d" % i for i in range(99)) if key_hash(k)[0] >> 4 != key_hash(a)[0] >> 4
    )
    commit(store, tree, 1, [(a, b"a"), (b, b"b"), (c, b"c")], None)
    update = commit(store, tree, 2, [(b, None)], 1)
    assert update.root_hash == reference_root({a: b"a", c: b"c"})
    nibble = key_hash(a)[0] >> 4
    assert set(update.stale) == {
        NodeKey(1, ()),
        NodeKey(1, (nibble,)),
        NodeKey(1, (nibble, key_hash(a)[0] & 15)),
        NodeKey(1, (nibble, key_hash(b)[0] & 15)),
    }
    assert (
        store.get(node_storage_key(NodeKey(2, (nibble,))))
        == LeafNode(key_hash(a), value_hash(b"a")).encode()
    )
    assert tree.check(2) == 2


def test_stale_records_of_a_changed_key(store: MemoryStorage, tree: JellyfishTree) -> None:
    state = {b"k%d" % i: b"v%d" % i for i in range(300)}
    commit(store, tree, 1, state.items(), None)
    target = b"k17"
    on_path = []
    node_key: NodeKey | None = tree.root_key(1)
    while node_key is not None:
        on_path.append(node_key)
        node = decode_node(store.get(node_storage_key(node_key)) or b"")
        if isinstance(node, LeafNode):
            break
        nibble = int(key_hash(target).hex()[len(node_key.path)], 16)
        child = node.children[nibble]
        node_key = NodeKey(child.version, (*node_key.path, nibble))
    assert len(on_path) >= 3
    update = commit(store, tree, 2, [(target, b"new")], 1)
    assert set(update.stale) == set(on_path)
    assert update.nodes_written == len(on_path)
    stale_writes = {key: value for key, value in update.writes if key.startswith(b"t/s/")}
    assert list(stale_writes) == [stale_record_key(2)]
    listed = decode_stale_record(stale_writes[stale_record_key(2)])
    assert sorted(listed) == sorted(key.encode() for key in on_path)
    _, reachable = stored_tree(contents(store), 2)
    assert not {key.encode() for key in on_path} & reachable.keys()
    # The old version is intact.
    assert tree.root_hash(1) == reference_root(state)
    assert tree.check(1) == 300
    state[target] = b"new"
    assert tree.root_hash(2) == reference_root(state)


def test_an_update_that_changes_nothing(store: MemoryStorage, tree: JellyfishTree) -> None:
    commit(store, tree, 1, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], None)
    root = store.get(root_record_key(1))
    for version, changes in (
        (2, []),
        (3, [(b"a", b"1")]),
        (4, [(b"absent", None), (b"b", b"2")]),
    ):
        update = commit(store, tree, version, changes, version - 1)
        assert update.writes == ((root_record_key(version), root),)
        assert update.stale == ()
        assert update.nodes_written == 0
        assert update.root_hash == tree.root_hash(1)
        assert tree.root_key(version) == NodeKey(1, ())
    update = commit(store, tree, 5, [(b"a", b"1")], None)
    assert update.nodes_written == 1
    assert update.root_hash == leaf(b"a", b"1")
    empty = commit(store, tree, 6, [], None)
    assert empty.writes == ((root_record_key(6), b""),)
    gone = commit(store, tree, 7, [(b"a", None), (b"b", None), (b"c", None)], 4)
    assert gone.root_hash == PLACEHOLDER
    assert store.get(root_record_key(7)) == b""
    assert len(gone.stale) == 4
    assert commit(store, tree, 8, [(b"x", None)], 7).writes == ((root_record_key(8), b""),)


def test_a_new_tree_over_the_same_store_reads_the_same(store: MemoryStorage) -> None:
    tree = JellyfishTree(store, cache_size=0)
    state = {b"%d" % i: b"x" * (i % 7) for i in range(200)}
    commit(store, tree, 1, state.items(), None)
    commit(store, tree, 2, [(b"5", None), (b"new", b"")], 1)
    other = JellyfishTree(store, cache_size=3)
    for version in (1, 2):
        assert other.root_hash(version) == tree.root_hash(version)
        assert other.check(version) == tree.check(version)
    assert other.get_value_hash(b"new", 2) == value_hash(b"")
    assert other.get_value_hash(b"5", 2) is None
    assert other.get_value_hash(b"5", 1) == value_hash(b"x" * 5)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "changes", "base", "error", "message"),
    [
        (2, [], 2, ValueError, "greater than its base version 2"),
        (1, [], 2, ValueError, "greater than its base version 2"),
        (5, [], 4, TreeError, "no root recorded for version 4"),
        (3, [(b"a", b"1"), (b"a", None)], 2, ValueError, "changed twice"),
        (3, [("a", b"1")], 2, TypeError, "keys must be bytes"),
        (3, [(b"a", "1")], 2, TypeError, "values must be bytes or None"),
        (3, [(b"a", bytearray(b"1"))], 2, TypeError, "values must be bytes or None"),
        (3, [(b"a",)], 2, TypeError, r"\(key, value\) pairs"),
        (3, [[b"a", b"1"]], 2, TypeError, r"\(key, value\) pairs"),
        (2, [(b"a", b"1")], 1, ValueError, "already has version 2"),
        (-1, [], None, ValueError, "0..2"),
        (True, [], None, TypeError, "must be an int"),
        (3, [], "2", TypeError, "must be an int"),
    ],
)
def test_update_errors_write_nothing(
    store: MemoryStorage,
    tree: JellyfishTree,
    version: int,
    changes: Changes,
    base: int | None,
    error: type[Exception],
    message: str,
) -> None:
    commit(store, tree, 1, [(b"a", b"0"), (b"b", b"0")], None)
    commit(store, tree, 2, [(b"c", b"0")], 1)
    before = contents(store)
    with pytest.raises(error, match=message):
        tree.update(version, changes, base_version=base)
    assert contents(store) == before
    assert tree.check(2) == 3


def _corrupt(store: MemoryStorage, key: NodeKey, data: bytes | None) -> None:
    store.write_batch([(node_storage_key(key), data)])


def test_check_finds_corruption(store: MemoryStorage) -> None:
    tree = JellyfishTree(store, cache_size=0)
    a, b = sharing(1)
    c = next(
        k for k in (b"c%d" % i for i in range(99)) if key_hash(k)[0] >> 4 != key_hash(a)[0] >> 4
    )
    commit(store, tree, 1, [(a, b"a"), (b, b"b"), (c, b"c")], None)
    nibble_a, nibble_c = key_hash(a)[0] >> 4, key_hash(c)[0] >> 4
    root = decode_node(store.get(node_storage_key(NodeKey(1))) or b"")
    assert isinstance(root, InternalNode)
    good = contents(store)

    def restore() -> None:
        store.write_batch(good.items())

    _corrupt(store, NodeKey(1, (nibble_c,)), LeafNode(key_hash(c), value_hash(b"x")).encode())
    with pytest.raises(
        TreeError, match=rf"at version 1, the root path records hash .* child {nibble_c:x}"
    ):
        tree.check(1)
    restore()
    _corrupt(store, NodeKey(1, (nibble_a,)), None)
    with pytest.raises(TreeError, match=f"version 1, path {nibble_a:x} is missing"):
        tree.check(1)
    restore()
    _corrupt(store, NodeKey(1, (nibble_c,)), b"\x00" + bytes(10))
    with pytest.raises(TreeError, match=f"path {nibble_c:x} is malformed: an encoded leaf has 65"):
        tree.check(1)
    restore()
    # A leaf off its path: swap c's leaf for one whose key hash starts with another nibble.
    _corrupt(store, NodeKey(1, (nibble_c,)), LeafNode(key_hash(a), value_hash(b"c")).encode())
    with pytest.raises(TreeError, match="not on its path"):
        tree.check(1)
    restore()
    # A parent that calls an internal child a leaf.
    flipped = dict(root.children)
    flipped[nibble_a] = flipped[nibble_a]._replace(is_leaf=True)
    _corrupt(store, NodeKey(1), InternalNode(flipped).encode())
    with pytest.raises(TreeError, match=f"says child {nibble_a:x} is a leaf"):
        tree.check(1)
    with pytest.raises(TreeError, match="is an internal node but its parent says it is a leaf"):
        tree.get_value_hash(a, 1)
    restore()
    # A child newer than its parent.
    newer = dict(root.children)
    newer[nibble_c] = newer[nibble_c]._replace(version=2)
    _corrupt(store, NodeKey(1), InternalNode(newer).encode())
    with pytest.raises(TreeError, match=f"child {nibble_c:x} at version 2, later than its own"):
        tree.check(1)
    restore()
    store.write_batch([(root_record_key(1), b"\x00" * 9 + b"\x01")])
    with pytest.raises(TreeError, match="root record of version 1 is malformed"):
        tree.check(1)
    restore()
    assert tree.check(1) == 3


# -- against the reference, at random ----------------------------------------------------

small_keys = st.sampled_from([bytes([i]) for i in range(24)])
any_keys = st.binary(min_size=1, max_size=40)
values = st.binary(max_size=6)


def histories(keys: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[dict[bytes, bytes | None]]]:
    return st.lists(st.dictionaries(keys, st.none() | values, max_size=14), min_size=1, max_size=7)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(histories(small_keys), histories(any_keys)),
    st.lists(st.integers(1, 3), min_size=7, max_size=7),
    st.randoms(use_true_random=False),
)
def test_every_version_matches_the_reference(
    batches: list[dict[bytes, bytes | None]], gaps: list[int], rnd: random.Random
) -> None:
    store = MemoryStorage()
    tree = JellyfishTree(store)
    state: dict[bytes, bytes] = {}
    history: list[tuple[int, dict[bytes, bytes]]] = []
    base: int | None = None
    version = -1
    for batch, gap in zip(batches, gaps, strict=False):
        version += gap
        before = contents(store)
        update = tree.update(version, list(batch.items()), base_version=base)
        assert contents(store) == before
        store.write_batch(update.writes)
        for key, value in batch.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        data = contents(store)
        root, nodes = stored_tree(data, version)
        expected = reference_root(state)
        assert update.root_hash == root == expected
        assert tree.root_hash(version) == JellyfishTree(store).root_hash(version) == expected
        assert tree.check(version) == len(state)
        # Stale records name exactly the nodes of the base tree the new one no longer has;
        # new nodes are exactly the nodes the new tree has and the base tree had not.
        old_nodes = stored_tree(data, base)[1] if base is not None else {}
        stale = {key.encode() for key in update.stale}
        assert len(stale) == len(update.stale)
        assert stale == old_nodes.keys() - nodes.keys()
        new = {key for key in nodes if int.from_bytes(key[:8], "big") == version}
        assert new == nodes.keys() - old_nodes.keys()
        assert update.nodes_written == len(new)
        writes = dict(update.writes)
        assert len(writes) == len(update.writes) == len(new) + 1 + (1 if stale else 0)
        assert {key[4:] for key in writes if key.startswith(b"t/n/")} == new
        if update.stale:
            record = writes[stale_record_key(version)]
            assert decode_stale_record(record) == [key.encode() for key in update.stale]
        else:
            assert stale_record_key(version) not in writes
        assert root_record_key(version) in writes
        for key in batch:
            got = tree.get_value_hash(key, version)
            assert got == (value_hash(state[key]) if key in state else None)
        history.append((version, dict(state)))
        for old_version, old_state in history:
            assert tree.root_hash(old_version) == reference_root(old_state)
        base = version
    assert base is not None
    for old_version, old_state in history:
        assert JellyfishTree(store).check(old_version) == len(old_state)

    # The same state in one update from empty.
    fresh = MemoryStorage()
    fresh_tree = JellyfishTree(fresh)
    assert commit(fresh, fresh_tree, 0, state.items(), None).root_hash == tree.root_hash(base)

    # The same state in a shuffled order over several updates, with a detour.
    items: list[tuple[bytes, bytes | None]] = list(state.items())
    rnd.shuffle(items)
    cuts = sorted(rnd.randint(0, len(items)) for _ in range(3))
    chunks = [items[i:j] for i, j in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    other = MemoryStorage()
    other_tree = JellyfishTree(other)
    junk = [b"junk-%d" % i for i in range(3)]
    last = len(chunks) - 1
    for v, chunk in enumerate(chunks):
        extra: list[tuple[bytes, bytes | None]] = []
        if v == 0:
            extra = [(key, b"") for key in junk]
        elif v == last:
            extra = [(key, None) for key in junk]
        commit(other, other_tree, v, chunk + extra, v - 1 if v else None)
    assert other_tree.root_hash(last) == tree.root_hash(base)
    assert other_tree.check(last) == len(state)


# -- speed --------------------------------------------------------------------------------


@pytest.mark.slow
def test_update_timing() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(20) for _ in range(100_000)]
    store = MemoryStorage()
    tree = JellyfishTree(store)
    start = time.perf_counter()
    commit(store, tree, 1, [(key, rng.randbytes(32)) for key in keys], None)
    built = time.perf_counter() - start
    picked = rng.sample(keys, 8000)
    changes: list[tuple[bytes, bytes | None]] = [(k, rng.randbytes(32)) for k in picked[:6000]]
    changes += [(k, None) for k in picked[6000:]]
    changes += [(rng.randbytes(20), rng.randbytes(32)) for _ in range(2000)]
    rng.shuffle(changes)
    cold = JellyfishTree(store)
    start = time.perf_counter()
    update = cold.update(2, changes, base_version=1)
    took = time.perf_counter() - start
    store.write_batch(update.writes)
    proof = cold.prove(keys[0], 2)
    print(
        f"\n100,000 keys built in {built:.2f} s; 10,000 changes in {took:.3f} s "
        f"({update.nodes_written} nodes written, {len(update.stale)} stale); "
        f"proof: {len(proof.siblings)} siblings, {len(proof.encode())} bytes"
    )
    assert cold.root_hash(2) == update.root_hash


@settings(max_examples=60, deadline=None)
@given(
    state=st.dictionaries(st.binary(min_size=1, max_size=24), st.binary(max_size=16), max_size=60)
)
def test_the_from_scratch_rebuild_equals_the_naive_reference(state: dict[bytes, bytes]) -> None:
    from supervm.tree.rebuild import root_of

    assert root_of(state) == reference_root(state)
    assert root_of(list(state.items())) == reference_root(state)


@settings(max_examples=40, deadline=None)
@given(
    first=st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=8), max_size=40),
    second=st.dictionaries(
        st.binary(min_size=1, max_size=8), st.none() | st.binary(max_size=8), max_size=40
    ),
)
def test_checked_changes_give_the_same_update(
    first: dict[bytes, bytes], second: dict[bytes, bytes | None]
) -> None:
    results = []
    for checked in (False, True):
        store = MemoryStorage()
        tree = JellyfishTree(store)
        one = tree.update(1, sorted(first.items()), base_version=None, checked=checked)
        store.write_batch(one.writes)
        two = tree.update(2, sorted(second.items()), base_version=1, checked=checked)
        results.append((one.writes, two.writes, two.root_hash))
    assert results[0] == results[1]
