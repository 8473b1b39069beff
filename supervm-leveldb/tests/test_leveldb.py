"""LevelDB-specific behaviour: URL options, locking, errors, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import plyvel
import pytest

from supervm import open_storage
from supervm.errors import (
    InvalidKeyError,
    InvalidURLError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
)
from supervm.registry import available_backends, load_backend
from supervm.storage import Storage
from supervm_leveldb import LevelDBStorage


def url_for(path: Path, query: str = "") -> str:
    return f"leveldb://{quote(str(path))}" + (f"?{query}" if query else "")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    with open_storage(url_for(tmp_path / "db")) as storage:
        yield storage


# -- registry and URLs ---------------------------------------------------------


def test_open_storage_finds_the_entry_point(tmp_path: Path) -> None:
    assert available_backends()["leveldb"].target == "supervm_leveldb:LevelDBStorage"
    assert load_backend("leveldb") is LevelDBStorage
    with open_storage(url_for(tmp_path / "db")) as storage:
        assert isinstance(storage, LevelDBStorage)
        assert storage.path == str(tmp_path / "db")
        assert storage.sync is False
    assert (tmp_path / "db" / "CURRENT").is_file()


def test_absolute_url_creates_missing_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "db"
    with open_storage(url_for(target)) as storage:
        storage.set(b"k", b"v")
    assert (target / "CURRENT").is_file()


def test_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_storage("leveldb://rel/dir/db") as storage:
        assert isinstance(storage, LevelDBStorage)
        assert storage.path == str(tmp_path / "rel" / "dir" / "db")
        storage.set(b"k", b"v")
    assert (tmp_path / "rel" / "dir" / "db" / "CURRENT").is_file()


def test_percent_encoded_path(tmp_path: Path) -> None:
    target = tmp_path / "with space?and#hash"
    with open_storage(url_for(target)) as storage:
        storage.set(b"k", b"v")
    assert (target / "CURRENT").is_file()


@pytest.mark.parametrize("url", ["leveldb://", "leveldb:///"])
def test_url_without_path_is_refused(url: str) -> None:
    with pytest.raises(InvalidURLError, match="path"):
        open_storage(url)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("cache_size=10", "cache_size"),
        ("sync=true&paranoid=1", "paranoid"),
        ("Sync=true", "Sync"),
        ("sync=maybe", "sync"),
        ("sync=", "sync"),
        ("create=2", "create"),
        ("compression=zstd", "compression"),
        ("compression=", "compression"),
    ],
)
def test_bad_url_options_are_refused(tmp_path: Path, query: str, named: str) -> None:
    with pytest.raises(InvalidURLError, match=named):
        open_storage(url_for(tmp_path / "db", query))
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("off", False)])
def test_sync_option(tmp_path: Path, value: str, expected: bool) -> None:
    with open_storage(url_for(tmp_path / "db", f"sync={value}")) as storage:
        assert isinstance(storage, LevelDBStorage)
        assert storage.sync is expected
        storage.set(b"k", b"v")
        storage.delete(b"k")
        storage.write_batch([(b"a", b"1")])
        with storage.batch() as b:
            b.set(b"b", b"2")
        assert list(storage.scan()) == [(b"a", b"1"), (b"b", b"2")]


def _table_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".ldb", ".sst"))


def test_compression_option_changes_table_size(tmp_path: Path) -> None:
    # Enough data to fill several 4 MiB write buffers, so tables get written.
    chunk = bytes(64 * 1024)
    for name in ("snappy", "none"):
        with open_storage(url_for(tmp_path / name, f"compression={name}")) as storage:
            for i in range(256):
                storage.set(b"k%04d" % i, chunk)
        with open_storage(url_for(tmp_path / name, f"compression={name.upper()}")) as storage:
            assert storage.get(b"k0255") == chunk
    snappy, plain = _table_bytes(tmp_path / "snappy"), _table_bytes(tmp_path / "none")
    assert plain > 8 * 1024 * 1024
    assert snappy * 10 < plain


def test_create_false_refuses_a_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
        open_storage(url_for(missing, "create=false"))
    assert str(missing) in str(info.value)
    assert not missing.exists()


def test_create_false_refuses_a_directory_without_a_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreNotFoundError, match="nothing was created"):
        open_storage(url_for(empty, "create=false"))
    assert list(empty.iterdir()) == []


def test_create_false_opens_an_existing_database(tmp_path: Path) -> None:
    with open_storage(url_for(tmp_path / "db")) as storage:
        storage.set(b"k", b"v")
    with open_storage(url_for(tmp_path / "db", "create=no")) as storage:
        assert storage.get(b"k") == b"v"


def test_constructor_refuses_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        LevelDBStorage(tmp_path / "db", compression="zlib")


# -- locking -------------------------------------------------------------------

_HOLDER = """
import sys
from supervm_leveldb import LevelDBStorage
store = LevelDBStorage(sys.argv[1])
store.set(b"holder", b"yes")
print("opened", flush=True)
sys.stdin.read()
store.close()
"""


def test_database_held_by_another_process_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "opened"
        with pytest.raises(StorageLockedError) as info:
            open_storage(url_for(path))
        assert str(path) in str(info.value)
        assert "lock" in str(info.value).lower()
        assert isinstance(info.value.original, plyvel.IOError)
        assert info.value.__cause__ is info.value.original
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_storage(url_for(path)) as storage:
        assert storage.get(b"holder") == b"yes"


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "opened"
        with pytest.raises(StorageLockedError):
            LevelDBStorage(path)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
    with LevelDBStorage(path) as storage:
        assert storage.get(b"holder") == b"yes"


def test_second_open_in_the_same_process_is_locked(tmp_path: Path) -> None:
    url = url_for(tmp_path / "db")
    first = open_storage(url)
    try:
        with pytest.raises(StorageLockedError, match=str(tmp_path / "db")):
            open_storage(url)
        first.set(b"k", b"still usable")
        assert first.get(b"k") == b"still usable"
    finally:
        first.close()
    with open_storage(url) as second:
        assert second.get(b"k") == b"still usable"


# -- durability ------------------------------------------------------------------


def test_reopen_with_sync_keeps_every_kind_of_write(tmp_path: Path) -> None:
    url = url_for(tmp_path / "db", "sync=true")
    with open_storage(url) as storage:
        storage.set(b"set", b"1")
        storage.set(b"gone", b"x")
        storage.delete(b"gone")
        storage.write_batch([(b"wb", b"2"), (b"empty", b""), (b"set", None), (b"set", b"3")])
        with storage.batch() as b:
            b.set(b"batch", b"4")
            b.delete(b"wb")
    with open_storage(url) as storage:
        assert list(storage.scan()) == [(b"batch", b"4"), (b"empty", b""), (b"set", b"3")]


_WRITER = """
import sys
from supervm import open_storage
store = open_storage(sys.argv[1])
for i in range(100):
    store.set(b"k%03d" % i, b"v%d" % i)
store.write_batch([(b"k000", None), (b"batch", b"done")])
print("written", flush=True)
sys.stdin.read()
"""


def test_synced_writes_survive_a_killed_process(tmp_path: Path) -> None:
    url = url_for(tmp_path / "db", "sync=true")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    with open_storage(url) as storage:
        got = dict(storage.scan())
    assert got.pop(b"batch") == b"done"
    assert got == {b"k%03d" % i: b"v%d" % i for i in range(1, 100)}


# -- errors ------------------------------------------------------------------------


def test_corrupt_database_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open_storage(url_for(path)) as storage:
        storage.set(b"k", b"v")
    (path / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StorageError) as info:
        open_storage(url_for(path))
    assert not isinstance(info.value, StorageLockedError)
    assert str(path) in str(info.value)
    assert isinstance(info.value.original, plyvel.Error)
    assert "b'" not in str(info.value)


def test_path_that_is_a_file_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"not a database")
    with pytest.raises(StorageError) as info:
        open_storage(url_for(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value.original, OSError)


class _Bytes(bytes):
    pass


@pytest.mark.parametrize("bad", [_Bytes(b"k"), bytearray(b"k"), "k", None], ids=repr)
def test_keys_must_be_exactly_bytes(store: Storage, bad: object) -> None:
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
    with store.snapshot() as snap, pytest.raises(TypeError):
        snap.get(bad)  # type: ignore[arg-type]
    assert list(store.scan()) == []


@pytest.mark.parametrize("bad", [_Bytes(b"v"), bytearray(b"v"), memoryview(b"v"), "v"], ids=repr)
def test_values_must_be_exactly_bytes(store: Storage, bad: object) -> None:
    with pytest.raises(TypeError):
        store.set(b"k", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.write_batch([(b"a", b"1"), (b"k", bad)])  # type: ignore[list-item]
    with pytest.raises(TypeError), store.batch() as b:
        b.set(b"a", b"1")
        b.set(b"k", bad)  # type: ignore[arg-type]
    assert list(store.scan()) == []


def test_write_batch_refuses_bad_operations_before_writing(store: Storage) -> None:
    store.set(b"keep", b"old")
    bad_batches: list[list[object]] = [
        [(b"keep", None), [b"a", b"1"]],
        [(b"keep", None), (b"a", b"1", b"2")],
        [(b"keep", None), b"ab"],
        [(b"keep", None), (b"", b"1")],
    ]
    for ops in bad_batches:
        with pytest.raises((TypeError, InvalidKeyError)):
            store.write_batch(ops)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError), store.batch() as b:
        b.delete(b"keep")
        b.delete(b"")
    assert list(store.scan()) == [(b"keep", b"old")]


def test_write_batch_takes_any_iterable(store: Storage) -> None:
    store.write_batch((k, k * 2) for k in (b"b", b"a"))
    store.write_batch({b"b": None}.items())
    assert list(store.scan()) == [(b"a", b"aa")]


# -- batches ---------------------------------------------------------------------


def test_batch_counts_operations_and_is_single_use(store: Storage) -> None:
    b = store.batch()
    b.set(b"a", b"1")
    b.set(b"a", b"2")
    b.delete(b"z")
    assert len(b) == 3
    assert store.get(b"a") is None
    b.commit()
    assert store.get(b"a") == b"2"
    with pytest.raises(RuntimeError, match="already"):
        b.commit()
    with pytest.raises(RuntimeError, match="already"):
        b.set(b"late", b"x")
    with pytest.raises(RuntimeError, match="already"):
        b.delete(b"a")
    b.discard()
    assert list(store.scan()) == [(b"a", b"2")]


def test_discarded_batch_cannot_be_committed(store: Storage) -> None:
    b = store.batch()
    b.set(b"a", b"1")
    b.discard()
    with pytest.raises(RuntimeError, match="already"):
        b.commit()
    assert store.get(b"a") is None


# -- scans -----------------------------------------------------------------------


def test_scan_range_bounds(store: Storage) -> None:
    keys = [b"\x00", b"a", b"a\x00", b"a\xff", b"b", b"\xff", b"\xff\xff"]
    store.write_batch([(k, b"v") for k in keys])

    def rng(start: bytes | None, end: bytes | None, reverse: bool = False) -> list[bytes]:
        return [k for k, _ in store.scan_range(start, end, reverse=reverse)]

    assert rng(b"", None) == keys
    assert rng(None, b"") == []
    assert rng(b"", b"") == []
    assert rng(b"a", b"a") == []
    assert rng(b"a", b"a\x00") == [b"a"]
    assert rng(b"a\x00", b"b", reverse=True) == [b"a\xff", b"a\x00"]
    assert rng(b"\xff", None, reverse=True) == [b"\xff\xff", b"\xff"]
    assert rng(b"b", b"a", reverse=True) == []
    assert rng(None, b"", reverse=True) == []
    with pytest.raises(TypeError):
        store.scan_range("a", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.scan_range(None, None, reverse=1)  # type: ignore[arg-type]


def test_scan_of_all_ff_prefix_and_nul_keys(store: Storage) -> None:
    keys = [b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x00", b"\x00", b"\x00\x00"]
    store.write_batch([(k, k) for k in keys])
    assert [k for k, _ in store.scan(b"\xff\xff")] == [b"\xff\xff", b"\xff\xff\x00"]
    assert [k for k, _ in store.scan(b"\xff")] == [
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
        b"\xff\xff\x00",
    ]
    assert [k for k, _ in store.scan(b"\x00")] == [b"\x00", b"\x00\x00"]
    assert [k for k, _ in store.scan(b"\x00\x00\x00")] == []
    assert [k for k, _ in store.scan()] == sorted(keys)


def test_scan_sees_the_store_as_it_was_when_started(store: Storage) -> None:
    store.write_batch([(b"p1", b"1"), (b"p2", b"2")])
    items = store.scan(b"p")
    store.set(b"p3", b"3")
    store.delete(b"p1")
    assert list(items) == [(b"p1", b"1"), (b"p2", b"2")]


# -- snapshots -------------------------------------------------------------------


def test_snapshot_prefix_scan_and_close(store: Storage) -> None:
    store.write_batch([(b"a1", b"1"), (b"a2", b"2"), (b"b1", b"3")])
    snap = store.snapshot()
    store.write_batch([(b"a1", None), (b"a3", b"new")])
    assert list(snap.scan(b"a")) == [(b"a1", b"1"), (b"a2", b"2")]
    with pytest.raises(InvalidKeyError):
        snap.get(b"")
    with pytest.raises(TypeError):
        snap.scan("a")  # type: ignore[arg-type]
    snap.close()
    snap.close()
    with pytest.raises(StorageClosedError):
        snap.get(b"a1")
    with pytest.raises(StorageClosedError):
        list(snap.scan())


def test_snapshot_after_store_close(tmp_path: Path) -> None:
    storage = open_storage(url_for(tmp_path / "db"))
    storage.set(b"k", b"v")
    snap = storage.snapshot()
    storage.close()
    with pytest.raises(StorageClosedError):
        snap.get(b"k")
    snap.close()


# -- closing -----------------------------------------------------------------------


def test_closed_store_refuses_every_operation(tmp_path: Path) -> None:
    storage = open_storage(url_for(tmp_path / "db"))
    storage.set(b"k", b"v")
    storage.close()
    for call in (
        lambda: storage.scan_range(b"a", b"z"),
        lambda: storage.snapshot(),
        lambda: storage.write_batch([]),
        lambda: storage.get(b"k"),
    ):
        with pytest.raises(StorageClosedError, match=str(tmp_path / "db")):
            call()
    storage.close()
    assert "closed" in repr(storage)


def test_batch_committed_after_close_raises_closed(tmp_path: Path) -> None:
    storage = open_storage(url_for(tmp_path / "db"))
    b = storage.batch()
    b.set(b"k", b"v")
    storage.close()
    with pytest.raises(StorageClosedError) as info:
        b.commit()
    assert isinstance(info.value.original, RuntimeError)
    with LevelDBStorage(tmp_path / "db") as reopened:
        assert reopened.get(b"k") is None


def test_batch_used_after_close_raises_closed(tmp_path: Path) -> None:
    storage = open_storage(url_for(tmp_path / "db"))
    b = storage.batch()
    storage.close()
    with pytest.raises(StorageClosedError):
        b.set(b"k", b"v")
    with pytest.raises(StorageClosedError):
        b.delete(b"k")
    with pytest.raises(StorageClosedError), storage.batch():
        pass
    b.discard()


def test_scan_interrupted_by_close_raises_closed(tmp_path: Path) -> None:
    storage = open_storage(url_for(tmp_path / "db"))
    storage.write_batch([(b"k%d" % i, b"v") for i in range(10)])
    items = storage.scan()
    assert next(items) == (b"k0", b"v")
    storage.close()
    with pytest.raises(StorageClosedError):
        next(items)


def test_close_releases_the_lock(tmp_path: Path) -> None:
    for _ in range(3):
        storage = LevelDBStorage(tmp_path / "db")
        storage.set(b"n", (storage.get(b"n") or b"") + b"x")
        storage.close()
    with LevelDBStorage(tmp_path / "db") as storage:
        assert storage.get(b"n") == b"xxx"
