"""SQLite-specific behaviour of the SQL back end."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervm import open_storage
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
)
from supervm.url import parse_url
from supervm_sql import SQLiteStorage, SQLStorage


def open_sqlite(url: str) -> SQLiteStorage:
    store = open_storage(url)
    assert isinstance(store, SQLiteStorage)
    return store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "kv.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStorage]:
    s = open_sqlite(f"sqlite:///{db_path}")
    yield s
    s.close()


def test_absolute_path_creates_directories_and_file(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with open_sqlite(f"sqlite:///{db_path}") as store:
        store.set(b"k", b"v")
    assert db_path.is_file()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT key, value FROM supervm_kv").fetchall() == [(b"k", b"v")]


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_sqlite("sqlite:///rel/dir/kv.db") as store:
        store.set(b"k", b"v")
    assert (tmp_path / "rel" / "dir" / "kv.db").is_file()
    with open_sqlite("sqlite:///rel/dir/kv.db") as store:
        assert store.get(b"k") == b"v"


def test_create_false_creates_no_directory_file_or_table(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "kv.db"
    with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
        open_storage(f"sqlite:///{db}?create=false")
    assert str(db) in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # A database file without the store's table: the table is not created either.
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE other (x)")
    raw.close()
    with pytest.raises(StoreNotFoundError, match="supervm_kv"):
        open_storage(f"sqlite:///{db}", create=False)
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("other",)]
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    raw.close()
    assert [p.name for p in db.parent.iterdir()] == ["kv.db"]
    with open_sqlite(f"sqlite:///{db}") as store:
        store.set(b"k", b"v")
    with open_sqlite(f"sqlite:///{db}?create=false") as store:
        assert store.get(b"k") == b"v"


def test_in_memory_store_ignores_create() -> None:
    with open_sqlite("sqlite://?create=false") as store:
        store.set(b"k", b"v")
        assert list(store.scan()) == [(b"k", b"v")]


def test_wal_journal_and_sync_option(db_path: Path) -> None:
    with open_sqlite(f"sqlite:///{db_path}?sync=false") as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    with open_sqlite(f"sqlite:///{db_path}?sync=true") as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
def test_in_memory_stores_are_private_and_forgotten(url: str) -> None:
    keys = [i.to_bytes(2, "big") for i in range(2500)]
    with open_sqlite(url) as a, open_sqlite(url) as b:
        a.write_batch([(k, k) for k in keys])
        assert b.get(keys[0]) is None
        assert [k for k, _ in a.scan()] == keys
        assert [k for k, _ in a.scan_range(reverse=True)] == keys[::-1]
    with open_sqlite(url) as again:
        assert list(again.scan()) == []


def test_tables_in_one_file_are_isolated(db_path: Path) -> None:
    with (
        open_sqlite(f"sqlite:///{db_path}?table=first") as a,
        open_sqlite(f"sqlite:///{db_path}?table=second") as b,
    ):
        a.set(b"k", b"a")
        b.set(b"k", b"b")
        b.set(b"only-b", b"1")
        assert list(a.scan()) == [(b"k", b"a")]
        assert list(b.scan()) == [(b"k", b"b"), (b"only-b", b"1")]
        assert a.table == "first"
    with sqlite3.connect(db_path) as raw:
        tables = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert sorted(tables) == [("first",), ("second",)]


@pytest.mark.parametrize(
    "query",
    ["bogus=1", "table=1bad", "timeout=-1", "timeout=soon", "retries=-2", "sync=perhaps"],
)
def test_bad_options_are_refused(db_path: Path, query: str) -> None:
    with pytest.raises(InvalidURLError):
        open_storage(f"sqlite:///{db_path}?{query}")
    assert not db_path.exists()


def test_host_in_a_sqlite_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidURLError, match="sqlite:///"):
        open_storage(f"sqlite://somehost/{tmp_path}/kv.db")


def test_locked_database_raises_storage_locked_error(db_path: Path) -> None:
    with open_sqlite(f"sqlite:///{db_path}?timeout=0.2") as store:
        store.set(b"k", b"v")
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO supervm_kv VALUES (x'01', x'01')")
            started = time.monotonic()
            with pytest.raises(StorageLockedError) as info:
                store.set(b"k", b"new")
            assert time.monotonic() - started >= 0.15
            assert isinstance(info.value.original, sqlite3.OperationalError)
            assert "locked" in str(info.value)
            with pytest.raises(StorageLockedError):
                store.write_batch([(b"a", b"1"), (b"k", None)])
            # Readers are not blocked by a writer under WAL.
            assert store.get(b"k") == b"v"
            assert list(store.scan()) == [(b"k", b"v")]
        finally:
            other.rollback()
            other.close()
        store.write_batch([(b"a", b"1"), (b"k", None)])
        assert list(store.scan()) == [(b"a", b"1")]


def test_scans_search_the_primary_key_index(store: SQLiteStorage) -> None:
    store.write_batch([(b"k%05d" % i, b"v") for i in range(3000)])
    # Scans run on a connection of their own, kept for the next scan.
    assert len(list(store.scan())) == 3000
    (scan_conn,) = [raw.driver_connection for raw in store._idle]
    assert isinstance(scan_conn, sqlite3.Connection)
    statements: list[str] = []
    scan_conn.set_trace_callback(statements.append)
    assert len(list(store.scan(b"k001"))) == 100
    assert len(list(store.scan_range(b"k00100", b"k00110", reverse=True))) == 10
    scan_conn.set_trace_callback(None)
    assert len(statements) == 2
    for sql in statements:
        assert "LIKE" not in sql.upper()
        # SQLite counts "key" among its keywords: the column name is quoted.
        assert sql.startswith('SELECT "key", value FROM "supervm_kv" WHERE "key" >= ')
        assert ' AND "key" < ' in sql
    assert 'ORDER BY "key" DESC' in statements[1]
    for reverse in (False, True):
        query = store._range_sql(True, True, reverse, False)
        plan = store._conn.execute(f"EXPLAIN QUERY PLAN {query}", (b"k001", b"k002")).fetchall()
        detail = " ".join(str(row[-1]) for row in plan)
        assert "SEARCH supervm_kv USING INDEX sqlite_autoindex_supervm_kv_1 (key>? AND key<?)" in (
            detail
        )
        assert "TEMP B-TREE" not in detail  # the index gives the order, no sort


def test_large_scan_streams_one_consistent_view(store: SQLiteStorage) -> None:
    keys = [b"r%05d" % i for i in range(2500)]
    store.write_batch([(k, b"old") for k in keys])
    scan = store.scan(b"r")
    assert next(scan) == (keys[0], b"old")
    store.write_batch([(k, None) for k in keys[1:]] + [(b"r99999", b"new")])
    assert list(scan) == [(k, b"old") for k in keys[1:]]
    assert list(store.scan(b"r")) == [(keys[0], b"old"), (b"r99999", b"new")]
    assert len(store._idle) == 1


def test_closing_the_store_ends_open_scans(store: SQLiteStorage) -> None:
    store.write_batch([(b"r%05d" % i, b"v") for i in range(2500)])
    scan = store.scan(b"r")
    next(scan)
    store.close()
    with pytest.raises(StorageClosedError):
        list(scan)


def test_table_of_another_shape_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    with pytest.raises(StorageError, match="other"):
        open_storage(f"sqlite:///{db_path}?table=other")


def test_driver_error_is_a_storage_error_with_the_original(
    store: SQLiteStorage, db_path: Path
) -> None:
    store.set(b"k", b"v")
    with sqlite3.connect(db_path) as raw:
        raw.execute("DROP TABLE supervm_kv")
    with pytest.raises(StorageError) as info:
        store.get(b"k")
    assert not isinstance(info.value, StorageLockedError)
    assert isinstance(info.value.original, sqlite3.OperationalError)
    assert info.value.__cause__ is info.value.original


def test_drop_removes_the_table(store: SQLiteStorage, db_path: Path) -> None:
    store.set(b"k", b"v")
    store.drop()
    assert store.closed
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_entry_point_class_opens_sqlite(db_path: Path) -> None:
    from supervm.registry import available_backends, load_backend

    assert available_backends()["sqlite"].distribution == "supervm-sql"
    cls = load_backend("sqlite")
    assert cls is SQLiteStorage
    assert cls.schemes == ("sqlite", "sqlite+pysqlite")
    assert cls.url_form.startswith("sqlite:///")
    with open_storage(f"sqlite:///{db_path}") as store:
        assert isinstance(store, SQLiteStorage)
        assert repr(store).startswith("<SQLiteStorage ")
    # The shared class opens every registered dialect's URLs, as it always did.
    with SQLStorage.from_url(parse_url(f"sqlite:///{db_path}")) as store:
        assert type(store) is SQLiteStorage


def test_the_shared_store_imports_no_driver_but_sqlite3() -> None:
    """supervm-sql needs SQLAlchemy alone: importing it loads neither psycopg nor PyMySQL."""
    import subprocess
    import sys

    code = (
        "import sys, supervm_sql; "
        "print(sorted(m for m in ('psycopg', 'pymysql', 'supervm_postgres', 'supervm_mariadb') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
