"""Conformance kit, point operations: get, set, delete, and what they refuse."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervm.errors import InvalidKeyError, KeyTooLargeError
from supervm.storage import Storage
from supervm.testing.base import KitBase

__all__ = ["LARGE_KEY_SIZE", "PointConformance"]


class _Bytes(bytes):
    """A bytes subclass: not exactly bytes, so refused like any other type."""


BAD_KEYS = ["text", bytearray(b"k"), memoryview(b"k"), _Bytes(b"k"), 7, None, 1.5]
BAD_VALUES = ["text", bytearray(b"v"), memoryview(b"v"), _Bytes(b"v"), 3, None]
#: Size of the key a back end that declares no key-size limit must take.
LARGE_KEY_SIZE = 4096


class PointConformance(KitBase):
    """``get``, ``set`` and ``delete``: values, bad input, the key-size limit."""

    def test_missing_key_reads_none(self, store: Storage) -> None:
        assert store.get(b"absent") is None

    def test_set_then_get(self, store: Storage) -> None:
        store.set(b"k", b"v")
        assert store.get(b"k") == b"v"
        assert type(store.get(b"k")) is bytes

    def test_empty_value_is_not_missing(self, store: Storage) -> None:
        store.set(b"empty", b"")
        assert store.get(b"empty") == b""
        assert store.get(b"empty") is not None
        assert list(store.scan(b"empty")) == [(b"empty", b"")]

    def test_overwrite(self, store: Storage) -> None:
        store.set(b"k", b"one")
        store.set(b"k", b"two")
        assert store.get(b"k") == b"two"
        assert list(store.scan()) == [(b"k", b"two")]

    def test_delete(self, store: Storage) -> None:
        store.set(b"k", b"v")
        store.delete(b"k")
        assert store.get(b"k") is None
        assert list(store.scan()) == []

    def test_delete_absent_is_not_an_error(self, store: Storage) -> None:
        store.delete(b"never-written")
        assert store.get(b"never-written") is None

    def test_binary_keys_and_values_round_trip(self, store: Storage) -> None:
        every_byte = bytes(range(256))
        store.set(every_byte, every_byte[::-1])
        store.set(b"\x00", b"\x00")
        assert store.get(every_byte) == every_byte[::-1]
        assert store.get(b"\x00") == b"\x00"

    def test_large_value(self, store: Storage) -> None:
        limit = store.capabilities.max_value_size
        size = 1 << 20 if limit is None else min(limit, 1 << 20)
        value = bytes(i % 251 for i in range(size))
        store.set(b"big", value)
        assert store.get(b"big") == value

    # -- bad input ---------------------------------------------------------

    @pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
    def test_non_bytes_key_is_type_error(self, store: Storage, bad: object) -> None:
        calls: list[Callable[[], object]] = [
            lambda: store.get(bad),  # type: ignore[arg-type]
            lambda: store.set(bad, b"v"),  # type: ignore[arg-type]
            lambda: store.delete(bad),  # type: ignore[arg-type]
            lambda: store.write_batch([(bad, b"v")]),  # type: ignore[list-item]
            lambda: store.write_batch([(bad, None)]),  # type: ignore[list-item]
        ]
        for call in calls:
            with pytest.raises(TypeError):
                call()
        with pytest.raises(TypeError), store.batch() as b:
            b.set(bad, b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError), store.batch() as b:
            b.delete(bad)  # type: ignore[arg-type]
        assert list(store.scan()) == []

    @pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
    def test_non_bytes_value_is_type_error(self, store: Storage, bad: object) -> None:
        with pytest.raises(TypeError):
            store.set(b"k", bad)  # type: ignore[arg-type]
        if bad is not None:  # (k, None) in a batch is a delete
            with pytest.raises(TypeError):
                store.write_batch([(b"a", b"1"), (b"k", bad)])  # type: ignore[list-item]
        with pytest.raises(TypeError), store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"k", bad)  # type: ignore[arg-type]
        assert store.get(b"k") is None
        assert list(store.scan()) == []

    def test_non_bytes_prefix_is_type_error(self, store: Storage) -> None:
        for bad in ("a", bytearray(b"a"), None):
            with pytest.raises(TypeError):
                list(store.scan(bad))  # type: ignore[arg-type]

    def test_empty_key_refused(self, store: Storage) -> None:
        with pytest.raises(InvalidKeyError):
            store.set(b"", b"v")
        with pytest.raises(InvalidKeyError):
            store.get(b"")
        with pytest.raises(InvalidKeyError):
            store.delete(b"")
        with pytest.raises(InvalidKeyError):
            store.write_batch([(b"", b"v")])
        with pytest.raises(InvalidKeyError), store.batch() as b:
            b.delete(b"")
        assert list(store.scan()) == []

    def test_key_size_limit(self, store: Storage) -> None:
        """A declared limit is enforced everywhere; without one, a large key works everywhere."""
        limit = store.capabilities.max_key_size
        if limit is None:
            key = bytes(i % 251 for i in range(LARGE_KEY_SIZE))
            store.set(key, b"set")
            assert store.get(key) == b"set"
            store.write_batch([(key, b"batch"), (key + b"2", b"two")])
            with store.batch() as b:
                b.delete(key + b"2")
            assert list(store.scan(key[:100])) == [(key, b"batch")]
            store.delete(key)
            assert store.get(key) is None
            return
        store.set(b"k" * limit, b"fits")
        assert store.get(b"k" * limit) == b"fits"
        too_long = b"x" * (limit + 1)
        with pytest.raises(KeyTooLargeError, match=str(limit)):
            store.set(too_long, b"v")
        with pytest.raises(KeyTooLargeError):
            store.write_batch([(b"ok", b"v"), (too_long, b"v")])
        with pytest.raises(KeyTooLargeError):
            store.write_batch([(b"ok", b"v"), (too_long, None)])
        with pytest.raises(KeyTooLargeError), store.batch() as b:
            b.set(b"ok", b"v")
            b.set(too_long, b"v")
        with pytest.raises(KeyTooLargeError), store.batch() as b:
            b.delete(too_long)
        assert store.get(b"ok") is None
        assert list(store.scan()) == [(b"k" * limit, b"fits")]
