"""CachedStorage: the conformance kit over memory and RocksDB, LRU by bytes, threads, URLs."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

import supervm
from supervm.cache import ENTRY_OVERHEAD, CachedStorage, CacheStats
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from supervm.memory import MemoryStorage
from supervm.registry import load_backend, open_storage
from supervm.storage import BatchOp, Storage
from supervm.testing import StorageConformance, StorageMachine, with_options
from supervm.url import parse_url
from supervm_rocksdb import RocksDBStorage

#: Room for three or four small entries: the kit's reads keep evicting.
SMALL = 4 * (ENTRY_OVERHEAD + 8)


def entry(key: bytes, value: bytes | None) -> int:
    """Bytes a cache counts for one entry."""
    return len(key) + (0 if value is None else len(value)) + ENTRY_OVERHEAD


# -- the conformance kit ---------------------------------------------------------------


class CachedConformance(StorageConformance):
    def test_open_storage_finds_the_back_end(self, store: Storage, url: str) -> None:
        assert isinstance(store, CachedStorage)
        assert isinstance(store.inner, load_backend(parse_url(url).scheme))
        assert store.max_bytes == SMALL

    def test_small_cache_evicts(self, store: Storage) -> None:
        assert isinstance(store, CachedStorage)
        store.write_batch([(b"k%d" % i, b"v%d" % i) for i in range(10)])
        for _ in range(2):
            assert [store.get(b"k%d" % i) for i in range(10)] == [b"v%d" % i for i in range(10)]
        stats = store.stats()
        assert stats.evictions > 0
        assert 0 < stats.bytes <= SMALL


class TestCachedMemoryConformance(CachedConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"memory://?cache={SMALL}"

    def make_storage(self, workdir: Path, *, create: bool = True) -> CachedStorage:
        return CachedStorage(MemoryStorage(), SMALL)


class TestCachedRocksDBConformance(CachedConformance):
    machine_examples = 20

    def storage_url(self, workdir: Path) -> str:
        return f"rocksdb://{workdir}/db?cache={SMALL}"

    def make_storage(self, workdir: Path, *, create: bool = True) -> CachedStorage:
        return CachedStorage(RocksDBStorage(str(workdir / "db"), create=create), SMALL)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "rocksdb"])
def make_inner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    """Makes fresh inner stores of one kind; closes them after the test."""
    made: list[Storage] = []

    def make() -> Storage:
        if request.param == "memory":
            store: Storage = MemoryStorage()
        else:
            store = RocksDBStorage(str(tmp_path / f"db{len(made)}"))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def inner(make_inner: Callable[[], Storage]) -> Storage:
    return make_inner()


@pytest.fixture
def cached(inner: Storage) -> CachedStorage:
    return CachedStorage(inner, 1 << 20)


def counts(cache: CachedStorage) -> tuple[int, int]:
    stats = cache.stats()
    return stats.hits, stats.misses


# -- hits, misses, negative entries ------------------------------------------------------


def test_hits_and_misses_are_counted(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    assert counts(cached) == (0, 0)
    assert cached.get(b"a") == b"1"
    assert counts(cached) == (0, 1)
    assert cached.get(b"a") == b"1"
    assert cached.get(b"a") == b"1"
    assert counts(cached) == (2, 1)
    assert cached.stats() == CacheStats(
        hits=2, misses=1, entries=1, bytes=entry(b"a", b"1"), max_bytes=1 << 20, evictions=0
    )


def test_absent_keys_are_cached_small(cached: CachedStorage) -> None:
    assert cached.get(b"absent") is None
    assert cached.stats().bytes == entry(b"absent", None) == len(b"absent") + ENTRY_OVERHEAD
    cached.inner.set(b"absent", b"behind the cache's back")
    assert cached.get(b"absent") is None  # answered by the cached miss
    assert counts(cached) == (1, 1)
    cached.clear()
    assert cached.stats().entries == 0
    assert cached.get(b"absent") == b"behind the cache's back"


def test_empty_value_is_cached_as_a_value(cached: CachedStorage) -> None:
    cached.set(b"e", b"")
    assert cached.get(b"e") == b""
    assert cached.get(b"e") == b""
    assert counts(cached) == (1, 1)


def test_values_come_from_the_cache(cached: CachedStorage) -> None:
    cached.set(b"k", b"old")
    assert cached.get(b"k") == b"old"
    cached.inner.set(b"k", b"new")
    assert cached.get(b"k") == b"old"
    cached.clear()
    assert cached.get(b"k") == b"new"


# -- eviction by bytes -------------------------------------------------------------------


def test_least_recently_used_goes_first(inner: Storage) -> None:
    inner.write_batch([(b"k%d" % i, b"0123456789") for i in range(1, 6)])
    size = entry(b"k1", b"0123456789")
    cache = CachedStorage(inner, 3 * size)
    for key in (b"k1", b"k2", b"k3"):
        cache.get(key)
    assert cache.stats().entries == 3
    cache.get(b"k1")  # k1 is now the most recently used; k2 the least
    cache.get(b"k4")
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 3 * size, 1)
    hits, misses = counts(cache)
    cache.get(b"k1")
    cache.get(b"k3")
    cache.get(b"k4")
    assert counts(cache) == (hits + 3, misses)  # k1, k3, k4 stayed
    cache.get(b"k2")  # evicted: read again, evicting k1
    assert counts(cache) == (hits + 3, misses + 1)
    cache.get(b"k1")
    assert counts(cache) == (hits + 3, misses + 2)
    assert cache.stats().evictions == 3


def test_eviction_counts_key_and_value_bytes(inner: Storage) -> None:
    inner.set(b"big", b"x" * 1000)
    inner.set(b"s", b"y")
    cache = CachedStorage(inner, entry(b"big", b"x" * 1000) + entry(b"s", b"y") - 1)
    cache.get(b"s")
    cache.get(b"big")  # one byte too many for both: s goes
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (1, entry(b"big", b"x" * 1000), 1)
    cache.get(b"s")  # and now big goes
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (1, entry(b"s", b"y"), 2)


def test_an_entry_larger_than_the_cache_is_not_cached(inner: Storage) -> None:
    inner.set(b"small", b"1")
    inner.set(b"huge", b"x" * 10_000)
    cache = CachedStorage(inner, 1000)
    cache.get(b"small")
    assert cache.get(b"huge") == b"x" * 10_000
    assert cache.get(b"huge") == b"x" * 10_000
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.evictions) == (0, 3, 1, 0)


def test_zero_bytes_caches_nothing(inner: Storage) -> None:
    cache = CachedStorage(inner, 0)
    cache.set(b"a", b"1")
    assert cache.get(b"a") == b"1"
    assert cache.get(b"a") == b"1"
    assert cache.get(b"b") is None
    cache.write_batch([(b"a", None), (b"b", b"2")])
    assert cache.get(b"a") is None
    assert cache.get(b"b") == b"2"
    assert cache.stats() == CacheStats(0, 5, 0, 0, 0, 0)


@pytest.mark.parametrize("bad", [-1, 1.5, "64MB", True, None])
def test_max_bytes_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        CachedStorage(MemoryStorage(), bad)  # type: ignore[arg-type]


def test_inner_must_be_a_store() -> None:
    with pytest.raises(TypeError, match="inner"):
        CachedStorage({}, 100)  # type: ignore[arg-type]


# -- writes go through ---------------------------------------------------------------


def test_writes_are_seen_by_later_gets(cached: CachedStorage) -> None:
    for key in (b"a", b"b", b"c", b"d"):
        assert cached.get(key) is None  # cached as absent
    cached.set(b"a", b"1")
    assert cached.get(b"a") == b"1"
    cached.delete(b"a")
    assert cached.get(b"a") is None
    cached.write_batch([(b"b", b"2"), (b"c", b"3"), (b"c", None)])
    assert (cached.get(b"b"), cached.get(b"c")) == (b"2", None)
    with cached.batch() as batch:
        batch.set(b"d", b"4")
        batch.delete(b"b")
    assert (cached.get(b"b"), cached.get(b"d")) == (None, b"4")
    assert list(cached.scan()) == [(b"d", b"4")]
    assert list(cached.scan_range(b"a", b"z", reverse=True)) == [(b"d", b"4")]


def test_writes_drop_entries_and_add_none(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    cached.get(b"a")
    cached.get(b"b")
    assert cached.stats().entries == 2
    cached.write_batch([(b"a", b"2"), (b"new", b"3")])
    assert cached.stats().entries == 1
    cached.delete(b"b")
    cached.set(b"other", b"4")
    assert cached.stats() == CacheStats(0, 2, 0, 0, 1 << 20, 0)


def test_discarded_batch_changes_nothing(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    cached.get(b"a")
    with pytest.raises(KeyError), cached.batch() as batch:
        batch.set(b"a", b"2")
        raise KeyError
    assert cached.get(b"a") == b"1"
    assert counts(cached) == (1, 1)


def test_write_batch_takes_any_iterable(cached: CachedStorage) -> None:
    cached.get(b"g1")
    cached.write_batch((b"g%d" % i, b"v") for i in range(3))
    assert [cached.get(b"g%d" % i) for i in range(3)] == [b"v"] * 3


def test_snapshot_reads_the_inner_store(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    with cached.snapshot() as snap:
        cached.set(b"a", b"2")
        assert snap.get(b"a") == b"1"
    assert cached.get(b"a") == b"2"


# -- failed writes --------------------------------------------------------------------


def test_failed_write_batch_leaves_the_cache_right(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    assert cached.get(b"a") == b"1"
    assert cached.get(b"k") is None
    with pytest.raises(TypeError):
        cached.write_batch([(b"a", b"2"), (b"k", "text")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        cached.write_batch([(b"a", b"2"), (bytearray(b"k"), b"v")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        cached.write_batch([(b"a", b"2"), [b"k", b"v"]])  # type: ignore[list-item]
    with pytest.raises(TypeError), cached.batch() as batch:
        batch.set(b"a", b"3")
        batch.set(b"k", 7)  # type: ignore[arg-type]
    assert cached.stats().entries == 0  # the keys a failed write named are dropped
    for key in (b"a", b"k"):
        assert cached.get(key) == cached.inner.get(key)
    assert (cached.get(b"a"), cached.get(b"k")) == (b"1", None)


def test_failed_set_drops_the_key(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    cached.get(b"a")
    with pytest.raises(TypeError):
        cached.set(b"a", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cached.set(bytearray(b"a"), b"v")  # type: ignore[arg-type]
    assert cached.stats().entries == 0
    assert cached.get(b"a") == b"1"


def test_closed_inner_store(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    cached.get(b"a")
    cached.get(b"b")
    cached.inner.close()
    assert cached.closed
    failing: list[Callable[[], object]] = [
        lambda: cached.set(b"a", b"2"),
        lambda: cached.delete(b"b"),
        lambda: cached.write_batch([(b"a", b"2"), (b"b", b"2")]),
        lambda: cached.get(b"a"),  # cached, yet refused like the store
        lambda: cached.batch(),
    ]
    for call in failing:
        with pytest.raises(StorageClosedError):
            call()
    assert cached.stats().entries == 0


def test_close_closes_the_inner_store(cached: CachedStorage) -> None:
    cached.set(b"a", b"1")
    cached.get(b"a")
    with cached:
        pass
    assert cached.inner.closed and cached.closed
    assert cached.stats().entries == 0
    cached.close()


def test_from_url_is_refused() -> None:
    with pytest.raises(UnsupportedOperationError, match="cache=SIZE"):
        CachedStorage.from_url(parse_url("memory://"))


def test_repr_names_the_inner_store() -> None:
    assert "MemoryStorage" in repr(CachedStorage(MemoryStorage(), 10))


# -- threads -------------------------------------------------------------------------


class HeldMemory(MemoryStorage):
    """A memory store that can hold its next read (``"read"`` before, ``"get"`` after reading)
    or write (``"write"``, before writing)."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: dict[str, tuple[threading.Event, threading.Event]] = {}

    def _pause(self, op: str) -> None:
        hold = self.holds.pop(op, None)
        if hold is not None:
            reached, release = hold
            reached.set()
            assert release.wait(10)

    def get(self, key: bytes) -> bytes | None:
        self._pause("read")
        value = super().get(key)
        self._pause("get")
        return value

    def set(self, key: bytes, value: bytes) -> None:
        self._pause("write")
        super().set(key, value)

    def delete(self, key: bytes) -> None:
        self._pause("write")
        super().delete(key)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        self._pause("write")
        super().write_batch(ops)


def held(
    store: HeldMemory, op: str, call: Callable[[], object]
) -> tuple[Callable[[], None], list[object]]:
    """Run ``call`` in a thread until ``store`` holds its ``op``; a function that lets it finish."""
    reached, release = threading.Event(), threading.Event()
    store.holds[op] = (reached, release)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    assert reached.wait(10)

    def finish() -> None:
        release.set()
        thread.join()

    return finish, results


def write_set(cache: CachedStorage, key: bytes) -> None:
    cache.set(key, b"new")


def write_delete(cache: CachedStorage, key: bytes) -> None:
    cache.delete(key)


def write_write_batch(cache: CachedStorage, key: bytes) -> None:
    cache.write_batch([(b"other", b"x"), (key, b"new")])


def write_batch_commit(cache: CachedStorage, key: bytes) -> None:
    with cache.batch() as batch:
        batch.set(key, b"new")


WRITES = [write_set, write_delete, write_write_batch, write_batch_commit]


@pytest.mark.parametrize("write", WRITES)
def test_a_read_that_a_write_overtakes_is_not_cached(
    write: Callable[[CachedStorage, bytes], None],
) -> None:
    store = HeldMemory()
    cache = CachedStorage(store, 1 << 20)
    cache.set(b"k", b"old")
    finish, got = held(store, "get", lambda: cache.get(b"k"))  # has read b"old"
    write(cache, b"k")
    finish()
    assert got == [b"old"]  # the read came before the write
    assert cache.get(b"k") == store.get(b"k") != b"old"


@pytest.mark.parametrize("write", WRITES)
def test_a_read_during_a_write_is_dropped_when_the_write_ends(
    write: Callable[[CachedStorage, bytes], None],
) -> None:
    store = HeldMemory()
    cache = CachedStorage(store, 1 << 20)
    cache.set(b"k", b"old")
    finish, _ = held(store, "write", lambda: write(cache, b"k"))  # not written yet
    assert cache.get(b"k") == b"old"
    assert cache.stats().entries == 1
    finish()
    assert cache.get(b"k") == store.get(b"k") != b"old"


def test_a_read_that_clear_overtakes_is_not_cached() -> None:
    store = HeldMemory()
    cache = CachedStorage(store, 1 << 20)
    cache.set(b"k", b"old")
    finish, _ = held(store, "get", lambda: cache.get(b"k"))
    store.set(b"k", b"new")  # behind the cache's back, then forgotten
    cache.clear()
    finish()
    assert cache.get(b"k") == b"new"


def test_a_read_after_the_write_is_cached_beside_an_earlier_one() -> None:
    store = HeldMemory()
    cache = CachedStorage(store, 1 << 20)
    cache.set(b"k", b"old")
    finish, _ = held(store, "get", lambda: cache.get(b"k"))
    cache.set(b"k", b"new")
    assert cache.get(b"k") == b"new"  # began after the write: cached
    finish()
    hits, misses = counts(cache)
    assert cache.get(b"k") == b"new"
    assert counts(cache) == (hits + 1, misses)


def test_a_failed_read_is_not_cached() -> None:
    store = HeldMemory()
    cache = CachedStorage(store, 1 << 20)
    store.set(b"k", b"v")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            cache.get(b"k")
        except StorageClosedError as exc:
            errors.append(exc)

    finish, _ = held(store, "read", read)
    store.close()  # after the cache checked, before the store reads
    finish()
    assert len(errors) == 1
    assert cache.stats() == CacheStats(0, 1, 0, 0, 1 << 20, 0)


def hammer(cache: CachedStorage, keys: list[bytes], writes: int, seed: int) -> None:
    """Four readers and two writers on ``keys`` through ``cache`` until the writers are done."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader(rng: random.Random) -> None:
        try:
            while not stop.is_set():
                cache.get(rng.choice(keys))
        except BaseException as exc:
            errors.append(exc)

    def writer(rng: random.Random) -> None:
        try:
            for n in range(writes):
                key, value = rng.choice(keys), b"value-%04d" % n
                kind = rng.randrange(4)
                if kind == 0:
                    cache.set(key, value)
                elif kind == 1:
                    cache.delete(key)
                elif kind == 2:
                    cache.write_batch([(key, value), (rng.choice(keys), None)])
                else:
                    with cache.batch() as batch:
                        batch.set(key, value)
                        batch.set(rng.choice(keys), value)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(random.Random(seed + i),)) for i in range(4)]
    writers = [threading.Thread(target=writer, args=(random.Random(-seed - i),)) for i in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors


@pytest.mark.parametrize("room", [64, 12], ids=["every key fits", "keys get evicted"])
def test_threads_keep_the_cache_equal_to_the_store(
    make_inner: Callable[[], Storage], room: int
) -> None:
    store = make_inner()
    cache = CachedStorage(store, room * entry(b"key00", b"value-0000"))
    keys = [b"key%02d" % i for i in range(16)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_no in range(20):
            hammer(cache, keys, 200, round_no)
            for key in keys:  # a stale entry would answer here instead of the store
                assert cache.get(key) == store.get(key), (round_no, key)
    finally:
        sys.setswitchinterval(interval)
    stats = cache.stats()
    assert stats.hits > 0 and stats.misses > 0
    assert stats.bytes <= stats.max_bytes
    assert (stats.evictions > 0) == (room < len(keys))


# -- random operations against the memory store ---------------------------------------


class SmallCacheMachine(StorageMachine):
    """The kit's state machine on a cache of a few entries, with its byte count checked."""

    def make_url(self) -> str:
        return f"memory://?cache={SMALL}"

    @invariant()
    def within_bounds(self) -> None:
        assert isinstance(self.store, CachedStorage)
        stats = self.store.stats()
        assert stats.bytes <= stats.max_bytes
        assert stats.entries * ENTRY_OVERHEAD <= stats.bytes


def test_state_machine_on_a_small_cache() -> None:
    run_state_machine_as_test(
        SmallCacheMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- the URL option -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("64MB", 64_000_000),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("512KB", 512_000),
        ("512kib", 512 << 10),
        ("1GB", 1_000_000_000),
        ("1gib", 1 << 30),
        ("1.5GB", 1_500_000_000),
        ("1000", 1000),
        ("1000b", 1000),
        ("0", 0),
    ],
)
def test_cache_option_sizes(size: str, expected: int) -> None:
    with supervm.open_storage(f"memory://?cache={size}") as store:
        assert isinstance(store, CachedStorage)
        assert type(store.inner) is MemoryStorage
        assert store.max_bytes == expected


@pytest.mark.parametrize("size", ["", "abc", "-1", "64XB", "MB", "1e3", "1.2.3", "0x10"])
def test_bad_cache_sizes_are_refused(size: str) -> None:
    with pytest.raises(InvalidURLError, match=r"option cache=.*is not a size") as info:
        supervm.open_storage(f"memory://?cache={size}")
    assert repr(size) in str(info.value)


def test_no_cache_option_means_no_cache() -> None:
    with supervm.open_storage("memory://") as store:
        assert type(store) is MemoryStorage


def test_cache_option_over_rocksdb(tmp_path: Path) -> None:
    url = f"rocksdb://{tmp_path}/db?compression=zstd&cache=1MiB"
    with pytest.raises(StoreNotFoundError):
        open_storage(url, create=False)
    with open_storage(url) as store:
        assert isinstance(store, CachedStorage)
        assert isinstance(store.inner, RocksDBStorage)
        assert store.capabilities == RocksDBStorage.capabilities
        store.set(b"k", b"v")
        assert store.get(b"k") == b"v"
        assert store.get(b"k") == b"v"
        assert counts(store) == (1, 1)
    with open_storage(url, create=False) as store:
        assert store.get(b"k") == b"v"
    with pytest.raises(InvalidURLError, match="no_such_option"):
        open_storage(with_options(url, no_such_option="1"))
