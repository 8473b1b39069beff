"""PostgreSQL-specific behaviour of the SQL back end, against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from supervm import open_storage
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StoreNotFoundError,
)
from supervm.url import parse_url
from supervm_postgres import DEFAULT_TABLE, PostgresStorage, SQLiteStorage, SQLStorage

Admin = psycopg.Connection[tuple[object, ...]]
UNREACHABLE = "postgresql://bob:sekrit@127.0.0.1:1/test"


def open_pg(url: str) -> PostgresStorage:
    store = open_storage(url)
    assert isinstance(store, PostgresStorage)
    return store


def terminate(admin: Admin, pid: int) -> None:
    """Kill a server backend and wait until it is gone."""
    row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row == (True,)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if alive is None:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} is still alive")


def active_queries(admin: Admin, table: str) -> list[tuple[object, ...]]:
    """``(pid, state, wait_event, query)`` of other sessions whose last query names ``table``."""
    return admin.execute(
        "SELECT pid, state, wait_event, query FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND position(%s in query) > 0",
        (f'"{table}"',),
    ).fetchall()


@pytest.fixture
def store(table_url: str) -> Iterator[PostgresStorage]:
    s = open_pg(table_url)
    yield s
    s.close()


# -- URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["1abc", "a-b", "a b", 'x"; DROP TABLE y; --', "", "x" * 64, "tablé", "a.b"],
    ids=repr,
)
def test_bad_table_name_is_refused_before_connecting(name: str) -> None:
    for url in (f"{UNREACHABLE}?table={name}", f"sqlite://?table={name}"):
        with pytest.raises(InvalidURLError, match="table"):
            open_storage(url)


@pytest.mark.parametrize(
    "query",
    ["bogus=1", "retries=-1", "retries=many", "sync=maybe", "timeout=5", "replication=1"],
)
def test_bad_option_is_refused_without_leaking_the_password(query: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        open_storage(f"{UNREACHABLE}?{query}")
    assert query.split("=")[0] in str(info.value)
    assert "sekrit" not in str(info.value)


def test_password_in_query_is_masked_in_errors() -> None:
    with pytest.raises(InvalidURLError) as info:
        open_storage("postgresql://bob@127.0.0.1:1/test?password=sekrit&bogus=1")
    assert "sekrit" not in str(info.value)
    assert "bogus" in str(info.value)


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgresql+asyncpg"])
def test_other_postgres_drivers_are_refused(scheme: str) -> None:
    with pytest.raises(InvalidURLError, match="psycopg 3"):
        open_storage(f"{scheme}://bob:sekrit@127.0.0.1:1/test")


def test_subclass_opens_only_its_own_scheme() -> None:
    with pytest.raises(InvalidURLError, match="SQLiteStorage"):
        SQLiteStorage.from_url(parse_url(UNREACHABLE))
    with pytest.raises(InvalidURLError, match="PostgresStorage"):
        PostgresStorage.from_url(parse_url("sqlite://"))


def test_unreachable_server_is_a_connection_error_naming_the_host() -> None:
    started = time.monotonic()
    with pytest.raises(StorageConnectionError) as info:
        open_storage(f"{UNREACHABLE}?connect_timeout=5")
    error = info.value
    assert isinstance(error, StorageError)
    assert "127.0.0.1:1" in str(error)
    assert "sekrit" not in str(error)
    assert isinstance(error.original, psycopg.OperationalError)
    assert error.__cause__ is error.original
    assert time.monotonic() - started < 10


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg3(postgres_url: str, table_url: str) -> None:
    plain = make_url(table_url).set(drivername="postgresql").render_as_string(False)
    assert plain.startswith("postgresql://")
    with open_pg(plain) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert isinstance(store._conn, psycopg.Connection)
        store.set(b"k", b"v")
        assert store.get(b"k") == b"v"


@pytest.mark.postgres
def test_libpq_parameters_and_sync_option_reach_the_session(
    table_url: str, pg_admin: Admin, with_options: Callable[..., str]
) -> None:
    url = with_options(table_url, application_name="supervm_test_app", sync="false")
    with open_pg(url) as store:
        row = pg_admin.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (store.backend_pid(),)
        ).fetchone()
        assert row == ("supervm_test_app",)
        assert store._conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with open_pg(with_options(table_url, sync="true")) as store:
        assert store._conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


# -- tables ---------------------------------------------------------------------


@pytest.mark.postgres
def test_table_is_created_with_a_bytea_primary_key(store: PostgresStorage, pg_admin: Admin) -> None:
    columns = pg_admin.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        (store.table,),
    ).fetchall()
    assert columns == [("key", "bytea", "NO"), ("value", "bytea", "NO")]
    pkey = pg_admin.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (f'"{store.table}"',),
    ).fetchall()
    assert pkey == [("key",)]


@pytest.mark.postgres
def test_stores_with_different_tables_do_not_see_each_other(
    postgres_url: str,
    pg_admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
) -> None:
    first, second = unique_table(), unique_table()
    try:
        with (
            open_pg(with_options(postgres_url, table=first)) as a,
            open_pg(with_options(postgres_url, table=second)) as b,
            open_pg(with_options(postgres_url, table=first)) as a2,
        ):
            a.set(b"k", b"from a")
            b.write_batch([(b"k", b"from b"), (b"only-b", b"1")])
            assert a.get(b"k") == b"from a"
            assert b.get(b"k") == b"from b"
            assert a.get(b"only-b") is None
            assert list(a.scan()) == [(b"k", b"from a")]
            assert list(b.scan()) == [(b"k", b"from b"), (b"only-b", b"1")]
            # A second store on the same table shares its rows.
            assert list(a2.scan()) == [(b"k", b"from a")]
        for table, count in ((first, 1), (second, 2)):
            row = pg_admin.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            assert row == (count,)
    finally:
        for table in (first, second):
            pg_admin.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.postgres
def test_mixed_case_table_name_is_kept(
    postgres_url: str, pg_admin: Admin, with_options: Callable[..., str]
) -> None:
    table = f"Mixed_{int(time.time() * 1e6)}"
    try:
        with open_pg(with_options(postgres_url, table=table)) as store:
            store.set(b"k", b"v")
        row = pg_admin.execute(f'SELECT key, value FROM "{table}"').fetchone()
        assert row == (b"k", b"v")
    finally:
        pg_admin.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.postgres
def test_default_table_name(postgres_url: str, pg_admin: Admin) -> None:
    assert DEFAULT_TABLE == "supervm_kv"
    existed = pg_admin.execute("SELECT to_regclass('supervm_kv')").fetchone() != (None,)
    try:
        with open_pg(postgres_url) as store:
            assert store.table == DEFAULT_TABLE
        assert pg_admin.execute("SELECT to_regclass('supervm_kv')").fetchone() != (None,)
    finally:
        if not existed:
            pg_admin.execute("DROP TABLE IF EXISTS supervm_kv")


@pytest.mark.postgres
def test_create_false_creates_no_table(
    postgres_url: str,
    pg_admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
) -> None:
    table = unique_table()
    # A password in the URL (the test server does not ask for one) never shows.
    url = make_url(with_options(postgres_url, table=table)).set(password="sekrit")
    url_text = url.render_as_string(hide_password=False)
    try:
        with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
            open_storage(url_text, create=False)
        assert table in str(info.value)
        assert "sekrit" not in str(info.value)
        with pytest.raises(StoreNotFoundError):
            open_storage(with_options(url_text, create="false"))
        exists = pg_admin.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()
        assert exists == (None,)
        with open_pg(url_text) as store:
            store.set(b"k", b"v")
        with open_pg(with_options(url_text, create="false")) as store:
            assert store.get(b"k") == b"v"
    finally:
        pg_admin.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.postgres
def test_table_of_another_shape_is_refused(
    postgres_url: str,
    pg_admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
) -> None:
    table = unique_table()
    pg_admin.execute(f'CREATE TABLE "{table}" (id integer primary key)')
    try:
        with pytest.raises(StorageError, match=table) as info:
            open_storage(with_options(postgres_url, table=table))
        assert isinstance(info.value.original, psycopg.Error)
    finally:
        pg_admin.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.postgres
def test_drop_removes_the_table_and_closes(table_url: str, pg_admin: Admin) -> None:
    store = open_pg(table_url)
    store.set(b"k", b"v")
    table = store.table
    store.drop()
    assert store.closed
    exists = pg_admin.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()
    assert exists == (None,)
    with pytest.raises(StorageClosedError):
        store.drop()


@pytest.mark.postgres
def test_drop_ends_open_scans_first(
    table_url: str, pg_admin: Admin, with_options: Callable[..., str]
) -> None:
    # lock_timeout turns a drop blocked by the open scan into an error instead of a hang.
    store = open_pg(with_options(table_url, options="-c lock_timeout=5000"))
    store.write_batch([(b"s%06d" % i, b"v" * 500) for i in range(20000)])
    scan = store.scan(b"s")
    next(scan)
    table = store.table
    store.drop()
    exists = pg_admin.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()
    assert exists == (None,)
    with pytest.raises(StorageClosedError):
        list(scan)


@pytest.mark.postgres
def test_closed_store_refuses_postgres_extras(store: PostgresStorage) -> None:
    store.close()
    with pytest.raises(StorageClosedError):
        store.backend_pid()
    with pytest.raises(StorageClosedError):
        list(store.scan_range(b"a", b"b"))


@pytest.mark.postgres
def test_driver_error_is_a_storage_error_with_the_original(
    store: PostgresStorage, pg_admin: Admin
) -> None:
    store.set(b"k", b"v")
    pg_admin.execute(f'DROP TABLE "{store.table}"')
    with pytest.raises(StorageError) as info:
        store.get(b"k")
    assert not isinstance(info.value, StorageConnectionError)
    assert isinstance(info.value.original, psycopg.errors.UndefinedTable)
    assert info.value.__cause__ is info.value.original
    with pytest.raises(StorageError):
        store.write_batch([(b"a", b"1")])


# -- lost connections -----------------------------------------------------------


OPERATIONS: dict[str, Callable[[SQLStorage], object]] = {
    "get": lambda s: s.get(b"k"),
    "set": lambda s: s.set(b"k2", b"v2"),
    "delete": lambda s: s.delete(b"gone"),
    "write_batch": lambda s: s.write_batch([(b"k3", b"v3"), (b"gone", None)]),
    "scan": lambda s: list(s.scan(b"k")),
}


@pytest.mark.postgres
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_lost_connection_is_retried_transparently(
    store: PostgresStorage, pg_admin: Admin, operation: str
) -> None:
    store.write_batch([(b"k", b"v"), (b"gone", b"x")])
    pid = store.backend_pid()
    terminate(pg_admin, pid)
    OPERATIONS[operation](store)
    assert store.backend_pid() != pid
    expected = {b"k": b"v", b"gone": b"x"}
    if operation == "set":
        expected[b"k2"] = b"v2"
    elif operation == "delete":
        del expected[b"gone"]
    elif operation == "write_batch":
        expected[b"k3"] = b"v3"
        del expected[b"gone"]
    assert dict(store.scan()) == expected


@pytest.mark.postgres
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_lost_connection_surfaces_with_no_retries_then_reconnects(
    table_url: str, pg_admin: Admin, with_options: Callable[..., str], operation: str
) -> None:
    with open_pg(with_options(table_url, retries="0")) as store:
        store.write_batch([(b"k", b"v"), (b"gone", b"x")])
        pid = store.backend_pid()
        terminate(pg_admin, pid)
        with pytest.raises(StorageConnectionError) as info:
            OPERATIONS[operation](store)
        assert isinstance(info.value.original, psycopg.OperationalError)
        assert info.value.__cause__ is info.value.original
        assert "127.0.0.1" in str(info.value) or "localhost" in str(info.value)
        # Nothing of the failed call landed.
        check = open_pg(table_url)
        try:
            assert dict(check.scan()) == {b"k": b"v", b"gone": b"x"}
        finally:
            check.close()
        # The next call reconnects and works.
        assert store.get(b"k") == b"v"
        assert store.backend_pid() != pid
        OPERATIONS[operation](store)
        store.set(b"after", b"1")
        assert store.get(b"after") == b"1"


@pytest.mark.postgres
def test_retry_gives_up_when_the_server_stays_away(store: PostgresStorage, pg_admin: Admin) -> None:
    store.set(b"k", b"v")
    terminate(pg_admin, store.backend_pid())
    # Point the engine at a closed port: reconnection fails, the error names the host.
    good_engine = store._engine
    store._engine = open_engine_to(UNREACHABLE)
    try:
        with pytest.raises(StorageConnectionError) as info:
            store.get(b"k")
        assert isinstance(info.value.original, psycopg.OperationalError)
    finally:
        store._engine.dispose()
        store._engine = good_engine
    assert store.get(b"k") == b"v"


def open_engine_to(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), poolclass=NullPool
    )


# -- scans ------------------------------------------------------------------------


def explain(admin: Admin, query: str, params: tuple[bytes, ...]) -> str:
    """The plan of ``query`` (with ``$n`` placeholders) for ``params``."""
    for n in range(len(params), 0, -1):
        query = query.replace(f"${n}", "%s")
    rows = admin.execute(f"EXPLAIN {query}", params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.postgres
def test_scans_are_key_ranges_on_the_primary_key(store: PostgresStorage, pg_admin: Admin) -> None:
    table = store.table
    filler = b"f" * 1000
    for start in range(0, 30000, 5000):
        store.write_batch([(b"big%06d" % i, filler) for i in range(start, start + 5000)])
    store.write_batch([(b"a%04d" % i, b"x") for i in range(50)])
    store.write_batch([(b"z%04d" % i, b"x") for i in range(50)])
    pg_admin.execute(f'ANALYZE "{table}"')

    # A small scan: one statement on the store's own connection.
    assert [k for k, _ in store.scan(b"a001")] == [b"a%04d" % i for i in range(10, 20)]
    (page_query,) = [
        q for pid, _, _, q in active_queries(pg_admin, table) if pid == store.backend_pid()
    ]
    assert isinstance(page_query, str)
    assert "LIKE" not in page_query.upper()
    assert "WHERE key >= $1 AND key < $2 ORDER BY key LIMIT" in page_query
    assert f"Index Scan using {table}_pkey" in explain(pg_admin, page_query, (b"a001", b"a002"))

    # A huge scan streams: the server is still sending while we hold the iterator.
    scan = store.scan(b"big")
    assert next(scan) == (b"big000000", filler)
    deadline = time.monotonic() + 10
    while True:
        streaming = [
            (state, wait, q)
            for pid, state, wait, q in active_queries(pg_admin, table)
            if pid != store.backend_pid()
        ]
        assert len(streaming) == 1
        state, wait, stream_query = streaming[0]
        assert state == "active"
        # The backend blocks sending rows nobody has read yet.
        if wait == "ClientWrite" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert wait == "ClientWrite"
    assert isinstance(stream_query, str)
    assert "LIKE" not in stream_query.upper()
    assert stream_query.endswith("WHERE key >= $1 AND key < $2 ORDER BY key")
    plan = explain(pg_admin, stream_query, (b"big00001", b"big00002"))
    assert f"Index Scan using {table}_pkey" in plan
    rest = [k for k, _ in scan]
    assert rest == [b"big%06d" % i for i in range(1, 30000)]

    # Reverse range scans run ORDER BY key DESC on the same index.
    got = [k for k, _ in store.scan_range(b"a0010", b"a0013", reverse=True)]
    assert got == [b"a0012", b"a0011", b"a0010"]
    (reverse_query,) = [
        q for pid, _, _, q in active_queries(pg_admin, table) if pid == store.backend_pid()
    ]
    assert isinstance(reverse_query, str)
    assert "ORDER BY key DESC" in reverse_query
    plan = explain(pg_admin, reverse_query, (b"a0010", b"a0013"))
    assert f"Index Scan Backward using {table}_pkey" in plan


@pytest.mark.postgres
def test_large_scan_is_one_consistent_view(store: PostgresStorage) -> None:
    keys = [b"r%05d" % i for i in range(2500)]
    store.write_batch([(k, b"old") for k in keys])
    scan = store.scan(b"r")
    assert next(scan) == (keys[0], b"old")
    # Writes through the same store while the scan is open do not show up in it.
    store.write_batch([(k, None) for k in keys[1:]] + [(b"r99999", b"new")])
    rest = list(scan)
    assert rest == [(k, b"old") for k in keys[1:]]
    assert list(store.scan(b"r")) == [(keys[0], b"old"), (b"r99999", b"new")]


@pytest.mark.postgres
def test_large_reverse_and_range_scans(store: PostgresStorage) -> None:
    keys = [i.to_bytes(2, "big") for i in range(3000)]
    store.write_batch([(k, k) for k in keys])
    assert [k for k, _ in store.scan_range(reverse=True)] == keys[::-1]
    assert [k for k, _ in store.scan_range(keys[100], keys[2900])] == keys[100:2900]
    assert [k for k, _ in store.scan_range(None, keys[2500], reverse=True)] == keys[:2500][::-1]


@pytest.mark.postgres
def test_abandoned_scan_frees_its_connection(store: PostgresStorage, pg_admin: Admin) -> None:
    store.write_batch([(b"s%06d" % i, b"v" * 500) for i in range(20000)])
    scan = store.scan(b"s")
    next(scan)
    del scan  # dropping the last reference closes the generator
    assert len(store._idle) == 1
    idle = store._idle[0].driver_connection
    assert isinstance(idle, psycopg.Connection)
    assert idle.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    states = [state for pid, state, _, _ in active_queries(pg_admin, store.table)]
    assert "active" not in states
    # The connection is reused by the next large scan.
    assert sum(1 for _ in store.scan(b"s")) == 20000
    assert len(store._idle) == 1
    assert store._idle[0].driver_connection is idle


@pytest.mark.postgres
def test_scan_connections_are_closed_with_the_store(table_url: str, pg_admin: Admin) -> None:
    store = open_pg(table_url)
    store.write_batch([(b"s%05d" % i, b"v") for i in range(2000)])
    assert sum(1 for _ in store.scan()) == 2000
    scan_conn = store._idle[0].driver_connection
    assert isinstance(scan_conn, psycopg.Connection)
    scan_pid = scan_conn.info.backend_pid
    hot_pid = store.backend_pid()
    store.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = pg_admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", ([scan_pid, hot_pid],)
        ).fetchall()
        if not rows:
            break
        time.sleep(0.01)
    assert rows == []


@pytest.mark.postgres
def test_closing_the_store_ends_open_scans(table_url: str, pg_admin: Admin) -> None:
    store = open_pg(table_url)
    store.write_batch([(b"s%06d" % i, b"v" * 500) for i in range(20000)])
    scan = store.scan(b"s")
    next(scan)
    store.close()
    with pytest.raises(StorageClosedError):
        list(scan)
    # Nothing holds the table any more: dropping it does not wait.
    pg_admin.execute("SET lock_timeout = '5s'")
    pg_admin.execute(f'DROP TABLE "{make_url(table_url).query["table"]}"')


@pytest.mark.postgres
def test_row_by_row_streaming_for_older_libpq(store: PostgresStorage) -> None:
    store._stream_chunk = 1  # what libpq < 17 or psycopg < 3.2 gets
    keys = [i.to_bytes(2, "big") for i in range(2100)]
    store.write_batch([(k, k) for k in keys])
    assert list(store.scan()) == [(k, k) for k in keys]
    assert [k for k, _ in store.scan_range(reverse=True)] == keys[::-1]
