"""MVMemory on its own: which version each transaction reads, estimates, validation, write set."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervm.chain.mvmemory import ESTIMATE, Dependency, MVMemory, TxView, Version
from supervm.memory import MemoryStorage
from supervm.state import StorageView

K, J = b"k", b"j"


def memory(**base: bytes) -> MVMemory:
    storage = MemoryStorage()
    for key, value in base.items():
        storage.set(key.encode(), value)
    return MVMemory(StorageView(storage))


def test_a_read_sees_the_highest_lower_write_never_its_own_or_a_higher_one() -> None:
    mv = memory(k=b"base")
    mv.record(2, 0, [(K, b"two")])
    mv.record(5, 1, [(K, b"five")])
    assert mv.read(K, 0) == (None, b"base")
    assert mv.read(K, 2) == (None, b"base")  # its own write is not a lower one
    assert mv.read(K, 3) == ((2, 0), b"two")
    assert mv.read(K, 5) == ((2, 0), b"two")
    assert mv.read(K, 6) == ((5, 1), b"five")
    assert mv.read(J, 9) == (None, None)


def test_versions_recorded_out_of_order_are_found_by_index() -> None:
    mv = memory()
    for txn in (7, 3, 9, 1, 5):
        mv.record(txn, 0, [(K, bytes([txn]))])
    for reader, writer in [(1, None), (2, 1), (4, 3), (6, 5), (8, 7), (9, 7), (10, 9)]:
        expected = (None, None) if writer is None else ((writer, 0), bytes([writer]))
        assert mv.read(K, reader) == expected


def test_a_delete_is_a_version_with_no_value() -> None:
    mv = memory(k=b"base")
    mv.record(1, 0, [(K, None)])
    assert mv.read(K, 2) == ((1, 0), None)
    assert mv.scan(b"", 2) == [(K, (1, 0), None)]
    view = TxView(mv, 2)
    assert view.scan(b"") == []
    assert view.scans == [(b"", [(K, (1, 0))])]


def test_record_reports_new_keys_and_drops_keys_no_longer_written() -> None:
    mv = memory(k=b"base")
    mv.record(1, 0, [(b"a", b"lower")])
    assert mv.record(3, 0, [(K, b"x"), (b"a", b"y")]) is True
    assert mv.record(3, 1, [(K, b"x2"), (b"a", b"y2")]) is False
    assert mv.read(K, 4) == ((3, 1), b"x2")
    assert mv.record(3, 2, [(K, b"x3")]) is False  # a key fewer: nothing new
    assert mv.read(b"a", 4) == ((1, 0), b"lower")  # 3's old write of "a" is gone
    assert mv.record(3, 3, [(K, b"x4"), (J, b"new")]) is True
    assert mv.record(3, 4, []) is False
    assert mv.read(K, 4) == (None, b"base")
    assert mv.final_writes() == [(b"a", b"lower")]


def test_an_estimate_makes_a_reader_wait_for_its_writer() -> None:
    mv = memory(k=b"base")
    mv.record(1, 0, [(K, b"one")])
    mv.record(3, 0, [(K, b"three"), (J, b"j3")])
    mv.mark_estimates(3)
    with pytest.raises(Dependency) as caught:
        mv.read(K, 4)
    assert caught.value.blocking == 3
    with pytest.raises(Dependency):
        mv.scan(b"", 7)
    assert mv.read(K, 3) == ((1, 0), b"one")  # estimates above the reader do not matter
    assert mv.read(J, 2) == (None, None)
    mv.record(3, 1, [(K, b"again")])  # the re-execution replaces the estimates
    assert mv.read(K, 4) == ((3, 1), b"again")
    assert mv.read(J, 4) == (None, None)


def test_validate_detects_a_changed_version() -> None:
    mv = memory(k=b"base")
    mv.record(1, 0, [(K, b"one")])
    view = TxView(mv, 2)
    assert view.get(K) == b"one"
    assert view.get(J) is None
    assert view.reads == [(K, (1, 0)), (J, None)]
    assert mv.validate(2, view.reads, view.scans)
    mv.record(5, 0, [(J, b"higher")])  # above the reader: still valid
    assert mv.validate(2, view.reads, view.scans)
    mv.record(1, 1, [(K, b"one")])  # same value, new incarnation: a new version
    assert not mv.validate(2, view.reads, view.scans)
    view = TxView(mv, 2)
    view.get(K)
    view.get(J)
    mv.record(0, 0, [(J, b"lower")])  # a lower write where the base was read
    assert not mv.validate(2, view.reads, view.scans)


def test_validate_fails_on_an_estimate() -> None:
    mv = memory()
    mv.record(1, 0, [(K, b"one")])
    view = TxView(mv, 2)
    view.get(K)
    mv.mark_estimates(1)
    assert not mv.validate(2, view.reads, view.scans)


def test_validate_detects_a_changed_scan() -> None:
    mv = memory(**{"p/a": b"A", "p/c": b"C", "q/x": b"X"})
    mv.record(1, 0, [(b"p/b", b"B")])
    view = TxView(mv, 3)
    assert view.scan(b"p/") == [(b"p/a", b"A"), (b"p/b", b"B"), (b"p/c", b"C")]
    assert mv.validate(3, view.reads, view.scans)
    mv.record(2, 0, [(b"q/y", b"Y")])  # outside the prefix
    mv.record(4, 0, [(b"p/d", b"D")])  # above the reader
    assert mv.validate(3, view.reads, view.scans)
    mv.record(2, 1, [(b"p/bb", b"new")])  # a key appears under the prefix
    assert not mv.validate(3, view.reads, view.scans)
    mv.record(2, 2, [(b"q/y", b"Y")])
    assert mv.validate(3, view.reads, view.scans)
    mv.record(2, 3, [(b"p/c", None)])  # a key disappears
    assert not mv.validate(3, view.reads, view.scans)
    mv.record(2, 4, [])
    mv.record(1, 1, [])  # the write the scan saw is withdrawn
    assert not mv.validate(3, view.reads, view.scans)


def test_final_writes_are_the_highest_writers_values_sorted() -> None:
    mv = memory(k=b"base", j=b"base")
    mv.record(4, 0, [(K, b"four")])
    mv.record(2, 0, [(K, b"two"), (J, None), (b"z", b"z2")])
    mv.record(6, 0, [(b"a", b"a6")])
    assert mv.final_writes() == [(b"a", b"a6"), (J, None), (K, b"four"), (b"z", b"z2")]
    mv.mark_estimates(6)
    with pytest.raises(AssertionError, match="estimate"):
        mv.final_writes()


# -- against a reference: the linear search of every writer -----------------------------


class Reference:
    """MVMemory's rules written the plain way: a dict of writers per key, searched in full."""

    def __init__(self, base: dict[bytes, bytes]) -> None:
        self.base = base
        self.data: dict[bytes, dict[int, object]] = {}
        self.written: dict[int, set[bytes]] = {}

    def read(self, key: bytes, txn: int) -> tuple[Version, bytes | None]:
        lower = [index for index in self.data.get(key, {}) if index < txn]
        if not lower:
            return None, self.base.get(key)
        entry = self.data[key][max(lower)]
        if entry is ESTIMATE:
            raise Dependency(max(lower))
        written: tuple[int, bytes | None] = entry  # type: ignore[assignment]
        return (max(lower), written[0]), written[1]

    def record(self, txn: int, incarnation: int, writes: list[tuple[bytes, bytes | None]]) -> bool:
        new = {key for key, _ in writes}
        for key, value in writes:
            self.data.setdefault(key, {})[txn] = (incarnation, value)
        old = self.written.get(txn, set())
        for key in old - new:
            self.data[key].pop(txn)
        self.written[txn] = new
        return bool(new - old)

    def mark_estimates(self, txn: int) -> None:
        for key in self.written.get(txn, ()):
            self.data[key][txn] = ESTIMATE

    def final_writes(self) -> list[tuple[bytes, bytes | None]]:
        return [
            (key, entries[max(entries)][1])  # type: ignore[index]
            for key, entries in sorted(self.data.items())
            if entries
        ]


KEYS = [b"a", b"b", b"ba", b"c"]
write_sets = st.dictionaries(st.sampled_from(KEYS), st.none() | st.binary(max_size=2), max_size=3)
operations = st.lists(
    st.tuples(st.just("record"), st.integers(0, 7), write_sets)
    | st.tuples(st.just("estimate"), st.integers(0, 7), st.just({})),
    max_size=30,
)


def seen(mv: MVMemory | Reference, key: bytes, txn: int) -> object:
    """What ``txn`` reads of ``key``, or the transaction it has to wait for."""
    try:
        return mv.read(key, txn)
    except Dependency as dep:
        return ("wait for", dep.blocking)


@settings(max_examples=150, deadline=None)
@given(
    base=st.dictionaries(st.sampled_from(KEYS), st.binary(max_size=2), max_size=4),
    ops=operations,
)
def test_bisection_agrees_with_the_linear_search(
    base: dict[bytes, bytes], ops: list[tuple[str, int, dict[bytes, bytes | None]]]
) -> None:
    storage = MemoryStorage()
    for key, value in base.items():
        storage.set(key, value)
    mv, ref = MVMemory(StorageView(storage)), Reference(base)
    incarnations = [0] * 8
    for kind, txn, writes in ops:
        if kind == "record":
            incarnations[txn] += 1
            items = sorted(writes.items())
            assert mv.record(txn, incarnations[txn], items) == ref.record(
                txn, incarnations[txn], items
            )
        else:
            mv.mark_estimates(txn)
            ref.mark_estimates(txn)
        for reader in range(9):
            for key in KEYS:
                assert seen(mv, key, reader) == seen(ref, key, reader)
    if ESTIMATE not in [entries[max(entries)] for entries in ref.data.values() if entries]:
        assert mv.final_writes() == ref.final_writes()


def test_concurrent_writers_and_readers_of_one_key() -> None:
    """Threads recording and reading one hot key: every read sees a version that exists."""
    mv = memory()
    count, threads = 400, 4

    def writer(start: int) -> None:
        for txn in range(start, count, threads):
            mv.record(txn, 0, [(K, txn.to_bytes(2, "little"))])
            version, value = mv.read(K, txn)
            if version is not None:
                assert version[0] < txn
                assert value == version[0].to_bytes(2, "little")

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    for txn in range(1, count + 1):
        assert mv.read(K, txn) == ((txn - 1, 0), (txn - 1).to_bytes(2, "little"))
    assert mv.final_writes() == [(K, (count - 1).to_bytes(2, "little"))]
