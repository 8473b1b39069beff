"""Conformance kit, batches: ``batch()`` and ``write_batch``, all or nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from supervm.errors import InvalidKeyError
from supervm.storage import Storage
from supervm.testing.base import KitBase

__all__ = ["BatchConformance"]


class BatchConformance(KitBase):
    """Atomic batches: commit, discard, order, validation, single use."""

    def test_batch_commits_all(self, store: Storage) -> None:
        store.set(b"gone", b"x")
        with store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"b", b"2")
            b.delete(b"gone")
            assert len(b) == 3
            assert store.get(b"a") is None  # nothing shows before the commit
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
        store.set(b"keep", b"old")
        with pytest.raises(TypeError), store.batch() as b:
            b.set(b"a", b"1")
            b.set(b"b", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError), store.batch() as b:
            b.delete(b"keep")
            b.delete(b"")
        bad_batches: list[list[object]] = [
            [(b"keep", None), ("b", b"2")],
            [(b"keep", None), [b"a", b"1"]],
            [(b"keep", None), (b"a",)],
            [(b"keep", None), (b"a", b"1", b"2")],
            [(b"keep", None), b"ab"],
            [(b"keep", None), None],
        ]
        for ops in bad_batches:
            with pytest.raises(TypeError):
                store.write_batch(ops)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError):
            store.write_batch([(b"keep", None), (b"", b"1")])
        assert list(store.scan()) == [(b"keep", b"old")]

    def test_write_batch_applies_in_order(self, store: Storage) -> None:
        store.write_batch([(b"a", b"1"), (b"a", None), (b"b", b"1"), (b"b", b"2")])
        assert list(store.scan()) == [(b"b", b"2")]

    def test_write_batch_takes_any_iterable(self, store: Storage) -> None:
        store.write_batch((k, k * 2) for k in (b"b", b"a"))
        store.write_batch({b"b": None, b"c": b"cc"}.items())
        store.write_batch(((b"d", b"dd"),))
        assert list(store.scan()) == [(b"a", b"aa"), (b"c", b"cc"), (b"d", b"dd")]

    def test_empty_batch(self, store: Storage) -> None:
        with store.batch() as b:
            assert len(b) == 0
        store.write_batch([])
        assert list(store.scan()) == []

    def test_finished_batch_refuses_use(self, store: Storage) -> None:
        batch = store.batch()
        late_set = batch.set
        batch.set(b"a", b"1")
        batch.set(b"a", b"2")
        batch.delete(b"z")
        assert len(batch) == 3
        batch.commit()
        assert len(batch) == 3
        calls: list[Callable[[], object]] = [
            lambda: batch.set(b"b", b"1"),
            lambda: late_set(b"b", b"1"),
            lambda: batch.delete(b"a"),
            batch.commit,
        ]
        for call in calls:
            with pytest.raises(RuntimeError):
                call()
        batch.discard()  # discarding a finished batch is harmless
        discarded = store.batch()
        discarded.set(b"c", b"1")
        discarded.discard()
        assert len(discarded) == 0
        for call in (lambda: discarded.delete(b"c"), discarded.commit):
            with pytest.raises(RuntimeError):
                call()
        assert list(store.scan()) == [(b"a", b"2")]

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
