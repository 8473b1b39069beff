"""RocksDB-specific behaviour: compression, URL options, scan bounds, snapshots, errors.

What every store in files shares (paths, create=false, locking) is checked by the
conformance kit in test_conformance.py.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rocksdict import DbClosedError, Options, Rdict

import supervm
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageLockedError,
)
from supervm_rocksdb import RocksDBStorage
from supervm_rocksdb.storage import COMPRESSIONS, compression_available

OPTIONS_NAME = {
    "lz4": "kLZ4Compression",
    "zstd": "kZSTD",
    "snappy": "kSnappyCompression",
    "zlib": "kZlibCompression",
    "none": "kNoCompression",
}
USABLE = [name for name in COMPRESSIONS if compression_available(name)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "db"


@pytest.fixture
def store(db_path: Path) -> Iterator[RocksDBStorage]:
    storage = supervm.open_storage(f"rocksdb://{db_path}")
    assert isinstance(storage, RocksDBStorage)
    yield storage
    storage.close()


def options_compression(db_path: Path) -> str:
    """The ``compression=`` line of the newest OPTIONS file RocksDB wrote."""
    newest = max(glob.glob(str(db_path / "OPTIONS-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    lines = Path(newest).read_text().splitlines()
    return next(line.strip() for line in lines if line.strip().startswith("compression="))


def sst_bytes(db_path: Path) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(str(db_path / "*.sst")))


# -- opening and URL options --------------------------------------------------


def test_default_compression_is_lz4(db_path: Path) -> None:
    with supervm.open_storage(f"rocksdb://{db_path}") as store:
        assert isinstance(store, RocksDBStorage)
        assert store.compression == "lz4"
        assert store.sync is False
    assert options_compression(db_path) == "compression=kLZ4Compression"


@pytest.mark.parametrize("name", USABLE)
def test_compression_option_reaches_rocksdb(db_path: Path, name: str) -> None:
    with supervm.open_storage(f"rocksdb://{db_path}?compression={name.upper()}") as store:
        assert isinstance(store, RocksDBStorage)
        assert store.compression == name
        store.set(b"k", b"v")
    assert options_compression(db_path) == f"compression={OPTIONS_NAME[name]}"


def test_compression_shrinks_tables(tmp_path: Path) -> None:
    sizes = {}
    for name in ("lz4", "zstd", "none"):
        path = tmp_path / name
        with supervm.open_storage(f"rocksdb://{path}?compression={name}") as store:
            store.write_batch([(b"k%05d" % i, b"abcd" * 256) for i in range(2000)])
        sizes[name] = sst_bytes(path)  # closing flushes the memtable to a table file
    assert sizes["none"] > 2000 * 1024
    assert sizes["lz4"] * 10 < sizes["none"]
    assert sizes["zstd"] * 10 < sizes["none"]


def test_data_written_with_one_compression_reads_with_another(db_path: Path) -> None:
    with supervm.open_storage(f"rocksdb://{db_path}?compression=zstd") as store:
        store.write_batch([(b"k%04d" % i, b"value" * 20) for i in range(500)])
    with supervm.open_storage(f"rocksdb://{db_path}?compression=none") as store:
        assert store.get(b"k0042") == b"value" * 20
        assert len(list(store.scan(b"k"))) == 500
    assert options_compression(db_path) == "compression=kNoCompression"


def test_unusable_compression_is_refused_not_ignored(db_path: Path) -> None:
    if compression_available("zlib"):
        with supervm.open_storage(f"rocksdb://{db_path}?compression=zlib"):
            pass
        assert options_compression(db_path) == "compression=kZlibCompression"
    else:
        with pytest.raises(InvalidURLError, match="zlib"):
            supervm.open_storage(f"rocksdb://{db_path}?compression=zlib")
        assert not db_path.exists()


@pytest.mark.parametrize("name", list(COMPRESSIONS))
def test_compression_probe_agrees_with_a_real_database(tmp_path: Path, name: str) -> None:
    options = Options(raw_mode=True)
    options.set_compression_type(COMPRESSIONS[name]())
    path = tmp_path / name
    db = Rdict(str(path), options=options)
    for i in range(200):
        db[b"k%04d" % i] = b"\0" * 1024
    db.close()  # flushes the memtable to a table file
    compressed = sst_bytes(path) < 200 * 1024 // 2
    assert compression_available(name) is (compressed or name == "none")
    if not compression_available(name):
        with pytest.raises(ValueError, match=name):
            RocksDBStorage(str(tmp_path / "store"), compression=name)


def test_bad_compression_value_names_it(db_path: Path) -> None:
    with pytest.raises(InvalidURLError, match=r"compression.*'brotli'"):
        supervm.open_storage(f"rocksdb://{db_path}?compression=brotli")
    assert not db_path.exists()
    with pytest.raises(ValueError, match="brotli"):
        RocksDBStorage(str(db_path), compression="brotli")


def test_unknown_option_names_it(db_path: Path) -> None:
    with pytest.raises(InvalidURLError, match="cache_size") as info:
        supervm.open_storage(f"rocksdb://{db_path}?cache_size=10&sync=1")
    assert "compression" in str(info.value)  # the message lists what is accepted
    assert not db_path.exists()


def test_sync_option(db_path: Path) -> None:
    with supervm.open_storage(f"rocksdb://{db_path}?sync=true&compression=zstd") as store:
        assert isinstance(store, RocksDBStorage)
        assert store.sync is True
        assert store.compression == "zstd"
        store.set(b"a", b"1")
        store.delete(b"a")
        store.write_batch([(b"b", b"2"), (b"c", b"3")])
        with store.batch() as b:
            b.set(b"d", b"4")
        assert list(store.scan()) == [(b"b", b"2"), (b"c", b"3"), (b"d", b"4")]
    with supervm.open_storage(f"rocksdb://{db_path}?sync=off") as store:
        assert isinstance(store, RocksDBStorage)
        assert store.sync is False
        assert store.get(b"d") == b"4"
    with pytest.raises(InvalidURLError, match="sync"):
        supervm.open_storage(f"rocksdb://{db_path}?sync=sometimes")


# -- locking ------------------------------------------------------------------


def test_an_unfinished_scan_holds_the_lock_until_dropped(db_path: Path) -> None:
    store = supervm.open_storage(f"rocksdb://{db_path}")
    store.write_batch([(b"a", b"1"), (b"b", b"2")])
    pending = store.scan()
    assert next(pending) == (b"a", b"1")
    store.close()
    assert next(pending) == (b"b", b"2")  # the iterator still reads its view
    with pytest.raises(StorageLockedError):
        supervm.open_storage(f"rocksdb://{db_path}")
    del pending
    with supervm.open_storage(f"rocksdb://{db_path}") as again:
        assert again.get(b"b") == b"2"


# -- prefix scans ----------------------------------------------------------------


def best_time(fn: Callable[[], object], rounds: int = 15) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_prefix_scan_stops_at_the_prefix_end(store: RocksDBStorage) -> None:
    store.write_batch([(b"a/%02d" % i, b"x") for i in range(10)])
    successors = [b"b/%06d" % i for i in range(100_000)]
    store.write_batch([(k, b"y") for k in successors])
    # Deleted keys are tombstones an iterator must step over one by one;
    # a scan bounded at the prefix's end never reaches them.
    store.write_batch([(k, None) for k in successors])
    store.set(b"c", b"z")
    assert [k for k, _ in store.scan(b"a/")] == [b"a/%02d" % i for i in range(10)]
    assert list(store.scan(b"b/")) == []
    bounded = best_time(lambda: list(store.scan(b"a/")))
    through_tombstones = best_time(lambda: list(store.scan(b"b/")), rounds=3)
    assert bounded * 20 < through_tombstones, (bounded, through_tombstones)


def test_prefix_scan_next_to_many_keys(store: RocksDBStorage) -> None:
    store.write_batch([(b"p" + i.to_bytes(2, "big"), b"in") for i in range(300)])
    store.write_batch([(b"q" + i.to_bytes(2, "big"), b"out") for i in range(5000)])
    store.write_batch([(b"o" + i.to_bytes(2, "big"), b"out") for i in range(5000)])
    got = list(store.scan(b"p"))
    assert len(got) == 300
    assert all(v == b"in" for _, v in got)
    assert [k for k, _ in got] == sorted(k for k, _ in got)


def test_scan_bound_survives_until_the_iterator_is_used(store: RocksDBStorage) -> None:
    inside = [b"p\x00", b"p\x00\x00", b"p\x00\xff"]
    store.write_batch([(k, b"v") for k in [b"p", *inside, b"p\x01", b"p\x01\x00", b"q"]])
    for round_ in range(100):
        # Upper bounds made fresh here and dropped before the pairs are read.
        pending = [store.scan(b"p\x00"), store.scan_range(b"p\x00", bytes([0x70, 1]))]
        churn = [bytes([round_ % 256, i]) * 3 for i in range(64)]  # reuse freed memory
        for it in pending:
            assert [k for k, _ in it] == inside
        del churn


def test_scan_is_a_point_in_time_view(store: RocksDBStorage) -> None:
    store.write_batch([(b"k%03d" % i, b"old") for i in range(100)])
    it = store.scan(b"k")
    assert next(it) == (b"k000", b"old")
    store.write_batch([(b"k%03d" % i, b"new") for i in range(100)])
    store.set(b"k050x", b"added")
    rest = list(it)
    assert len(rest) == 99
    assert all(v == b"old" for _, v in rest)


# -- snapshots ---------------------------------------------------------------------


def test_snapshot_long_scan_with_interleaved_reads_and_writes(store: RocksDBStorage) -> None:
    keys = [b"s%04d" % i for i in range(1000)]
    store.write_batch([(k, b"old") for k in keys])
    with store.snapshot() as snap:
        store.write_batch([(k, None) for k in keys[::2]])
        store.set(b"s0500x", b"new")
        seen = []
        for n, (key, value) in enumerate(snap.scan(b"s")):
            seen.append(key)
            assert value == b"old"
            if n % 100 == 0:
                assert snap.get(keys[-1]) == b"old"
                assert snap.get(b"s0500x") is None
                store.set(b"s%04dz" % n, b"later")
        assert seen == keys
        assert list(snap.scan(b"s09")) == [(k, b"old") for k in keys if k.startswith(b"s09")]
        assert snap.get(b"s") is None
    with pytest.raises(StorageClosedError):
        snap.get(b"s0001")
    with pytest.raises(StorageClosedError):
        snap.scan()


def test_snapshot_is_consistent_under_concurrent_batches(store: RocksDBStorage) -> None:
    keys = [b"t%02d" % i for i in range(40)]
    store.write_batch([(k, b"0") for k in keys])
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store.write_batch([(k, str(n).encode()) for k in keys])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            with store.snapshot() as snap:
                values = {v for _, v in snap.scan(b"t")}
                assert len(values) == 1
                assert snap.get(keys[0]) in values
    finally:
        stop.set()
        thread.join()


# -- closing and errors --------------------------------------------------------------


def test_operations_after_close_keep_the_driver_error(store: RocksDBStorage) -> None:
    store.close()
    store.close()
    with pytest.raises(StorageClosedError) as info:
        store.get(b"k")
    assert isinstance(info.value.original, DbClosedError)
    assert info.value.__cause__ is info.value.original
    with pytest.raises(StorageClosedError):
        store.snapshot()
    with pytest.raises(StorageClosedError):
        store.scan_range(b"a", b"b")
    with pytest.raises(StorageClosedError):
        store.scan_range(b"b", b"a")
    assert "closed" in repr(store)


def test_key_checks_come_before_the_closed_check(store: RocksDBStorage) -> None:
    store.close()
    with pytest.raises(TypeError):
        store.get("k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.set(b"k", "v")  # type: ignore[arg-type]
