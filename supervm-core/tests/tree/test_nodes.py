"""Node keys, nodes, their encodings, the hash inside an internal node, and storage keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import canonical_root

from supervm.tree import (
    PLACEHOLDER,
    Child,
    InternalNode,
    LeafNode,
    NodeKey,
    TreeError,
    decode_node,
    decode_stale_record,
    encode_stale_record,
    internal_hash,
    leaf_hash,
    node_storage_key,
    root_record_key,
    stale_record_key,
)
from supervm.tree.node import BRANCH, EMPTY, LEAF, internal_node_hash, node_levels

nibbles = st.integers(0, 15)
paths = st.lists(nibbles, max_size=64).map(tuple)
versions = st.integers(0, 2**64 - 1)
digests = st.binary(min_size=32, max_size=32).filter(lambda d: d != PLACEHOLDER)
children = st.builds(Child, versions, digests, st.booleans())
child_maps = st.dictionaries(nibbles, children, min_size=1).filter(
    lambda m: len(m) > 1 or not next(iter(m.values())).is_leaf
)


def h(n: int) -> bytes:
    return bytes([n]) * 32


# -- node keys ----------------------------------------------------------------------------


def test_node_key_encoding_examples() -> None:
    assert NodeKey(1).encode() == bytes.fromhex("000000000000000100")
    assert NodeKey(2, (0xA, 0xB, 0xC)).encode() == bytes.fromhex("000000000000000203abc0")
    assert NodeKey(2**64 - 1, (1, 2)).encode() == bytes.fromhex("ffffffffffffffff0212")
    assert str(NodeKey(7, (3, 10, 0))) == "version 7, path 3a0"
    assert str(NodeKey(7)) == "version 7, the root path"


@settings(max_examples=300, deadline=None)
@given(versions, paths)
def test_node_key_round_trip(version: int, path: tuple[int, ...]) -> None:
    key = NodeKey(version, path)
    encoded = key.encode()
    assert len(encoded) == 9 + (len(path) + 1) // 2
    assert NodeKey.decode(encoded) == key
    assert NodeKey.from_trusted(encoded) == key


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 9 bytes"),
        (bytes(8), "at least 9 bytes"),
        (bytes(8) + b"\x41" + bytes(33), "at most 64"),
        (bytes(8) + b"\x02", "has 10 bytes, got 9"),
        (bytes(8) + b"\x02" + b"\x12\x34", "has 10 bytes, got 11"),
        (bytes(8) + b"\x00" + b"\x00", "has 9 bytes, got 10"),
        (bytes(8) + b"\x03" + b"\x12\x31", "pad nibble"),
        (bytes(8) + b"\x01" + b"\x1f", "pad nibble"),
    ],
)
def test_node_key_decoding_refuses_malformed_keys(data: bytes, message: str) -> None:
    with pytest.raises(TreeError, match=message):
        NodeKey.decode(data)


def test_node_key_decoding_wants_bytes() -> None:
    with pytest.raises(TypeError):
        NodeKey.decode(bytearray(9))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "path", "error"),
    [
        (-1, (), ValueError),
        (2**64, (), ValueError),
        (True, (), TypeError),
        ("1", (), TypeError),
        (1, [1, 2], TypeError),
        (1, (16,), ValueError),
        (1, (-1,), ValueError),
        (1, (0,) * 65, ValueError),
    ],
)
def test_node_key_refuses_bad_fields(version: object, path: object, error: type) -> None:
    with pytest.raises(error):
        NodeKey(version, path)  # type: ignore[arg-type]


# -- leaves -------------------------------------------------------------------------------


def test_leaf_encoding() -> None:
    leaf = LeafNode(h(1), h(2))
    assert leaf.encode() == b"\x00" + h(1) + h(2)
    assert len(leaf.encode()) == 65
    assert decode_node(leaf.encode()) == leaf
    assert leaf.hash == leaf_hash(h(1), h(2))


@pytest.mark.parametrize("size", [31, 33])
def test_leaf_refuses_wrong_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        LeafNode(bytes(size), h(2))
    with pytest.raises(ValueError):
        LeafNode(h(1), bytes(size))


# -- internal nodes -----------------------------------------------------------------------


def test_internal_encoding_example() -> None:
    node = InternalNode({0: Child(5, h(1), True), 15: Child(3, h(2), False)})
    encoded = node.encode()
    assert encoded == (
        b"\x01"
        + bytes.fromhex("8001")  # children 0 and 15
        + bytes.fromhex("0001")  # child 0 is a leaf
        + (5).to_bytes(8, "big")
        + h(1)
        + (3).to_bytes(8, "big")
        + h(2)
    )
    assert decode_node(encoded) == node
    assert dict(node.children) == {0: Child(5, h(1), True), 15: Child(3, h(2), False)}


@settings(max_examples=300, deadline=None)
@given(child_maps)
def test_internal_round_trip(kids: dict[int, Child]) -> None:
    node = InternalNode(kids)
    encoded = node.encode()
    assert len(encoded) == 5 + 40 * len(kids)
    decoded = decode_node(encoded)
    assert decoded == node
    assert isinstance(decoded, InternalNode)
    assert list(decoded.children) == sorted(kids)
    assert decoded.slots == tuple(kids.get(i) for i in range(16))
    assert hash(decoded) == hash(node)


def _internal(kids: dict[int, tuple[int, bytes, bool]]) -> bytes:
    return InternalNode({i: Child(*c) for i, c in kids.items()}).encode()


GOOD = _internal({1: (1, h(1), True), 2: (1, h(2), False)})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x02" + bytes(64), "not 0x02"),
        (b"\x00" + bytes(63), "65 bytes, got 64"),
        (b"\x00" + h(1) + h(2) + b"\x00", "65 bytes, got 66"),
        (b"\x01\x00\x06\x00", "at least 5 bytes"),
        (b"\x01\x00\x00\x00\x00", "no children"),
        (b"\x01\x00\x06\x00\x08" + GOOD[5:], "marks children"),
        (GOOD + b"\x00", "has 85 bytes, got 86"),
        (GOOD[:-1], "has 85 bytes, got 84"),
        (b"\x01\x00\x02\x00\x02" + (1).to_bytes(8, "big") + h(1), "only child is a leaf"),
        (b"\x01\x00\x06\x00\x02" + (1).to_bytes(8, "big") + PLACEHOLDER + GOOD[45:], "placeholder"),
    ],
)
def test_node_decoding_refuses_malformed_nodes(data: bytes, message: str) -> None:
    with pytest.raises(TreeError, match=message):
        decode_node(data)


def test_an_internal_node_may_have_one_internal_child() -> None:
    encoded = b"\x01\x00\x20\x00\x00" + (4).to_bytes(8, "big") + h(9)
    node = decode_node(encoded)
    assert isinstance(node, InternalNode)
    assert dict(node.children) == {5: Child(4, h(9), False)}
    assert node.encode() == encoded


@pytest.mark.parametrize(
    "kids",
    [
        {},
        {3: Child(1, h(1), True)},
        {16: Child(1, h(1), False)},
        {1: Child(1, h(1), True), 2: Child(-1, h(2), True)},
        {1: Child(1, h(1), True), 2: Child(1, b"short", True)},
        {1: Child(1, h(1), True), 2: Child(1, PLACEHOLDER, True)},
        {1: Child(1, h(1), True), 2: (1, h(2), True)},
    ],
)
def test_internal_node_refuses_bad_children(kids: dict[int, Child]) -> None:
    with pytest.raises((TypeError, ValueError)):
        InternalNode(kids)


def test_nodes_are_immutable() -> None:
    node = InternalNode({1: Child(1, h(1), True), 2: Child(1, h(2), True)})
    with pytest.raises(AttributeError):
        node.slots = ()
    with pytest.raises(TypeError):
        node.children[3] = Child(1, h(3), True)  # type: ignore[index]
    with pytest.raises(AttributeError):
        LeafNode(h(1), h(2)).key_hash = h(3)  # type: ignore[misc]


# -- the hash inside an internal node ----------------------------------------------------


def test_two_leaves_at_either_end() -> None:
    node = InternalNode({0: Child(1, h(1), True), 15: Child(1, h(2), True)})
    assert node.hash == internal_hash(h(1), h(2))


def test_two_leaves_in_one_quarter() -> None:
    # Slots 4 and 5: [0, 16) -> left [0, 8) -> right [4, 8) -> left [4, 6) -> 4 | 5.
    node = InternalNode({4: Child(1, h(1), True), 5: Child(1, h(2), True)})
    pair = internal_hash(h(1), h(2))
    expected = internal_hash(
        internal_hash(PLACEHOLDER, internal_hash(pair, PLACEHOLDER)), PLACEHOLDER
    )
    assert node.hash == expected


def test_a_lone_internal_child_is_hashed_down_to_width_one() -> None:
    # Slot 5 = 0101: right at width 2, left at width 4, right at width 8, left at width 16.
    node = InternalNode({5: Child(1, h(7), False)})
    step = internal_hash(PLACEHOLDER, h(7))
    step = internal_hash(step, PLACEHOLDER)
    step = internal_hash(PLACEHOLDER, step)
    step = internal_hash(step, PLACEHOLDER)
    assert node.hash == step


def test_a_leaf_collapses_but_an_internal_child_does_not() -> None:
    node = InternalNode({0: Child(1, h(1), True), 15: Child(1, h(2), False)})
    right = h(2)
    for _ in range(3):
        right = internal_hash(PLACEHOLDER, right)
    assert node.hash == internal_hash(h(1), right)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(nibbles, digests, min_size=2))
def test_an_all_leaf_node_hashes_as_the_canonical_binary_root(leaves: dict[int, bytes]) -> None:
    # Leaves whose "key hashes" start with their nibble hash as the binary tree over them does,
    # when each leaf's hash is replaced by the canonical root of its one key.
    pairs = {bytes([nibble << 4 | d[0] & 15]) + d[1:]: d for nibble, d in leaves.items()}
    kids = {kh[0] >> 4: Child(1, leaf_hash(kh, vh), True) for kh, vh in pairs.items()}
    assert InternalNode(kids).hash == canonical_root(pairs)


@settings(max_examples=200, deadline=None)
@given(child_maps)
def test_levels_agree_with_the_node_hash(kids: dict[int, Child]) -> None:
    node = InternalNode(kids)
    levels = node_levels(node.slots)
    assert [len(level) for level in levels] == [16, 8, 4, 2, 1]
    assert levels[4][0][1] == node.hash == internal_node_hash(node.slots)
    for width, level in enumerate(levels):
        for j, (kind, digest, slot) in enumerate(level):
            inside = [i for i in kids if j << width <= i < (j + 1) << width]
            if not inside:
                assert (kind, digest) == (EMPTY, PLACEHOLDER)
            elif len(inside) == 1 and kids[inside[0]].is_leaf:
                assert (kind, digest, slot) == (LEAF, kids[inside[0]].hash, inside[0])
            else:
                assert kind == BRANCH


# -- storage keys -------------------------------------------------------------------------


def test_storage_keys() -> None:
    key = NodeKey(3, (1, 2, 3))
    assert node_storage_key(key) == b"t/n/" + key.encode()
    assert root_record_key(3) == b"t/r/" + bytes.fromhex("0000000000000003")
    assert stale_record_key(9) == b"t/s/" + (9).to_bytes(8, "big")
    other = NodeKey(2, ())
    record = encode_stale_record([key.encode(), other.encode()])
    assert decode_stale_record(record) == [key.encode(), other.encode()]
    assert decode_stale_record(b"") == []
    for bad in (record[:-1], record + b"\x05", b"\x03abc"):
        with pytest.raises(TreeError):
            decode_stale_record(bad)
    with pytest.raises(ValueError):
        root_record_key(-1)
