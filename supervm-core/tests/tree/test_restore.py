"""TreeRestore: the tree built from sorted leaves, against JellyfishTree.update and a reference."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import canonical_root, stored_tree

import supervm
from supervm.storage import BatchOp
from supervm.tree import PLACEHOLDER, JellyfishTree, TreeError, TreeRestore, verify
from supervm.tree.rebuild import root_of

Leaves = list[tuple[bytes, bytes]]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaves_of(pairs: Sequence[tuple[bytes, bytes]]) -> Leaves:
    return sorted((sha(key), sha(value)) for key, value in pairs)


def restore(version: int, leaves: Leaves, chunk: int = 0) -> tuple[list[BatchOp], bytes]:
    """All the writes and the root of restoring ``leaves``, ``chunk`` at a time (0: one by one)."""
    builder = TreeRestore(version)
    writes: list[BatchOp] = []
    if chunk:
        for i in range(0, len(leaves), chunk):
            writes += builder.add_many(leaves[i : i + chunk])
    else:
        for kh, vh in leaves:
            writes += builder.add(kh, vh)
    assert builder.leaves == len(leaves)
    assert builder.last_key_hash == (leaves[-1][0] if leaves else None)
    rest, root = builder.finish()
    return writes + rest, root


# -- an independent reference from (key hash, value hash) pairs ----------------------------


def nibble(kh: bytes, depth: int) -> int:
    return (kh[depth // 2] >> (0 if depth % 2 else 4)) & 15


def node_key(version: int, kh: bytes, depth: int) -> bytes:
    nibbles = [nibble(kh, d) for d in range(depth)]
    packed = bytearray((depth + 1) // 2)
    for i, n in enumerate(nibbles):
        packed[i // 2] |= n if i % 2 else n << 4
    return version.to_bytes(8, "big") + bytes([depth]) + bytes(packed)


def slots_hash(slots: list[tuple[bytes, bool] | None], lo: int, width: int) -> bytes:
    present = [slot for slot in slots[lo : lo + width] if slot is not None]
    if not present:
        return PLACEHOLDER
    if len(present) == 1 and (present[0][1] or width == 1):
        return present[0][0]
    half = width // 2
    return sha(b"\x01" + slots_hash(slots, lo, half) + slots_hash(slots, lo + half, half))


def reference_build(
    version: int, leaves: Leaves, depth: int, out: list[BatchOp]
) -> tuple[bytes, bool]:
    """Write the subtree of ``leaves`` (sorted, >= 1, sharing ``depth`` nibbles) post-order."""
    if len(leaves) == 1:
        kh, vh = leaves[0]
        out.append((b"t/n/" + node_key(version, kh, depth), b"\x00" + kh + vh))
        return sha(b"\x00" + kh + vh), True
    groups: dict[int, Leaves] = {}
    for kh, vh in leaves:
        groups.setdefault(nibble(kh, depth), []).append((kh, vh))
    slots: list[tuple[bytes, bool] | None] = [None] * 16
    body = b""
    exists = leaf_bits = 0
    for n in sorted(groups):
        child_hash, is_leaf = reference_build(version, groups[n], depth + 1, out)
        slots[n] = (child_hash, is_leaf)
        exists |= 1 << n
        leaf_bits |= is_leaf << n
        body += version.to_bytes(8, "big") + child_hash
    encoded = b"\x01" + exists.to_bytes(2, "big") + leaf_bits.to_bytes(2, "big") + body
    out.append((b"t/n/" + node_key(version, leaves[0][0], depth), encoded))
    return slots_hash(slots, 0, 16), False


def reference_writes(version: int, leaves: Leaves) -> tuple[list[BatchOp], bytes]:
    out: list[BatchOp] = []
    record = b"t/r/" + version.to_bytes(8, "big")
    if not leaves:
        return [(record, b"")], PLACEHOLDER
    root, _ = reference_build(version, leaves, 0, out)
    out.append((record, version.to_bytes(8, "big") + b"\x00"))
    return out, root


def check_in_store(version: int, writes: list[BatchOp], root: bytes, count: int) -> JellyfishTree:
    store = supervm.open_storage("memory://")
    store.write_batch(writes)
    tree = JellyfishTree(store)
    assert tree.check(version) == count
    assert tree.root_hash(version) == root
    data = {k: v for k, v in store.scan(b"") if v is not None}
    stored_root, nodes = stored_tree(data, version)
    assert stored_root == root
    assert len(nodes) == len(writes) - 1  # every node written is reachable
    return tree


# -- crafted key hashes -------------------------------------------------------------------


def crafted(base: bytes, shared: int, tail: int) -> bytes:
    """A key hash sharing its first ``shared`` nibbles with ``base``, the rest from ``tail``."""
    bits = 256 - 4 * shared
    mask = (1 << bits) - 1
    value = (int.from_bytes(base, "big") & ~mask) | (tail & mask)
    return value.to_bytes(32, "big")


@st.composite
def crafted_leaves(draw: st.DrawFn, max_size: int = 40) -> Leaves:
    base = draw(st.binary(min_size=32, max_size=32))
    specs = draw(
        st.lists(
            st.tuples(st.integers(0, 64), st.integers(0, (1 << 256) - 1), st.binary(max_size=3)),
            max_size=max_size,
        )
    )
    found: dict[bytes, bytes] = {}
    for shared, tail, value in specs:
        found.setdefault(crafted(base, shared, tail), sha(value))
    return sorted(found.items())


def long_prefix_leaves() -> Leaves:
    """Key hashes sharing 63, 62, ... nibbles with one another, and a few far away."""
    rng = random.Random(7)
    base = bytes(rng.randrange(256) for _ in range(32))
    hashes = {base}
    for shared in (63, 63, 62, 60, 47, 33, 32, 31, 16, 15, 1, 0):
        hashes.add(crafted(base, shared, rng.getrandbits(256)))
    hashes.add(base[:-1] + bytes([base[-1] ^ 0x01]))  # differs in the last nibble only
    return sorted((kh, sha(kh)) for kh in hashes)


# -- agreement with JellyfishTree.update ----------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 3, 16, 17, 300, 3000])
def test_same_writes_as_update(count: int) -> None:
    rng = random.Random(count)
    pairs = [(rng.randbytes(rng.randrange(1, 20)), rng.randbytes(4)) for _ in range(count)]
    pairs = list(dict(pairs).items())
    update = JellyfishTree(supervm.open_storage("memory://")).update(5, pairs, base_version=None)
    leaves = leaves_of(pairs)
    for chunk in (0, 1, 7, 1000):
        writes, root = restore(5, leaves, chunk)
        assert tuple(writes) == update.writes
        assert root == update.root_hash == root_of(pairs)
    writes, root = restore(5, leaves, 64)
    assert reference_writes(5, leaves) == (writes, root)
    tree = check_in_store(5, writes, root, len(pairs))
    absent = [b"absent-%d" % i for i in range(20)]
    for key, value in pairs[:50]:
        assert verify(root, key, value, tree.prove(key, 5))
        assert not verify(root, key, value + b"!", tree.prove(key, 5))
    for key in absent:
        assert verify(root, key, None, tree.prove(key, 5))


def test_empty() -> None:
    builder = TreeRestore(3)
    assert builder.leaves == 0
    assert builder.last_key_hash is None
    assert builder.add_many([]) == []
    writes, root = builder.finish()
    assert writes == [(b"t/r/" + (3).to_bytes(8, "big"), b"")]
    assert root == PLACEHOLDER == root_of([])
    tree = check_in_store(3, writes, root, 0)
    assert verify(root, b"k", None, tree.prove(b"k", 3))


def test_one_leaf_is_the_root() -> None:
    kh, vh = sha(b"alice"), sha(b"1")
    builder = TreeRestore(9)
    assert builder.add(kh, vh) == []  # its depth is not known until the next leaf or the end
    writes, root = builder.finish()
    vb = (9).to_bytes(8, "big")
    assert writes == [(b"t/n/" + vb + b"\x00", b"\x00" + kh + vh), (b"t/r/" + vb, vb + b"\x00")]
    assert root == sha(b"\x00" + kh + vh) == root_of([(b"alice", b"1")])
    tree = check_in_store(9, writes, root, 1)
    assert verify(root, b"alice", b"1", tree.prove(b"alice", 9))
    assert verify(root, b"bob", None, tree.prove(b"bob", 9))


def test_two_leaves() -> None:
    pairs = [(b"alice", b"1"), (b"bob", b"2")]
    leaves = leaves_of(pairs)
    builder = TreeRestore(1)
    assert builder.add(*leaves[0]) == []
    first = builder.add(*leaves[1])
    assert first == [
        (b"t/n/" + node_key(1, leaves[0][0], 1), b"\x00" + leaves[0][0] + leaves[0][1])
    ]
    rest, root = builder.finish()
    update = JellyfishTree(supervm.open_storage("memory://")).update(1, pairs, base_version=None)
    assert tuple(first + rest) == update.writes
    assert root == root_of(pairs)


def test_worked_example_of_the_docs() -> None:
    pairs = [(b"alice", b"1"), (b"bob", b"2"), (b"heidi", b"3")]
    writes, root = restore(1, leaves_of(pairs))
    assert root.hex() == "53b93a32b3b60c53256cdbee511726b5270af307f4859957c6d56cc380a96630"
    assert [k.hex() for k, _ in writes] == [
        b"t/n/".hex() + "0000000000000001" + "01" + "00",
        b"t/n/".hex() + "0000000000000001" + "01" + "20",
        b"t/n/".hex() + "0000000000000001" + "01" + "80",
        b"t/n/".hex() + "0000000000000001" + "00",
        b"t/r/".hex() + "0000000000000001",
    ]


def test_largest_version() -> None:
    version = (1 << 64) - 1
    leaves = leaves_of([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    assert restore(version, leaves) == reference_writes(version, leaves)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        TreeRestore(1 << 64)
    with pytest.raises(TypeError, match="int"):
        TreeRestore("1")  # type: ignore[arg-type]


# -- crafted hashes and long shared prefixes --------------------------------------------------


def test_long_shared_prefixes() -> None:
    leaves = long_prefix_leaves()
    writes, root = restore(2, leaves, 3)
    assert (writes, root) == reference_writes(2, leaves)
    assert root == canonical_root(dict(leaves))
    check_in_store(2, writes, root, len(leaves))
    # The two hashes that differ only in the last nibble sit at depth 64.
    assert any(key[4 + 8] == 64 for key, _ in writes[:-1])


def test_two_leaves_sharing_63_nibbles() -> None:
    a = bytes(range(31)) + b"\x10"
    b = a[:-1] + b"\x1f"
    leaves = [(a, sha(b"a")), (b, sha(b"b"))]
    writes, root = restore(4, leaves)
    assert (writes, root) == reference_writes(4, leaves)
    assert len(writes) == 2 + 64 + 1  # two leaves, an internal node at each depth 0..63, root
    assert root == canonical_root(dict(leaves))
    check_in_store(4, writes, root, 2)


@settings(max_examples=150, deadline=None)
@given(crafted_leaves(), st.integers(0, 9))
def test_crafted_hashes_match_the_reference(leaves: Leaves, chunk: int) -> None:
    writes, root = restore(6, leaves, chunk)
    assert (writes, root) == reference_writes(6, leaves)
    assert root == canonical_root(dict(leaves))
    check_in_store(6, writes, root, len(leaves))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=4)), max_size=60))
def test_random_keys_match_update_and_prove(pairs: list[tuple[bytes, bytes]]) -> None:
    pairs = list(dict(pairs).items())
    update = JellyfishTree(supervm.open_storage("memory://")).update(8, pairs, base_version=None)
    writes, root = restore(8, leaves_of(pairs), 5)
    assert tuple(writes) == update.writes
    assert root == update.root_hash == root_of(pairs)
    tree = check_in_store(8, writes, root, len(pairs))
    for key, value in pairs:
        assert verify(root, key, value, tree.prove(key, 8))
    assert verify(root, b"\xffabsent", None, tree.prove(b"\xffabsent", 8)) or any(
        key == b"\xffabsent" for key, _ in pairs
    )


def test_state_stays_bounded() -> None:
    rng = random.Random(3)
    base = rng.randbytes(32)
    # Many leaves whose hashes share long prefixes: the open path is at most 64 nodes.
    hashes = sorted(
        {crafted(base, rng.randrange(40, 64), rng.getrandbits(256)) for _ in range(3000)}
    )
    builder = TreeRestore(1)
    largest = 0
    for kh in hashes:
        builder.add(kh, kh)
        largest = max(largest, len(builder.state()))
    assert largest <= 22 + 64 + 64 * (4 + 15 * 32)


# -- resuming ---------------------------------------------------------------------------------


def test_resume_at_every_split_point() -> None:
    leaves = long_prefix_leaves() + leaves_of([(bytes([i]), b"v") for i in range(30)])
    leaves = sorted(dict(leaves).items())
    whole = restore(3, leaves)
    for split in range(len(leaves) + 1):
        builder = TreeRestore(3)
        writes = builder.add_many(leaves[:split])
        state = builder.state()
        resumed = TreeRestore.resume(3, state)
        assert resumed.state() == state  # canonical
        assert resumed.leaves == split
        assert resumed.last_key_hash == (leaves[split - 1][0] if split else None)
        writes += resumed.add_many(leaves[split:])
        rest, root = resumed.finish()
        assert (writes + rest, root) == whole


@settings(max_examples=60, deadline=None)
@given(crafted_leaves(max_size=25), st.data())
def test_resume_after_every_leaf(leaves: Leaves, data: st.DataObject) -> None:
    whole = restore(11, leaves)
    builder = TreeRestore(11)
    writes: list[BatchOp] = []
    i = 0
    while i < len(leaves):
        step = data.draw(st.integers(1, 4))
        writes += builder.add_many(iter(leaves[i : i + step]))
        builder = TreeRestore.resume(11, builder.state())
        i += step
    rest, root = builder.finish()
    assert (writes + rest, root) == whole


# -- refused input ----------------------------------------------------------------------------


def test_out_of_order_and_duplicates_are_refused() -> None:
    a, b, c = sorted(sha(bytes([i])) for i in range(3))
    builder = TreeRestore(1)
    builder.add(b, a)
    with pytest.raises(TreeError, match="leaves out of order"):
        builder.add(a, a)
    with pytest.raises(TreeError, match="duplicate key hash " + b.hex()):
        builder.add(b, c)
    before = builder.state()
    # A refused chunk adds nothing, even the leaves before the bad one.
    with pytest.raises(TreeError, match="leaves out of order"):
        builder.add_many([(c, a), (a, a)])
    with pytest.raises(TreeError, match="duplicate"):
        builder.add_many([(c, a), (c, a)])
    assert builder.state() == before
    assert builder.leaves == 1
    assert builder.last_key_hash == b
    writes = builder.add(c, a)
    rest, root = builder.finish()
    assert (writes + rest, root) == restore(1, [(b, a), (c, a)])


@pytest.mark.parametrize(
    ("kh", "vh", "error", "message"),
    [
        (b"x" * 31, b"v" * 32, TreeError, "key hash must be 32 bytes, got 31"),
        (b"x" * 33, b"v" * 32, TreeError, "key hash must be 32 bytes, got 33"),
        (b"x" * 32, b"v" * 31, TreeError, "value hash must be 32 bytes, got 31"),
        (b"x" * 32, b"", TreeError, "value hash must be 32 bytes, got 0"),
        ("x" * 32, b"v" * 32, TypeError, "key hash must be bytes, not str"),
        (b"x" * 32, bytearray(32), TypeError, "value hash must be bytes, not bytearray"),
        (None, b"v" * 32, TypeError, "key hash must be bytes, not NoneType"),
    ],
)
def test_malformed_leaves_are_refused(kh: object, vh: object, error: type, message: str) -> None:
    for first in (True, False):
        builder = TreeRestore(1)
        if not first:
            builder.add(b"\x00" * 32, b"v" * 32)
        before = builder.state()
        with pytest.raises(error, match=message):
            builder.add(kh, vh)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            builder.add_many([(b"\x00" * 31 + b"\x01", b"v" * 32), (kh, vh)])  # type: ignore[list-item]
        assert builder.state() == before


@pytest.mark.parametrize("item", [b"x" * 64, (b"x" * 32,), (b"x" * 32, b"v" * 32, b""), 5])
def test_leaves_that_are_not_pairs_are_refused(item: object) -> None:
    for first in (True, False):
        builder = TreeRestore(1)
        if not first:
            builder.add(b"\x00" * 32, b"v" * 32)
        with pytest.raises(TypeError, match="tuples"):
            builder.add_many([item])  # type: ignore[list-item]


def test_nothing_after_finish() -> None:
    builder = TreeRestore(1)
    builder.add(b"\x01" * 32, b"v" * 32)
    builder.finish()
    assert builder.finished
    with pytest.raises(TreeError, match="finished"):
        builder.add(b"\x02" * 32, b"v" * 32)
    with pytest.raises(TreeError, match="finished"):
        builder.add_many([])
    with pytest.raises(TreeError, match="finished"):
        builder.finish()
    with pytest.raises(TreeError, match="finished"):
        builder.state()
    assert builder.leaves == 1


def valid_state() -> bytes:
    builder = TreeRestore(5)
    builder.add_many(long_prefix_leaves()[:8])
    return builder.state()


def test_malformed_state_is_refused() -> None:
    state = valid_state()
    TreeRestore.resume(5, state)
    with pytest.raises(TreeError, match="for version 5, not version 6"):
        TreeRestore.resume(6, state)
    with pytest.raises(TypeError, match="bytes"):
        TreeRestore.resume(5, bytearray(state))  # type: ignore[arg-type]
    for cut in range(len(state)):
        with pytest.raises(TreeError, match="malformed tree restore state"):
            TreeRestore.resume(5, state[:cut])
    with pytest.raises(TreeError, match="trailing bytes"):
        TreeRestore.resume(5, state + b"\x00")
    with pytest.raises(TreeError, match="header"):
        TreeRestore.resume(5, b"JMTR" + state[4:])
    with pytest.raises(TreeError, match="unknown format 2"):
        TreeRestore.resume(5, state[:4] + b"\x02" + state[5:])
    head = state[:13]
    empty = head + bytes(8) + b"\x00"
    assert TreeRestore.resume(5, empty).leaves == 0
    with pytest.raises(TreeError, match="no leaves"):
        TreeRestore.resume(5, empty + b"\x00")
    with pytest.raises(TreeError, match="no leaves"):
        TreeRestore.resume(5, head + bytes(8) + b"\x01")
    pending = b"\x10" * 32 + b"v" * 32
    one = head + (1).to_bytes(8, "big") + b"\x00" + pending
    assert TreeRestore.resume(5, one).last_key_hash == b"\x10" * 32
    with pytest.raises(TreeError, match="single leaf"):
        TreeRestore.resume(5, head + (1).to_bytes(8, "big") + b"\x01" + pending + bytes(4))
    with pytest.raises(TreeError, match="no open root"):
        TreeRestore.resume(5, head + (2).to_bytes(8, "big") + b"\x00" + pending)
    with pytest.raises(TreeError, match="at most 64"):
        TreeRestore.resume(5, head + (2).to_bytes(8, "big") + b"\x41" + pending)
    two = head + (2).to_bytes(8, "big") + b"\x01" + pending
    child = b"h" * 32
    # Pending nibble 1 at depth 0: a child may only be in slot 0.
    assert TreeRestore.resume(5, two + (0x0001_0001).to_bytes(4, "big") + child).leaves == 2
    with pytest.raises(TreeError, match="at or after the pending leaf's nibble"):
        TreeRestore.resume(5, two + (0x0002_0002).to_bytes(4, "big") + child)
    with pytest.raises(TreeError, match="does not have as leaves"):
        TreeRestore.resume(5, two + (0x0001_0003).to_bytes(4, "big") + child)
    with pytest.raises(TreeError, match="no children"):
        TreeRestore.resume(5, two + bytes(4))
    with pytest.raises(TreeError, match="placeholder"):
        TreeRestore.resume(5, two + (0x0001_0001).to_bytes(4, "big") + PLACEHOLDER)
