"""MvccStore over every first-party back end: snapshots, write-through, reopening, gc.

PostgreSQL runs against ``SUPERVM_TEST_POSTGRES_URL`` and MariaDB against
``SUPERVM_TEST_MARIADB_URL``, each in a fresh table dropped afterwards. When a
server cannot be reached its cases are skipped, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervm import Storage, StorageConnectionError, open_storage
from supervm.mvcc import ConflictError, MvccStore

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_MARIADB_URL = "mariadb+pymysql://root@127.0.0.1:3306/test"
#: Server back ends: (variable naming the server, its default, name in messages).
SERVERS = {
    "postgresql": ("SUPERVM_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL, "PostgreSQL"),
    "mariadb": ("SUPERVM_TEST_MARIADB_URL", DEFAULT_MARIADB_URL, "MariaDB"),
}

BACKENDS = [
    "memory",
    "rocksdb",
    "lmdb",
    "leveldb",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]

Opener = Callable[[], Storage]


def _server_url(name: str) -> str:
    variable, default, _ = SERVERS[name]
    base = os.environ.get(variable, default)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}table=t_{uuid.uuid4().hex}"


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL naming an empty store of each back end."""
    name = request.param
    if name not in SERVERS:
        yield {
            "memory": "memory://",
            "rocksdb": f"rocksdb://{tmp_path}/db",
            "lmdb": f"lmdb://{tmp_path}/db",
            "leveldb": f"leveldb://{tmp_path}/db",
            "sqlite": f"sqlite:///{tmp_path}/db.sqlite",
        }[name]
        return
    url = _server_url(name)
    variable, _, kind = SERVERS[name]
    try:
        probe = open_storage(url)
    except StorageConnectionError as exc:
        problem = f"{kind} server is unreachable: " + " ".join(str(exc).split())
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: the {kind} tests must not be skipped)")
        pytest.skip(f"{problem}; set {variable} to run the {kind} tests")
    probe.close()
    yield url
    dropper = open_storage(url)
    dropper.drop()  # type: ignore[attr-defined]


@pytest.fixture
def opener(backend_url: str) -> Iterator[Opener]:
    """Opens the back end's store (a new handle each call, one shared for memory://)."""
    opened: list[Storage] = []

    def open_() -> Storage:
        if backend_url == "memory://" and opened:
            return opened[0]  # memory:// keeps nothing across opens: reuse the one store
        storage = open_storage(backend_url)
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


def put(store: MvccStore, pairs: dict[bytes, bytes | None]) -> int:
    with store.begin() as tx:
        for key, value in pairs.items():
            if value is None:
                tx.delete(key)
            else:
                tx.set(key, value)
    ts = tx.commit_ts
    assert ts is not None
    return ts


def test_snapshot_reads(opener: Opener) -> None:
    with MvccStore(opener()) as store:
        put(store, {b"acct/a": b"10", b"acct/b": b"20", b"acct/c": b"30"})
        old = store.begin()
        put(store, {b"acct/a": b"11", b"acct/b": None, b"acct/d": b"40"})
        mid = store.begin()
        put(store, {b"acct/a": b"12", b"acct/\xff": b"99"})

        assert old.get(b"acct/a") == b"10" and old.get(b"acct/d") is None
        assert list(old.scan(b"acct/")) == [
            (b"acct/a", b"10"),
            (b"acct/b", b"20"),
            (b"acct/c", b"30"),
        ]
        assert list(mid.scan(b"acct/")) == [
            (b"acct/a", b"11"),
            (b"acct/c", b"30"),
            (b"acct/d", b"40"),
        ]
        with store.begin() as now:
            assert list(now.scan(b"acct/")) == [
                (b"acct/a", b"12"),
                (b"acct/c", b"30"),
                (b"acct/d", b"40"),
                (b"acct/\xff", b"99"),
            ]
        # Own writes merge into the snapshot; first committer wins.
        old.set(b"acct/c", b"31")
        old.delete(b"acct/a")
        assert list(old.scan(b"acct/")) == [(b"acct/b", b"20"), (b"acct/c", b"31")]
        with pytest.raises(ConflictError):
            old.commit()
        mid.set(b"acct/c", b"32")
        mid.commit()

        store.gc()
        assert store.stats().chains == 0
        with store.begin() as now:
            assert now.get(b"acct/c") == b"32"  # read straight from the back end


def test_write_through(opener: Opener) -> None:
    storage = opener()
    with MvccStore(storage) as store:
        put(store, {b"k1": b"v1", b"k2": b"v2", b"k3": b""})
        assert dict(storage.scan()) == {b"k1": b"v1", b"k2": b"v2", b"k3": b""}
        tx = store.begin()
        tx.set(b"k1", b"changed")
        tx.delete(b"k2")
        assert storage.get(b"k1") == b"v1"  # nothing written before commit
        tx.commit()
        assert dict(storage.scan()) == {b"k1": b"changed", b"k3": b""}
        aborted = store.begin()
        aborted.set(b"k9", b"never")
        aborted.abort()
        assert storage.get(b"k9") is None
    assert not storage.closed


def test_reopen(opener: Opener) -> None:
    first = opener()
    persistent = first.capabilities.persistent
    # A persistent store is really closed and reopened; memory:// only gets a new MvccStore.
    store = MvccStore(first, close_storage=persistent)
    put(store, {b"a": b"1", b"b": b"2", b"c": b"3"})
    put(store, {b"b": None, b"c": b"33"})
    store.close()
    assert first.closed == persistent

    again = opener()
    with MvccStore(again) as store2:
        assert store2.oracle.now() == 0
        with store2.begin() as tx:
            assert list(tx.scan()) == [(b"a", b"1"), (b"c", b"33")]
            tx.set(b"d", b"4")
        old = store2.begin()
        put(store2, {b"a": b"11"})
        assert old.get(b"a") == b"1"
        old.commit()
    assert again.get(b"a") == b"11" and again.get(b"d") == b"4"


def test_concurrent_increments(opener: Opener) -> None:
    with MvccStore(opener(), gc_interval=0.005) as store:
        put(store, {b"counter": b"0"})
        done = [0] * 4

        def worker(n: int) -> None:
            while done[n] < 10:
                tx = store.begin()
                value = tx.get(b"counter")
                assert value is not None
                tx.set(b"counter", str(int(value) + 1).encode())
                try:
                    tx.commit()
                except ConflictError:
                    continue
                done[n] += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.storage.get(b"counter") == b"40"
        assert store.stats().commits == 41
