"""The hash functions and constants of the state tree."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from supervm.tree import PLACEHOLDER, internal_hash, key_hash, leaf_hash, value_hash
from supervm.tree.hashing import HASH_SIZE, key_bit, key_nibble

digests = st.binary(min_size=32, max_size=32)


def test_placeholder_is_32_zero_bytes() -> None:
    assert HASH_SIZE == 32
    assert PLACEHOLDER == b"\x00" * 32


def test_key_and_value_hashes_are_plain_sha256() -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert key_hash(b"").hex() == empty
    assert value_hash(b"").hex() == empty
    assert key_hash(b"abc").hex() == abc
    assert value_hash(b"abc").hex() == abc


def test_leaf_hash_of_known_input() -> None:
    kh, vh = b"\x11" * 32, b"\x22" * 32
    expected = hashlib.sha256(b"\x00" + b"\x11" * 32 + b"\x22" * 32).digest()
    assert leaf_hash(kh, vh) == expected
    assert (
        leaf_hash(kh, vh).hex()
        == hashlib.sha256(bytes([0] + [0x11] * 32 + [0x22] * 32)).hexdigest()
    )


def test_internal_hash_of_known_input() -> None:
    left, right = b"\xaa" * 32, b"\xbb" * 32
    assert internal_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert internal_hash(left, right) != internal_hash(right, left)


@settings(max_examples=100, deadline=None)
@given(digests, digests)
def test_leaf_and_internal_hashes_are_domain_separated(a: bytes, b: bytes) -> None:
    assert leaf_hash(a, b) != internal_hash(a, b)
    assert len(leaf_hash(a, b)) == len(internal_hash(a, b)) == 32


@settings(max_examples=100, deadline=None)
@given(digests)
def test_bits_and_nibbles_read_most_significant_first(digest: bytes) -> None:
    number = int.from_bytes(digest, "big")
    for i in range(256):
        assert key_bit(digest, i) == (number >> (255 - i)) & 1
    for i in range(64):
        assert key_nibble(digest, i) == (number >> (4 * (63 - i))) & 15
        bits = [key_bit(digest, 4 * i + j) for j in range(4)]
        assert key_nibble(digest, i) == bits[0] * 8 + bits[1] * 4 + bits[2] * 2 + bits[3]
