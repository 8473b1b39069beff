"""LevelDB-specific behaviour: URL options, compression, durability, errors, closing.

What every store in files shares (paths, create=false, locking) is checked by the
conformance kit in test_conformance.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import plyvel
import pytest

from supervm import open_storage
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
)
from supervm.storage import Storage
from supervm_leveldb import LevelDBStorage


def url_for(path: Path, query: str = "") -> str:
    return f"leveldb://{quote(str(path))}" + (f"?{query}" if query else "")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    with open_storage(url_for(tmp_path / "db")) as storage:
        yield storage


# -- registry and URLs ---------------------------------------------------------


def test_percent_encoded_path(tmp_path: Path) -> None:
    target = tmp_path / "with space?and#hash"
    with open_storage(url_for(target)) as storage:
        storage.set(b"k", b"v")
    assert (target / "CURRENT").is_file()


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


def test_constructor_refuses_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        LevelDBStorage(tmp_path / "db", compression="zlib")


# -- durability ------------------------------------------------------------------


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


# -- scans -----------------------------------------------------------------------


def test_scan_sees_the_store_as_it_was_when_started(store: Storage) -> None:
    store.write_batch([(b"p1", b"1"), (b"p2", b"2")])
    items = store.scan(b"p")
    store.set(b"p3", b"3")
    store.delete(b"p1")
    assert list(items) == [(b"p1", b"1"), (b"p2", b"2")]


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
