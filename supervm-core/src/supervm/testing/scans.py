"""Conformance kit, scans: prefix scans, and range and reverse scans where declared."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervm.errors import UnsupportedOperationError
from supervm.storage import Storage
from supervm.testing.base import KitBase
from supervm.testing.strategies import EDGE_KEYS

__all__ = ["ScanConformance"]

PREFIXES = [
    b"",
    b"\x00",
    b"a",
    b"a\x00",
    b"a\xff",
    b"a\xff\xff",
    b"\xff",
    b"\xff\xff",
    b"\x7f",
    b"\x80",
    b"\xfe",
    b"\xfe\xff",
    b"zz",
]
#: Range bounds around the edges, ``None`` (unbounded) and ``b""`` included.
BOUNDS = [None, b"", b"\x00", b"\x00\xff", b"a", b"a\x00", b"a\xff", b"\x80", b"\xff", b"\xff\xff"]


class ScanConformance(KitBase):
    """Key order, prefix edges, laziness; ``scan_range`` as the capabilities declare it."""

    def test_scan_orders_unsigned_bytes(self, store: Storage) -> None:
        for key in reversed(EDGE_KEYS):
            store.set(key, key + b"!")
        assert [k for k, _ in store.scan()] == sorted(EDGE_KEYS)
        assert all(v == k + b"!" for k, v in store.scan())

    @pytest.mark.parametrize("prefix", PREFIXES, ids=repr)
    def test_scan_prefix_edges(self, store: Storage, prefix: bytes) -> None:
        with store.batch() as b:
            for key in EDGE_KEYS:
                b.set(key, b"v" + key)
        expected = sorted((k, b"v" + k) for k in EDGE_KEYS if k.startswith(prefix))
        assert list(store.scan(prefix)) == expected

    def test_scan_many_keys_in_order(self, store: Storage) -> None:
        keys = [i.to_bytes(2, "big") + b"/" + str(i).encode() for i in range(0, 3000, 7)]
        store.write_batch([(k, k) for k in reversed(keys)])
        assert [k for k, _ in store.scan()] == sorted(keys)
        assert [k for k, _ in store.scan(b"\x01")] == sorted(k for k in keys if k[:1] == b"\x01")

    def test_scan_is_lazy_and_restartable(self, store: Storage) -> None:
        for i in range(10):
            store.set(b"p" + bytes([i]), b"v")
        first = next(iter(store.scan(b"p")))
        assert first == (b"p\x00", b"v")
        assert len(list(store.scan(b"p"))) == 10

    # -- range and reverse scans -----------------------------------------------

    def test_range_scan(self, store: Storage) -> None:
        """Declared: ``start <= key < end``, either bound optional. Else: refused."""
        if not store.capabilities.range_scan:
            with pytest.raises(UnsupportedOperationError):
                list(store.scan_range(b"a", b"b"))
            return
        for key in EDGE_KEYS:
            store.set(key, b"v")
        ordered = sorted(EDGE_KEYS)
        assert [k for k, _ in store.scan_range(b"a", b"b")] == [
            k for k in ordered if b"a" <= k < b"b"
        ]
        assert [k for k, _ in store.scan_range(None, b"\x01")] == [
            k for k in ordered if k < b"\x01"
        ]
        assert [k for k, _ in store.scan_range(b"\xff", None)] == [
            k for k in ordered if k >= b"\xff"
        ]
        assert [k for k, _ in store.scan_range()] == ordered
        assert list(store.scan_range(b"b", b"a")) == []
        assert list(store.scan_range(b"a", b"a")) == []

    def test_range_scans_match_a_sorted_list(self, store: Storage) -> None:
        """Every pair of bounds, in both directions where declared (``b""`` bounds nothing)."""
        caps = store.capabilities
        keys = sorted({bytes([a, b]) for a in (0, 1, 0x61, 0x7F, 0x80, 0xFF) for b in (0, 9, 0xFF)})
        store.write_batch([(k, k) for k in keys])
        for start in BOUNDS:
            for end in BOUNDS:
                want = [
                    k for k in keys if (start is None or k >= start) and (end is None or k < end)
                ]
                directions = [False, True] if caps.reverse_scan else [False]
                for reverse in directions:
                    if not caps.range_scan:
                        with pytest.raises(UnsupportedOperationError):
                            list(store.scan_range(start, end, reverse=reverse))
                        continue
                    got = [k for k, v in store.scan_range(start, end, reverse=reverse)]
                    assert got == (want[::-1] if reverse else want), (start, end, reverse)

    def test_reverse_scan(self, store: Storage) -> None:
        """Declared: ``scan_range(..., reverse=True)`` in descending order. Else: refused."""
        if not store.capabilities.reverse_scan:
            with pytest.raises(UnsupportedOperationError):
                list(store.scan_range(reverse=True))
            return
        for key in EDGE_KEYS:
            store.set(key, b"v")
        ordered = sorted(EDGE_KEYS)
        assert [k for k, _ in store.scan_range(reverse=True)] == ordered[::-1]
        assert [k for k, _ in store.scan_range(b"a", b"b", reverse=True)] == [
            k for k in reversed(ordered) if b"a" <= k < b"b"
        ]
        assert [k for k, _ in store.scan_range(None, b"\x80", reverse=True)] == [
            k for k in reversed(ordered) if k < b"\x80"
        ]
        assert list(store.scan_range(b"b", b"a", reverse=True)) == []

    def test_scan_range_argument_checks(self, store: Storage) -> None:
        calls: list[Callable[[], object]] = [
            lambda: list(store.scan_range("a", None)),  # type: ignore[arg-type]
            lambda: list(store.scan_range(None, bytearray(b"b"))),  # type: ignore[arg-type]
            lambda: list(store.scan_range(None, b"b", reverse=1)),  # type: ignore[arg-type]
        ]
        expected = TypeError if store.capabilities.range_scan else UnsupportedOperationError
        for call in calls:
            with pytest.raises(expected):
                call()
