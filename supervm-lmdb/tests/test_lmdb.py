"""LMDB-specific behaviour: map growth, the key-size limit, URL options, closing.

What every store in files shares (paths, create=false, locking) is checked by the
conformance kit in test_conformance.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest

from supervm import open_storage
from supervm.errors import (
    InvalidURLError,
    KeyTooLargeError,
    StorageClosedError,
    StorageError,
)
from supervm_lmdb import MAX_KEY_SIZE, LMDBStorage

SMALL_MAP = 64 << 10


def value_for(i: int, size: int) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


@pytest.fixture
def tiny_url(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 'db'}?map_size={SMALL_MAP}&sync=false"


@pytest.fixture
def tiny(tiny_url: str) -> Iterator[LMDBStorage]:
    store = open_storage(tiny_url)
    assert isinstance(store, LMDBStorage)
    yield store
    store.close()


def reopen(url: str) -> LMDBStorage:
    store = open_storage(url)
    assert isinstance(store, LMDBStorage)
    return store


# -- map growth -------------------------------------------------------------


def test_map_grows_for_single_sets(tiny: LMDBStorage, tiny_url: str) -> None:
    assert tiny.map_size == SMALL_MAP
    for i in range(400):  # 6.4 MiB in 16 KiB values
        tiny.set(b"k%04d" % i, value_for(i, 16 << 10))
    assert tiny.map_size > 100 * SMALL_MAP
    for i in range(400):
        assert tiny.get(b"k%04d" % i) == value_for(i, 16 << 10)
    tiny.close()
    with reopen(tiny_url) as again:
        assert [k for k, _ in again.scan(b"k")] == [b"k%04d" % i for i in range(400)]
        assert again.get(b"k0399") == value_for(399, 16 << 10)
        again.set(b"after", value_for(7, 1 << 20))
        assert again.get(b"after") == value_for(7, 1 << 20)


def test_map_grows_for_one_large_batch(tiny: LMDBStorage, tiny_url: str) -> None:
    tiny.set(b"doomed", b"x")
    ops: list[tuple[bytes, bytes | None]] = [
        (b"b%05d" % i, value_for(i, 4096)) for i in range(2500)
    ]
    ops.append((b"doomed", None))
    ops.append((b"b00000", b"last write wins"))
    tiny.write_batch(ops)
    with tiny.batch() as batch:
        for i in range(2000):
            batch.set(b"c%05d" % i, value_for(i, 2048))
        batch.delete(b"b00001")
    assert tiny.map_size >= 10 << 20
    tiny.close()
    with reopen(tiny_url) as again:
        assert again.get(b"doomed") is None
        assert again.get(b"b00000") == b"last write wins"
        assert again.get(b"b00001") is None
        assert again.get(b"b02499") == value_for(2499, 4096)
        assert sum(1 for _ in again.scan(b"b")) == 2499
        assert sum(1 for _ in again.scan(b"c")) == 2000
        assert again.get(b"c01999") == value_for(1999, 2048)


def test_single_value_much_larger_than_the_map(tiny: LMDBStorage) -> None:
    big = value_for(3, 8 << 20)
    tiny.set(b"big", big)
    assert tiny.get(b"big") == big
    assert tiny.map_size > len(big)


def test_other_threads_read_correctly_while_the_map_grows(tiny: LMDBStorage) -> None:
    fixed = {b"fixed%03d" % i: value_for(i, 64) for i in range(200)}
    tiny.write_batch(list(fixed.items()))
    expected_scan = sorted(fixed.items())
    errors: list[BaseException] = []
    reads = [0]
    stop = threading.Event()

    def reader(n: int) -> None:
        try:
            while not stop.is_set():
                key = b"fixed%03d" % (reads[0] % 200)
                assert tiny.get(key) == fixed[key]
                if n == 0:
                    assert list(tiny.scan(b"fixed")) == expected_scan
                else:
                    got = list(tiny.scan_range(b"fixed", b"fixee", reverse=True))
                    assert got == expected_scan[::-1]
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        start_size = tiny.map_size
        for i in range(300):
            tiny.set(b"grow%04d" % i, value_for(i, 32 << 10))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert reads[0] > 0
    assert tiny.map_size >= 8 * start_size


def test_scans_see_batches_whole_while_the_map_grows(tiny: LMDBStorage) -> None:
    keys = [b"atom%02d" % i for i in range(40)]
    partial: list[int] = []
    scans = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            count = sum(1 for _ in tiny.scan(b"atom"))
            scans[0] += 1
            if count not in (0, len(keys)):
                partial.append(count)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    sizes = []
    try:
        for round_ in range(11):
            value = value_for(round_, 256 << round_)
            tiny.write_batch([(k, value) for k in keys])
            sizes.append(tiny.map_size)
            tiny.write_batch([(k, None) for k in keys])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(set(sizes)) >= 6, "the map should have grown several times"
    assert scans[0] > 0
    assert partial == []


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_carries_on_when_its_own_thread_grows_the_map(
    tiny: LMDBStorage, reverse: bool
) -> None:
    keys = [b"s%03d" % i for i in range(100)]
    tiny.write_batch([(k, k) for k in keys])
    start_size = tiny.map_size
    seen = []
    for i, (key, value) in enumerate(tiny.scan_range(b"s", b"t", reverse=reverse)):
        assert value == key
        seen.append(key)
        tiny.set(b"z%03d" % i, value_for(i, 64 << 10))
    assert tiny.map_size > 20 * start_size
    assert seen == (keys[::-1] if reverse else keys)


def test_a_held_iterator_in_another_thread_does_not_block_growth_forever(
    tiny: LMDBStorage,
) -> None:
    keys = [b"h%03d" % i for i in range(50)]
    tiny.write_batch([(k, b"v") for k in keys])
    took_one = threading.Event()
    finish = threading.Event()
    rest: list[bytes] = []

    def holder() -> None:
        it = tiny.scan(b"h")
        first = next(it)
        rest.append(first[0])
        took_one.set()
        finish.wait(60)
        rest.extend(k for k, _ in it)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert took_one.wait(10)
        start = time.monotonic()
        for i in range(64):
            tiny.set(b"w%03d" % i, value_for(i, 64 << 10))
        elapsed = time.monotonic() - start
    finally:
        finish.set()
        thread.join()
    assert tiny.map_size > 32 * SMALL_MAP
    assert elapsed < 15
    assert rest == keys


def test_snapshot_ends_clearly_when_the_map_grows(tiny: LMDBStorage) -> None:
    tiny.set(b"a", b"old")
    with tiny.snapshot() as snap:
        tiny.set(b"a", b"new")
        assert snap.get(b"a") == b"old"
        tiny.set(b"big", value_for(1, 4 << 20))
        with pytest.raises(StorageError, match="map grew"):
            snap.get(b"a")
        with pytest.raises(StorageError, match="map grew"):
            list(snap.scan())
    with tiny.snapshot() as snap:
        assert snap.get(b"a") == b"new"
        assert [k for k, _ in snap.scan()] == [b"a", b"big"]


def test_map_grown_by_another_process_is_adopted(tiny: LMDBStorage) -> None:
    tiny.set(b"mine", b"1")
    script = (
        "import lmdb, sys\n"
        "env = lmdb.open(sys.argv[1], map_size=64 << 20)\n"
        "with env.begin(write=True) as txn:\n"
        "    for i in range(2000):\n"
        "        txn.put(b'other%04d' % i, i.to_bytes(4, 'big') * 1024)\n"
        "env.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, tiny.path], check=True, timeout=60)
    assert tiny.get(b"other1999") == (1999).to_bytes(4, "big") * 1024
    assert sum(1 for _ in tiny.scan(b"other")) == 2000
    tiny.set(b"mine", b"2")
    assert tiny.get(b"mine") == b"2"
    assert tiny.map_size >= 64 << 20


# -- key-size limit -----------------------------------------------------------


def test_declared_key_limit_matches_lmdb(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "raw"), map_size=1 << 20)
    try:
        assert env.max_key_size() == MAX_KEY_SIZE
    finally:
        env.close()
    assert LMDBStorage.capabilities.max_key_size == MAX_KEY_SIZE == 511


def test_too_long_key_is_refused_before_anything_is_written(tiny: LMDBStorage) -> None:
    tiny.set(b"x" * 511, b"fits")
    too_long = b"y" * 512
    calls: list[Callable[[], object]] = [
        lambda: tiny.set(too_long, b"v"),
        lambda: tiny.get(too_long),
        lambda: tiny.delete(too_long),
        lambda: tiny.write_batch([(b"ok", b"v"), (too_long, None)]),
    ]
    for call in calls:
        with pytest.raises(KeyTooLargeError, match=r"512 bytes.*limit of 511"):
            call()
    with pytest.raises(KeyTooLargeError, match="511"), tiny.batch() as batch:
        batch.set(b"ok", b"v")
        batch.delete(too_long)
    assert list(tiny.scan()) == [(b"x" * 511, b"fits")]


# -- URL options ----------------------------------------------------------------


def test_url_options(tmp_path: Path) -> None:
    with reopen(f"lmdb://{tmp_path / 'a'}?map_size=3MiB&sync=false&max_readers=9") as store:
        assert store.map_size == 3 << 20
        flags = store._env.flags()
        assert flags["sync"] is False and flags["metasync"] is False
        assert store._env.max_readers() == 9
    with reopen(f"lmdb://{tmp_path / 'b'}") as store:
        assert store.map_size == 64 << 20
        flags = store._env.flags()
        assert flags["sync"] is True and flags["metasync"] is True
    with reopen(f"lmdb://{tmp_path / 'c'}?map_size=1048576") as store:
        assert store.map_size == 1 << 20


@pytest.mark.parametrize(
    "query",
    [
        "map_size=abc",
        "map_size=0",
        "map_size=-5",
        "map_size=1.5MiB",
        "map_size=10MB",
        "map_size=",
        "sync=maybe",
        "max_readers=0",
        "max_readers=many",
        "compression=zstd",
        "map_size=1MiB&bogus=1",
    ],
)
def test_bad_url_options_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(InvalidURLError):
        open_storage(f"lmdb://{tmp_path / 'db'}?{query}")
    assert not (tmp_path / "db").exists()


def test_unknown_option_message_lists_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidURLError, match="map_size, max_readers, sync"):
        open_storage(f"lmdb://{tmp_path}/db?readahead=1")


# -- lifecycle -----------------------------------------------------------------------


def test_scan_interrupted_by_close_raises_closed(tiny: LMDBStorage) -> None:
    tiny.write_batch([(b"k%d" % i, b"v") for i in range(10)])
    it = tiny.scan()
    assert next(it) == (b"k0", b"v")
    tiny.close()
    with pytest.raises(StorageClosedError):
        next(it)
    with pytest.raises(StorageClosedError):
        _ = tiny.map_size


def test_writes_from_many_threads_all_land(tiny: LMDBStorage) -> None:
    def writer(n: int) -> None:
        for i in range(100):
            tiny.set(b"t%d-%03d" % (n, i), value_for(i, 4096))
        tiny.write_batch([(b"u%d-%03d" % (n, i), value_for(i, 1024)) for i in range(100)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for _ in tiny.scan(b"t")) == 400
    assert sum(1 for _ in tiny.scan(b"u")) == 400
    assert tiny.get(b"t3-099") == value_for(99, 4096)
