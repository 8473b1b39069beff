"""Proofs: their encodings, verification, and proofs from the tree against the reference."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import binary_depth, reference_root

from supervm.memory import MemoryStorage
from supervm.tree import (
    PLACEHOLDER,
    JellyfishTree,
    Proof,
    ProofError,
    TreeError,
    internal_hash,
    key_hash,
    leaf_hash,
    value_hash,
    verify,
)

digests = st.binary(min_size=32, max_size=32)
siblings = st.lists(st.one_of(st.just(PLACEHOLDER), digests), max_size=40).map(tuple)
proofs = st.builds(Proof, st.none() | st.tuples(digests, digests), siblings)


def h(n: int) -> bytes:
    return bytes([n]) * 32


def build(state: dict[bytes, bytes]) -> tuple[JellyfishTree, bytes]:
    store = MemoryStorage()
    tree = JellyfishTree(store)
    update = tree.update(1, state.items(), base_version=None)
    store.write_batch(update.writes)
    return tree, update.root_hash


# -- encoding -----------------------------------------------------------------------------


def test_encoding_examples() -> None:
    assert Proof(None, ()).encode() == b"\x01\x00\x00"
    proof = Proof((h(1), h(2)), (PLACEHOLDER, h(3), PLACEHOLDER))
    assert proof.encode() == b"\x01\x01" + h(1) + h(2) + b"\x03" + b"\xa0" + h(3)
    nine = Proof(None, (h(4),) * 8 + (PLACEHOLDER,))
    assert nine.encode() == b"\x01\x00\x09\x00\x80" + h(4) * 8


@settings(max_examples=300, deadline=None)
@given(proofs)
def test_encoding_round_trip(proof: Proof) -> None:
    encoded = proof.encode()
    assert Proof.decode(encoded) == proof
    assert Proof.decode(encoded).encode() == encoded
    placeholders = sum(s == PLACEHOLDER for s in proof.siblings)
    count = len(proof.siblings)
    size = 3 + (64 if proof.leaf else 0) + (count + 7) // 8 + 32 * (count - placeholders)
    assert len(encoded) == size


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | proofs.map(Proof.encode).map(lambda b: b[:-1] + b"\x00"))
def test_every_accepted_encoding_is_canonical(data: bytes) -> None:
    try:
        proof = Proof.decode(data)
    except ProofError:
        return
    assert proof.encode() == data


GOOD = Proof((h(1), h(2)), (PLACEHOLDER, h(3))).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 3 bytes"),
        (b"\x01\x00", "at least 3 bytes"),
        (b"\x02\x00\x00", "format version 2"),
        (b"\x01\x02\x00", "unknown bits"),
        (b"\x01\x80\x00", "unknown bits"),
        (b"\x01\x01" + h(1) + h(2)[:5], "inside its leaf"),
        (b"\x01\x01" + h(1) + h(2), "before its sibling count"),
        (b"\x01\x00\x09\x00", "inside its placeholder bitmap"),
        (b"\x01\x00\x02\xe0", "pad bits"),
        (b"\x01\x00\x01\x01", "pad bits"),
        (b"\x01\x00\x02\x00" + h(3) + h(4)[:31], "inside sibling 1"),
        (b"\x01\x00\x01\x00" + PLACEHOLDER, "not marked in the bitmap"),
        (GOOD + b"\x00", "1 bytes follow"),
        (b"\x01\x00\x00" + h(1), "32 bytes follow"),
    ],
)
def test_decoding_refuses_malformed_proofs(data: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        Proof.decode(data)


def test_decoding_wants_bytes() -> None:
    with pytest.raises(ProofError, match="must be bytes"):
        Proof.decode(bytearray(GOOD))  # type: ignore[arg-type]


def test_proof_errors_are_value_and_tree_errors() -> None:
    assert issubclass(ProofError, TreeError)
    assert issubclass(ProofError, ValueError)


@pytest.mark.parametrize(
    ("leaf", "sibs"),
    [
        ((h(1),), ()),
        ([h(1), h(2)], ()),
        ((h(1), b"short"), ()),
        ((h(1), "x" * 32), ()),
        (None, [h(1)]),
        (None, (h(1), b"")),
        (None, (h(1),) * 256),
    ],
)
def test_proof_refuses_bad_fields(leaf: object, sibs: object) -> None:
    with pytest.raises(ProofError):
        Proof(leaf, sibs)  # type: ignore[arg-type]


def test_the_largest_proof() -> None:
    proof = Proof(None, (h(5),) * 255)
    assert Proof.decode(proof.encode()) == proof


# -- JSON ---------------------------------------------------------------------------------


def test_json_form() -> None:
    proof = Proof((h(1), h(2)), (PLACEHOLDER, h(3)))
    assert proof.to_json() == {
        "format": 1,
        "leaf": {"key_hash": "01" * 32, "value_hash": "02" * 32},
        "siblings": ["00" * 32, "03" * 32],
    }
    assert Proof(None, ()).to_json() == {"format": 1, "leaf": None, "siblings": []}


@settings(max_examples=200, deadline=None)
@given(proofs)
def test_json_round_trip(proof: Proof) -> None:
    assert Proof.from_json(json.loads(json.dumps(proof.to_json()))) == proof


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "{}",
        {"format": 1, "leaf": None},
        {"format": 1, "leaf": None, "siblings": [], "extra": 1},
        {"format": 2, "leaf": None, "siblings": []},
        {"format": "1", "leaf": None, "siblings": []},
        {"format": True, "leaf": None, "siblings": []},
        {"format": 1, "leaf": None, "siblings": "00" * 32},
        {"format": 1, "leaf": None, "siblings": ["00" * 31]},
        {"format": 1, "leaf": None, "siblings": ["zz" * 32]},
        {"format": 1, "leaf": None, "siblings": [" " + "0" * 63]},
        {"format": 1, "leaf": None, "siblings": [32]},
        {"format": 1, "leaf": ["01" * 32, "02" * 32], "siblings": []},
        {"format": 1, "leaf": {"key_hash": "01" * 32}, "siblings": []},
        {"format": 1, "leaf": {"key_hash": "01" * 32, "value_hash": 2}, "siblings": []},
        {"format": 1, "leaf": None, "siblings": ["05" * 32] * 256},
    ],
)
def test_from_json_refuses_bad_input(data: object) -> None:
    with pytest.raises(ProofError):
        Proof.from_json(data)


# -- verify -------------------------------------------------------------------------------


def test_verify_by_hand() -> None:
    # Two keys differing in the first bit: the root is internal_hash(left leaf, right leaf).
    kh_a, kh_b = key_hash(b"a"), key_hash(b"b")
    assert kh_a[0] >> 7 != kh_b[0] >> 7
    left, right = (b"a", b"b") if kh_a[0] >> 7 == 0 else (b"b", b"a")
    leaves = {k: leaf_hash(key_hash(k), value_hash(b"v" + k)) for k in (b"a", b"b")}
    root = internal_hash(leaves[left], leaves[right])
    proof = Proof((key_hash(left), value_hash(b"v" + left)), (leaves[right],))
    assert verify(root, left, b"v" + left, proof)
    assert verify(root, left, b"v" + left, proof.encode())
    assert not verify(root, left, b"other", proof)
    assert not verify(root, left, None, proof)
    assert not verify(root, right, b"v" + left, proof)


def test_empty_tree_proofs() -> None:
    empty = Proof(None, ())
    assert verify(PLACEHOLDER, b"anything", None, empty)
    assert not verify(PLACEHOLDER, b"anything", b"", empty)
    assert not verify(h(1), b"anything", None, empty)
    tree, root = build({})
    assert root == PLACEHOLDER
    assert tree.prove(b"k", 1) == empty


def test_verify_types() -> None:
    empty = Proof(None, ())
    for args in (
        ("00" * 32, b"k", None, empty),
        (bytearray(32), b"k", None, empty),
        (PLACEHOLDER, "k", None, empty),
        (PLACEHOLDER, b"k", "v", empty),
        (PLACEHOLDER, b"k", 1, empty),
    ):
        with pytest.raises(TypeError):
            verify(*args)
    for proof in (None, "010000", 0, bytearray(b"\x01\x00\x00"), empty.to_json(), b"", b"\x01"):
        assert verify(PLACEHOLDER, b"k", None, proof) is False  # type: ignore[arg-type]
    assert verify(PLACEHOLDER[:31], b"k", None, empty) is False
    assert verify(PLACEHOLDER + b"\x00", b"k", None, empty) is False


def test_a_single_leaf_tree() -> None:
    tree, root = build({b"only": b"1"})
    proof = tree.prove(b"only", 1)
    assert proof == Proof((key_hash(b"only"), value_hash(b"1")), ())
    assert verify(root, b"only", b"1", proof)
    absent = tree.prove(b"other", 1)
    assert absent == proof
    assert verify(root, b"other", None, absent)
    assert not verify(root, b"only", None, proof)


# -- tampering ----------------------------------------------------------------------------

STATE = {b"key-%d" % i: b"value-%d" % i for i in range(40)}


def _absent_proofs(tree: JellyfishTree) -> tuple[bytes, bytes]:
    """An absent key whose path ends at a leaf, and one whose path ends at an empty subtree."""
    at_leaf = at_empty = None
    for i in range(10_000):
        key = b"absent-%d" % i
        proof = tree.prove(key, 1)
        if proof.leaf is None and at_empty is None:
            at_empty = key
        if proof.leaf is not None and at_leaf is None:
            at_leaf = key
        if at_leaf and at_empty:
            return at_leaf, at_empty
    raise AssertionError("no absent keys of both kinds")


def test_changing_any_byte_of_a_proof_breaks_it() -> None:
    tree, root = build(STATE)
    at_leaf, at_empty = _absent_proofs(tree)
    for key, value in ((b"key-7", b"value-7"), (at_leaf, None), (at_empty, None)):
        proof = tree.prove(key, 1)
        encoded = proof.encode()
        assert verify(root, key, value, encoded)
        for offset in range(len(encoded)):
            for flip in range(1, 256):
                tampered = bytearray(encoded)
                tampered[offset] ^= flip
                assert not verify(root, key, value, bytes(tampered)), (key, offset, flip)


def test_changing_the_root_or_the_key_breaks_a_proof() -> None:
    tree, root = build(STATE)
    at_leaf, at_empty = _absent_proofs(tree)
    for key, value in ((b"key-7", b"value-7"), (at_leaf, None), (at_empty, None)):
        proof = tree.prove(key, 1)
        for offset in range(32):
            for flip in range(1, 256):
                tampered = bytearray(root)
                tampered[offset] ^= flip
                assert not verify(bytes(tampered), key, value, proof)
    # An inclusion proof names its key: any other key fails.
    proof = tree.prove(b"key-7", 1)
    for offset in range(len(b"key-7")):
        for flip in range(1, 256):
            tampered = bytearray(b"key-7")
            tampered[offset] ^= flip
            assert not verify(root, bytes(tampered), b"value-7", proof)
    assert not verify(root, b"key-7\x00", b"value-7", proof)
    assert not verify(root, b"key-", b"value-7", proof)
    # An exclusion proof covers a whole subtree, so it cannot stand for a present key.
    for key in (at_leaf, at_empty):
        absent = tree.prove(key, 1)
        for present in STATE:
            assert not verify(root, present, None, absent)


# -- proofs from random trees -------------------------------------------------------------

small_keys = st.sampled_from([bytes([i]) for i in range(32)])
any_keys = st.binary(min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.dictionaries(small_keys, st.binary(max_size=6), max_size=32),
        st.dictionaries(any_keys, st.binary(max_size=6), max_size=40),
    ),
    st.lists(any_keys, max_size=10),
    st.data(),
)
def test_proofs_of_random_trees(
    state: dict[bytes, bytes], probes: list[bytes], data: st.DataObject
) -> None:
    tree, root = build(state)
    assert root == reference_root(state)
    for key in [*state, *(bytes([i]) for i in range(32)), *probes]:
        value = state.get(key)
        proof = tree.prove(key, 1)
        assert len(proof.siblings) == binary_depth(state, key)
        encoded = proof.encode()
        assert Proof.decode(encoded) == proof
        assert Proof.from_json(proof.to_json()) == proof
        assert verify(root, key, value, proof)
        assert verify(root, key, value, encoded)
        if value is not None:
            assert proof.leaf == (key_hash(key), value_hash(value))
            assert not verify(root, key, None, proof)
            assert not verify(root, key, value + b"!", proof)
        else:
            assert not verify(root, key, b"", proof)
            assert proof.leaf is None or proof.leaf[0] != key_hash(key)
        offset = data.draw(st.integers(0, len(encoded) - 1), label="offset")
        flip = data.draw(st.integers(1, 255), label="flip")
        tampered = bytearray(encoded)
        tampered[offset] ^= flip
        assert not verify(root, key, value, bytes(tampered))


def test_proof_length_is_the_binary_depth() -> None:
    state = {b"%d" % i: b"v" for i in range(2000)}
    tree, root = build(state)
    for key in (b"0", b"1999", b"absent", b"777"):
        proof = tree.prove(key, 1)
        assert len(proof.siblings) == binary_depth(state, key)
        assert verify(root, key, state.get(key), proof)


# -- the example in docs/tree.md ---------------------------------------------------------

DOC_ROOT = "53b93a32b3b60c53256cdbee511726b5270af307f4859957c6d56cc380a96630"
DOC_ALICE = (
    "01012bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
    "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b0340"
    "07917da949ee1928e46bdc25d15490cd308106f716e87ca3bd82879cc6c3e0f0"
    "d6658c2dfb72ebe11b407f7e77386354ac0208d6e5a05c5c7907dcdd2c225d27"
)
DOC_CAROL = (
    "01000200"
    "3757ae0ceddf0f86e3c47be9f2e53be792a9fd9d163047002bdee90333de1518"
    "d6658c2dfb72ebe11b407f7e77386354ac0208d6e5a05c5c7907dcdd2c225d27"
)


def test_the_documented_example() -> None:
    state = {b"alice": b"1", b"bob": b"2", b"heidi": b"3"}
    tree, root = build(state)
    assert root.hex() == DOC_ROOT == reference_root(state).hex()
    leaves = {k: leaf_hash(key_hash(k), value_hash(v)) for k, v in state.items()}
    a = internal_hash(leaves[b"heidi"], leaves[b"alice"])
    b = internal_hash(a, PLACEHOLDER)
    assert a.hex() == "3757ae0ceddf0f86e3c47be9f2e53be792a9fd9d163047002bdee90333de1518"
    assert b.hex() == "9eb208c3709f9968c364a05540229a1c24ac9c1389c6ca21cc9096f462b4af39"
    assert internal_hash(b, leaves[b"bob"]) == root
    alice = tree.prove(b"alice", 1)
    assert alice.siblings == (leaves[b"heidi"], PLACEHOLDER, leaves[b"bob"])
    assert alice.encode().hex() == DOC_ALICE
    assert len(alice.encode()) == 132
    carol = tree.prove(b"carol", 1)
    assert carol == Proof(None, (a, leaves[b"bob"]))
    assert carol.encode().hex() == DOC_CAROL
    assert len(carol.encode()) == 68
    assert verify(root, b"alice", b"1", bytes.fromhex(DOC_ALICE))
    assert verify(root, b"carol", None, bytes.fromhex(DOC_CAROL))
    assert tree.prove(b"peggy", 1).encode().hex() == DOC_ALICE
    assert verify(root, b"peggy", None, bytes.fromhex(DOC_ALICE))
    assert not verify(root, b"alice", None, bytes.fromhex(DOC_ALICE))
