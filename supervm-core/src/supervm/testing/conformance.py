"""The pytest test class every storage back end subclasses."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervm.errors import (
    InvalidKeyError,
    KeyTooLargeError,
    StorageClosedError,
    UnsupportedOperationError,
)
from supervm.registry import open_storage
from supervm.storage import Storage
from supervm.testing.machine import run_storage_machine

__all__ = ["StorageConformance"]

BAD_KEYS = ["text", bytearray(b"k"), memoryview(b"k"), 7, None, 1.5]
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
    b"a\xff",
    b"a\xff\x00",
    b"a\xff\xff",
    b"a\xff\xff\xff",
    b"b",
    b"\x7f",
    b"\x80",
    b"\xfe\xff",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]


class StorageConformance:
    """Behaviour every :class:`~supervm.storage.Storage` back end must show.

    Subclasses implement :meth:`storage_url`; back ends that keep state outside
    ``workdir`` (a database server) also implement :meth:`cleanup_url`.
    """

    #: Hypothesis examples for the state machine test; lower it for slow servers.
    machine_examples: int = 40
    machine_steps: int = 30

    def storage_url(self, workdir: Path) -> str:
        """URL of a fresh, empty store whose files (if any) live under ``workdir``."""
        raise NotImplementedError("subclasses of StorageConformance must define storage_url")

    def cleanup_url(self, url: str) -> None:
        """Remove whatever the store at ``url`` left outside its work directory."""

    # -- fixtures ---------------------------------------------------------

    @pytest.fixture
    def url(self, tmp_path: Path) -> Iterator[str]:
        url = self.storage_url(tmp_path / "store")
        yield url
        self.cleanup_url(url)

    @pytest.fixture
    def store(self, url: str) -> Iterator[Storage]:
        storage = open_storage(url)
        yield storage
        storage.close()

    def reopen(self, store: Storage, url: str) -> Storage:
        store.close()
        return open_storage(url)

    # -- point operations ------------------------------------------------

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
        with pytest.raises(TypeError):
            store.get(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.set(bad, b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.delete(bad)  # type: ignore[arg-type]
        assert list(store.scan()) == []

    @pytest.mark.parametrize("bad", ["text", bytearray(b"v"), memoryview(b"v"), 3, None])
    def test_non_bytes_value_is_type_error(self, store: Storage, bad: object) -> None:
        with pytest.raises(TypeError):
            store.set(b"k", bad)  # type: ignore[arg-type]
        assert store.get(b"k") is None

    def test_non_bytes_prefix_is_type_error(self, store: Storage) -> None:
        with pytest.raises(TypeError):
            list(store.scan("a"))  # type: ignore[arg-type]

    def test_empty_key_refused(self, store: Storage) -> None:
        with pytest.raises(InvalidKeyError):
            store.set(b"", b"v")
        with pytest.raises(InvalidKeyError):
            store.get(b"")
        with pytest.raises(InvalidKeyError):
            store.delete(b"")
        with pytest.raises(InvalidKeyError):
            store.write_batch([(b"", b"v")])
        assert list(store.scan()) == []

    def test_key_size_limit(self, store: Storage) -> None:
        limit = store.capabilities.max_key_size
        if limit is None:
            pytest.skip("back end declares no key-size limit")
        store.set(b"k" * limit, b"fits")
        assert store.get(b"k" * limit) == b"fits"
        too_long = b"x" * (limit + 1)
        with pytest.raises(KeyTooLargeError, match=str(limit)):
            store.set(too_long, b"v")
        with pytest.raises(KeyTooLargeError):
            store.write_batch([(b"ok", b"v"), (too_long, b"v")])
        with pytest.raises(KeyTooLargeError), store.batch() as b:
            b.set(too_long, b"v")
        assert store.get(b"ok") is None
        assert list(store.scan()) == [(b"k" * limit, b"fits")]

    # -- scans ---------------------------------------------------------------

    def test_scan_orders_unsigned_bytes(self, store: Storage) -> None:
        for key in reversed(EDGE_KEYS):
            store.set(key, key + b"!")
        assert [k for k, _ in store.scan()] == sorted(EDGE_KEYS)
        assert all(v == k + b"!" for k, v in store.scan())

    @pytest.mark.parametrize(
        "prefix",
        [
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
            b"zz",
        ],
        ids=repr,
    )
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

    # -- batches ---------------------------------------------------------

    def test_batch_commits_all(self, store: Storage) -> None:
        store.set(b"gone", b"x")
        with store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"b", b"2")
            b.delete(b"gone")
            assert len(b) == 3
        assert list(store.scan()) == [(b"a", b"1"), (b"b", b"2")]

    def test_batch_discarded_on_exception(self, store: Storage) -> None:
        store.set(b"keep", b"old")

        class Boom(Exception):
            pass

        with pytest.raises(Boom), store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"keep", b"new")
            b.delete(b"keep")
            raise Boom
        assert list(store.scan()) == [(b"keep", b"old")]

    def test_batch_later_operation_wins(self, store: Storage) -> None:
        with store.batch() as b:
            b.set(b"k", b"1")
            b.delete(b"k")
            b.set(b"j", b"1")
            b.set(b"j", b"2")
            b.delete(b"m")
            b.set(b"m", b"3")
        assert list(store.scan()) == [(b"j", b"2"), (b"m", b"3")]

    def test_batch_bad_operation_leaves_nothing(self, store: Storage) -> None:
        with pytest.raises(TypeError), store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"b", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.write_batch([(b"a", b"1"), ("b", b"2")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            store.write_batch([(b"a", b"1"), (b"b",)])  # type: ignore[list-item]
        assert list(store.scan()) == []

    def test_write_batch_applies_in_order(self, store: Storage) -> None:
        store.write_batch([(b"a", b"1"), (b"a", None), (b"b", b"1"), (b"b", b"2")])
        assert list(store.scan()) == [(b"b", b"2")]

    def test_empty_batch(self, store: Storage) -> None:
        with store.batch():
            pass
        store.write_batch([])
        assert list(store.scan()) == []

    def test_batch_visible_all_or_nothing_to_readers(self, store: Storage) -> None:
        keys = [b"atom" + bytes([i]) for i in range(50)]
        seen_partial: list[int] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                count = sum(1 for _ in store.scan(b"atom"))
                if count not in (0, len(keys)):
                    seen_partial.append(count)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for _ in range(20):
                store.write_batch([(k, b"v") for k in keys])
                store.write_batch([(k, None) for k in keys])
        finally:
            stop.set()
            thread.join()
        assert seen_partial == []

    # -- lifecycle --------------------------------------------------------

    def test_closed_store_refuses_operations(self, store: Storage) -> None:
        store.set(b"k", b"v")
        caps = store.capabilities
        store.close()
        assert store.closed
        calls: list[Callable[[], object]] = [
            lambda: store.get(b"k"),
            lambda: store.set(b"k", b"v"),
            lambda: store.delete(b"k"),
            lambda: list(store.scan()),
            lambda: store.write_batch([(b"k", b"v")]),
            lambda: store.batch(),
        ]
        if caps.range_scan:
            calls.append(lambda: list(store.scan_range(b"a", b"z")))
        if caps.snapshots:
            calls.append(lambda: store.snapshot())
        for call in calls:
            with pytest.raises(StorageClosedError):
                call()
        store.close()  # a second close is harmless

    def test_finished_batch_refuses_use(self, store: Storage) -> None:
        batch = store.batch()
        batch.set(b"a", b"1")
        batch.set(b"a", b"2")
        assert len(batch) == 2
        batch.commit()
        with pytest.raises(RuntimeError):
            batch.set(b"b", b"1")
        with pytest.raises(RuntimeError):
            batch.commit()
        discarded = store.batch()
        discarded.set(b"c", b"1")
        discarded.discard()
        with pytest.raises(RuntimeError):
            discarded.delete(b"c")
        assert list(store.scan()) == [(b"a", b"2")]

    def test_context_manager_closes(self, url: str) -> None:
        with open_storage(url) as store:
            store.set(b"k", b"v")
        assert store.closed

    def test_separate_stores_are_isolated(self, store: Storage, tmp_path: Path) -> None:
        other_url = self.storage_url(tmp_path / "other")
        try:
            with open_storage(other_url) as other:
                other.set(b"k", b"other")
                store.set(b"k", b"mine")
                assert other.get(b"k") == b"other"
                assert list(other.scan()) == [(b"k", b"other")]
        finally:
            self.cleanup_url(other_url)
        assert store.get(b"k") == b"mine"

    # -- persistence --------------------------------------------------------

    def test_data_survives_reopen(self, store: Storage, url: str) -> None:
        if not store.capabilities.persistent:
            pytest.skip("back end is not persistent")
        store.set(b"a", b"1")
        store.set(b"e", b"")
        with store.batch() as b:
            b.set(b"b", b"2")
            b.delete(b"a")
        reopened = self.reopen(store, url)
        try:
            assert list(reopened.scan()) == [(b"b", b"2"), (b"e", b"")]
        finally:
            reopened.close()

    # -- optional capabilities ----------------------------------------------

    def test_range_scan(self, store: Storage) -> None:
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

    def test_reverse_scan(self, store: Storage) -> None:
        if not store.capabilities.reverse_scan:
            pytest.skip("back end declares no reverse scans")
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

    def test_snapshot(self, store: Storage) -> None:
        if not store.capabilities.snapshots:
            with pytest.raises(UnsupportedOperationError):
                store.snapshot()
            return
        store.set(b"a", b"old")
        store.set(b"b", b"old")
        with store.snapshot() as snap:
            store.set(b"a", b"new")
            store.delete(b"b")
            store.set(b"c", b"new")
            assert snap.get(b"a") == b"old"
            assert snap.get(b"b") == b"old"
            assert snap.get(b"c") is None
            assert list(snap.scan()) == [(b"a", b"old"), (b"b", b"old")]
        assert store.get(b"a") == b"new"

    def test_snapshot_prefix_scans_ignore_later_writes(self, store: Storage) -> None:
        if not store.capabilities.snapshots:
            pytest.skip("back end declares no snapshots")
        keys = [b"p/" + i.to_bytes(2, "big") for i in range(600)]
        store.write_batch([(k, b"before") for k in keys] + [(b"q", b"before")])
        with store.snapshot() as snap:
            store.write_batch([(k, b"after") for k in keys[::2]] + [(b"p/new", b"after")])
            store.write_batch([(k, None) for k in keys[1::2]])
            assert list(snap.scan(b"p/")) == [(k, b"before") for k in keys]
            assert snap.get(keys[1]) == b"before"
            assert snap.get(b"p/new") is None
            assert list(snap.scan(b"q")) == [(b"q", b"before")]
        assert store.get(keys[1]) is None

    # -- randomised comparison with the memory store ---------------------

    def test_state_machine_matches_memory_store(self, tmp_path: Path) -> None:
        counter = itertools.count()

        def make_url() -> str:
            return self.storage_url(tmp_path / f"machine-{next(counter)}")

        run_storage_machine(
            make_url,
            self.cleanup_url,
            max_examples=self.machine_examples,
            steps=self.machine_steps,
        )
