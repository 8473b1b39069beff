"""Hypothesis strategies and edge-case data for testing storage back ends.

The bytes are chosen to hit the edges of unsigned-byte key order: NUL, the
boundary between ``0x7f`` and ``0x80`` (where a signed comparison goes
wrong), and ``0xff`` (where a prefix has no simple upper bound).

``keys``
    non-empty keys of one to three such bytes;
``prefixes``
    scan prefixes of up to two such bytes (the empty prefix included);
``values``
    any values of up to 12 bytes, ``b""`` included;
``batch_ops``
    lists of up to 8 batch operations, ``(key, value)`` puts and
    ``(key, None)`` deletes.

``EDGE_KEYS`` is a fixed list of keys around the same edges.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["ALPHABET", "EDGE_KEYS", "batch_ops", "keys", "prefixes", "values"]

#: The bytes keys and prefixes are made of.
ALPHABET = [b"\x00", b"\x01", b"a", b"b", b"\x7f", b"\x80", b"\xfe", b"\xff"]

keys: st.SearchStrategy[bytes] = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=3).map(
    b"".join
)
prefixes: st.SearchStrategy[bytes] = st.lists(
    st.sampled_from(ALPHABET), min_size=0, max_size=2
).map(b"".join)
values: st.SearchStrategy[bytes] = st.binary(max_size=12)
batch_ops: st.SearchStrategy[list[tuple[bytes, bytes | None]]] = st.lists(
    st.tuples(keys, st.none() | values), max_size=8
)

#: Keys around the ordering edges, for prefix and range scans.
EDGE_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\xff",
    b"\x01",
    b"a",
    b"a\x00",
    b"a\x00b",
    b"a\x7f",
    b"a\x80",
    b"a\xfe",
    b"a\xff",
    b"a\xff\x00",
    b"a\xff\xff",
    b"a\xff\xff\xff",
    b"b",
    b"\x7f",
    b"\x80",
    b"\xfe",
    b"\xfe\xff",
    b"\xfe\xff\x01",
    b"\xff",
    b"\xff\x00",
    b"\xff\xfe",
    b"\xff\xff",
    b"\xff\xff\x00",
    b"\xff\xff\xff",
    b"\xff\xff\xff\xff",
]
