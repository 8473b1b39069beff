"""MariaDB-specific behaviour of the SQL back end, against a real server."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeAlias

import pymysql
import pytest
from sqlalchemy.engine import make_url

from supervm import open_storage
from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
    ValueTooLargeError,
)
from supervm.registry import available_backends, load_backend
from supervm.url import parse_url
from supervm_mariadb import (
    DEFAULT_MAX_ALLOWED_PACKET,
    MAX_KEY_SIZE,
    MariaDBStorage,
    ServerSettings,
    max_value_size,
)
from supervm_sql import DEFAULT_TABLE, SQLiteStorage, SQLStorage

Admin: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.Cursor]"
UNREACHABLE = "mariadb://bob:sekrit@127.0.0.1:1/test"


def open_maria(url: str) -> MariaDBStorage:
    store = open_storage(url)
    assert isinstance(store, MariaDBStorage)
    return store


def query(admin: Admin, sql: str, args: object = None) -> list[tuple[object, ...]]:
    if args is not None and not isinstance(args, tuple):
        args = (args,)
    with admin.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def kill(admin: Admin, connection_id: int) -> None:
    """``KILL`` a server connection and wait until it is gone."""
    query(admin, f"KILL {connection_id}")
    deadline = time.monotonic() + 5
    while query(admin, "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", connection_id):
        assert time.monotonic() < deadline, f"connection {connection_id} is still alive"
        time.sleep(0.01)


def in_transaction(raw: object) -> bool:
    """Whether a store's (idle) pooled connection is inside a transaction."""
    conn = raw.driver_connection  # type: ignore[attr-defined]
    with conn.cursor() as cur:
        cur.execute("SELECT @@in_transaction")
        return bool(cur.fetchone()[0])


@pytest.fixture
def store(table_url: str) -> Iterator[MariaDBStorage]:
    s = open_maria(table_url)
    yield s
    s.close()


# -- URLs and registration ------------------------------------------------------------


def test_every_scheme_is_registered_by_this_distribution() -> None:
    backends = available_backends()
    for scheme in ("mariadb", "mariadb+pymysql", "mysql", "mysql+pymysql"):
        assert backends[scheme].distribution == "supervm-mariadb"
        assert load_backend(scheme) is MariaDBStorage
    assert MariaDBStorage.schemes == ("mariadb", "mariadb+pymysql", "mysql", "mysql+pymysql")
    assert MariaDBStorage.url_form.startswith("mariadb[+pymysql]://")


@pytest.mark.parametrize(
    "name", ["1abc", "a-b", "a b", "x`; DROP TABLE y; --", "", "x" * 64, "tablé"], ids=repr
)
def test_bad_table_name_is_refused_before_connecting(name: str) -> None:
    with pytest.raises(InvalidURLError, match="table"):
        open_storage(f"{UNREACHABLE}?table={name}")


@pytest.mark.parametrize(
    "query_string",
    ["bogus=1", "retries=-1", "retries=many", "sync=maybe", "timeout=5", "charset=latin1",
     "connect_timeout=0", "ssl_verify_cert=perhaps", "init_command=DROP"],
)  # fmt: skip
def test_bad_option_is_refused_without_leaking_the_password(query_string: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        open_storage(f"{UNREACHABLE}?{query_string}")
    assert query_string.split("=")[0] in str(info.value)
    assert "sekrit" not in str(info.value)


def test_password_in_query_is_masked_in_errors() -> None:
    with pytest.raises(InvalidURLError) as info:
        open_storage("mariadb://bob@127.0.0.1:1/test?password=sekrit&bogus=1")
    assert "sekrit" not in str(info.value)
    assert "bogus" in str(info.value)


@pytest.mark.parametrize(
    "scheme", ["mariadb+mysqldb", "mariadb+mariadbconnector", "mysql+mysqlconnector"]
)
def test_other_drivers_are_refused(scheme: str) -> None:
    with pytest.raises(InvalidURLError, match="PyMySQL") as info:
        open_storage(f"{scheme}://bob:sekrit@127.0.0.1:1/test")
    assert "sekrit" not in str(info.value)


def test_a_database_name_is_required() -> None:
    for url in ("mariadb://bob:sekrit@127.0.0.1:1", "mariadb://bob:sekrit@127.0.0.1:1/"):
        with pytest.raises(InvalidURLError, match="DBNAME") as info:
            open_storage(url)
        assert "sekrit" not in str(info.value)


def test_subclass_opens_only_its_own_scheme() -> None:
    with pytest.raises(InvalidURLError, match="SQLiteStorage"):
        SQLiteStorage.from_url(parse_url(UNREACHABLE))
    with pytest.raises(InvalidURLError, match="MariaDBStorage"):
        MariaDBStorage.from_url(parse_url("sqlite://"))


def test_constructor_refuses_unknown_arguments() -> None:
    with pytest.raises(TypeError, match="bogus"):
        MariaDBStorage("test", port=1, bogus=1)
    with pytest.raises(ValueError, match="flavour"):
        MariaDBStorage("test", port=1, flavour="oracle")
    with pytest.raises(InvalidURLError, match="table"):
        MariaDBStorage("test", port=1, table="no-dashes")


def test_unreachable_server_is_a_connection_error_naming_the_host() -> None:
    started = time.monotonic()
    with pytest.raises(StorageConnectionError) as info:
        open_storage(f"{UNREACHABLE}?connect_timeout=5")
    error = info.value
    assert "127.0.0.1:1/test" in str(error)
    assert "sekrit" not in str(error)
    assert isinstance(error.original, pymysql.err.OperationalError)
    assert error.__cause__ is error.original
    assert time.monotonic() - started < 10


@pytest.mark.mariadb
def test_wrong_password_is_a_connection_error_without_the_password(mariadb_url: str) -> None:
    url = make_url(mariadb_url).set(username="supervm_nobody", password="sekrit")
    with pytest.raises(StorageConnectionError) as info:
        open_storage(url.render_as_string(hide_password=False))
    assert "sekrit" not in str(info.value)
    assert "Access denied" in str(info.value)


@pytest.mark.mariadb
@pytest.mark.parametrize("scheme", ["mariadb", "mariadb+pymysql", "mysql", "mysql+pymysql"])
def test_every_scheme_opens_the_same_table(scheme: str, table_url: str) -> None:
    url = make_url(table_url).set(drivername=scheme).render_as_string(hide_password=False)
    with open_maria(url) as store:
        assert store.engine.dialect.driver == "pymysql"
        assert store.engine.dialect.name == scheme.split("+")[0]
        store.set(scheme.encode(), b"v")
        assert store.get(scheme.encode()) == b"v"


@pytest.mark.mariadb
def test_driver_options_reach_the_connection(
    table_url: str, with_options: Callable[..., str]
) -> None:
    url = with_options(table_url, connect_timeout="7", read_timeout="30", program_name="supervm_t")
    with open_maria(url) as store:
        assert store._conn.connect_timeout == 7
        assert store._conn._read_timeout == 30
        store.set(b"k", b"v")


# -- the session and the server -----------------------------------------------------------


@pytest.mark.mariadb
def test_session_settings(store: MariaDBStorage) -> None:
    cur = store._cur
    cur.execute("SELECT @@autocommit, @@session.sql_mode, @@session.tx_isolation")
    autocommit, sql_mode, isolation = cur.fetchone()  # type: ignore[misc]
    assert autocommit == 1
    assert set(str(sql_mode).split(",")) >= {"STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION"}
    assert isolation == "READ-COMMITTED"
    settings = store.server_settings
    assert isinstance(settings, ServerSettings)
    cur.execute("SELECT @@max_allowed_packet, @@innodb_flush_log_at_trx_commit")
    assert cur.fetchone() == (settings.max_allowed_packet, settings.innodb_flush_log_at_trx_commit)


@pytest.mark.mariadb
def test_durability_is_the_servers_and_sync_true_checks_it(
    table_url: str, with_options: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_maria(with_options(table_url, sync="true")) as store:
        # The test server commits durably (innodb_flush_log_at_trx_commit=1, no binary log).
        assert store.server_settings.durable
        store.set(b"k", b"v")
    import supervm_mariadb.mariadb as dialect

    # A server that flushes its redo log once a second: sync=true is refused, naming the setting.
    lazy = dialect._SETTINGS_SQL.replace("@@innodb_flush_log_at_trx_commit", "2")
    monkeypatch.setattr(dialect, "_SETTINGS_SQL", lazy)
    with pytest.raises(StorageError, match="innodb_flush_log_at_trx_commit=2"):
        open_storage(with_options(table_url, sync="true"))
    with open_maria(with_options(table_url, sync="false")) as store:
        assert not store.server_settings.durable
        assert store.get(b"k") == b"v"
    with open_maria(table_url) as store:
        assert store.server_settings.innodb_flush_log_at_trx_commit == 2


def test_durable_and_isolation_rules() -> None:
    def settings(flush: int, log_bin: bool, sync_binlog: int, fmt: str) -> ServerSettings:
        return ServerSettings("10.11", DEFAULT_MAX_ALLOWED_PACKET, flush, log_bin, sync_binlog, fmt)

    assert settings(1, False, 0, "MIXED").durable
    assert not settings(2, False, 0, "MIXED").durable
    assert not settings(0, False, 0, "MIXED").durable
    assert not settings(1, True, 0, "ROW").durable
    assert settings(1, True, 1, "ROW").durable
    assert settings(1, True, 1, "ROW").isolation == "READ COMMITTED"
    assert settings(1, True, 1, "STATEMENT").isolation == "REPEATABLE READ"
    assert settings(1, False, 0, "STATEMENT").isolation == "READ COMMITTED"


# -- tables -------------------------------------------------------------------------


@pytest.mark.mariadb
def test_table_is_innodb_with_a_varbinary_primary_key(store: MariaDBStorage, admin: Admin) -> None:
    columns = query(
        admin,
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        store.table,
    )
    assert columns == [
        ("key", f"varbinary({MAX_KEY_SIZE})", "NO", "PRI"),
        ("value", "longblob", "NO", ""),
    ]
    (engine_row,) = query(
        admin,
        "SELECT ENGINE, ROW_FORMAT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        store.table,
    )
    assert engine_row == ("InnoDB", "Dynamic")


@pytest.mark.mariadb
def test_stores_with_different_tables_do_not_see_each_other(
    mariadb_url: str,
    admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
) -> None:
    first, second = unique_table(), unique_table()
    try:
        with (
            open_maria(with_options(mariadb_url, table=first)) as a,
            open_maria(with_options(mariadb_url, table=second)) as b,
            open_maria(with_options(mariadb_url, table=first)) as a2,
        ):
            a.set(b"k", b"from a")
            b.write_batch([(b"k", b"from b"), (b"only-b", b"1")])
            assert a.get(b"k") == b"from a"
            assert a.get(b"only-b") is None
            assert list(b.scan()) == [(b"k", b"from b"), (b"only-b", b"1")]
            assert list(a2.scan()) == [(b"k", b"from a")]
        assert query(admin, f"SELECT COUNT(*) FROM `{first}`") == [(1,)]
        assert query(admin, f"SELECT COUNT(*) FROM `{second}`") == [(2,)]
    finally:
        for table in (first, second):
            query(admin, f"DROP TABLE IF EXISTS `{table}`")


@pytest.mark.mariadb
def test_default_table_name(mariadb_url: str, admin: Admin) -> None:
    assert DEFAULT_TABLE == "supervm_kv"
    present = "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND " \
        "TABLE_NAME = 'supervm_kv'"  # fmt: skip
    existed = bool(query(admin, present))
    try:
        with open_maria(mariadb_url) as store:
            assert store.table == DEFAULT_TABLE
        assert query(admin, present)
    finally:
        if not existed:
            query(admin, "DROP TABLE IF EXISTS supervm_kv")


@pytest.mark.mariadb
def test_create_false_creates_no_table(
    mariadb_url: str,
    admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
) -> None:
    table = unique_table()
    url = with_options(mariadb_url, table=table)
    try:
        with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
            open_storage(url, create=False)
        assert table in str(info.value)
        with pytest.raises(StoreNotFoundError):
            open_storage(with_options(url, create="false"))
        assert query(admin, f"SHOW TABLES LIKE '{table}'") == []
        with open_maria(url) as store:
            store.set(b"k", b"v")
        with open_maria(with_options(url, create="false")) as store:
            assert store.get(b"k") == b"v"
    finally:
        query(admin, f"DROP TABLE IF EXISTS `{table}`")


@pytest.mark.mariadb
def test_missing_database_is_created_only_with_create(mariadb_url: str, admin: Admin) -> None:
    database = f"supervm_db_{uuid.uuid4().hex[:12]}"
    url = make_url(mariadb_url).set(database=database)
    text = url.render_as_string(hide_password=False)
    try:
        with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
            open_storage(text, create=False)
        assert database in str(info.value) and "does not exist" in str(info.value)
        assert query(admin, "SHOW DATABASES LIKE %s", database) == []
        with open_maria(text) as store:
            store.set(b"k", b"v")
        assert query(admin, "SHOW DATABASES LIKE %s", database) == [(database,)]
        with open_maria(text + "?create=false") as store:
            assert store.get(b"k") == b"v"
    finally:
        query(admin, f"DROP DATABASE IF EXISTS `{database}`")


@pytest.mark.mariadb
@pytest.mark.parametrize(
    "ddl",
    [
        "(id integer primary key)",
        "(`key` VARBINARY(100) PRIMARY KEY, value LONGBLOB NOT NULL) ENGINE=MyISAM",
        "(`key` VARCHAR(100) PRIMARY KEY, value LONGBLOB NOT NULL) ENGINE=InnoDB",
        "(`key` VARBINARY(100) PRIMARY KEY, value BLOB NOT NULL) ENGINE=InnoDB",
    ],
    ids=["other columns", "MyISAM", "text key", "BLOB value"],
)
def test_table_of_another_shape_is_refused(
    mariadb_url: str,
    admin: Admin,
    unique_table: Callable[[], str],
    with_options: Callable[..., str],
    ddl: str,
) -> None:
    table = unique_table()
    query(admin, f"CREATE TABLE `{table}` {ddl}")
    try:
        with pytest.raises(StorageError, match=table):
            open_storage(with_options(mariadb_url, table=table))
    finally:
        query(admin, f"DROP TABLE IF EXISTS `{table}`")


@pytest.mark.mariadb
def test_drop_removes_the_table_and_closes(table_url: str, admin: Admin) -> None:
    store = open_maria(table_url)
    store.set(b"k", b"v")
    table = store.table
    store.drop()
    assert store.closed
    assert query(admin, f"SHOW TABLES LIKE '{table}'") == []
    with pytest.raises(StorageClosedError):
        store.drop()


# -- byte order -------------------------------------------------------------------------

EDGE = [
    b"\x00", b"\x00\x00", b"\x00 ", b" ", b"  ", b"a", b"a\x00", b"a\x00\x00", b"a\x01", b"a ",
    b"a  ", b"a\x7f", b"a\x80", b"a\xff", b"a\xff ", b"b", b"\x7f", b"\x7f\xff", b"\x80",
    b"\x80\x00", b"\xfe", b"\xff", b"\xff ", b"\xff\x00", b"\xff\xff",
]  # fmt: skip


@pytest.mark.mariadb
def test_keys_sort_as_unsigned_bytes(store: MariaDBStorage) -> None:
    store.write_batch([(k, k + b"!") for k in reversed(EDGE)])
    assert [k for k, _ in store.scan()] == sorted(EDGE)
    assert [k for k, _ in store.scan_range(reverse=True)] == sorted(EDGE, reverse=True)
    for prefix in (b"a", b"\xff", b"\x00", b"a\xff", b"\x7f"):
        assert [k for k, _ in store.scan(prefix)] == sorted(k for k in EDGE if k.startswith(prefix))
    assert [k for k, _ in store.scan_range(b"\x7f", b"\x80\x00")] == [b"\x7f", b"\x7f\xff", b"\x80"]


@pytest.mark.mariadb
def test_trailing_spaces_and_nuls_are_significant(store: MariaDBStorage, admin: Admin) -> None:
    """VARBINARY is not PAD SPACE: ``a``, ``a `` and ``a\\0`` are three keys."""
    keys = [b"a", b"a ", b"a  ", b"a\x00", b" ", b"  "]
    for i, key in enumerate(keys):
        store.set(key, bytes([i]))
    for i, key in enumerate(keys):
        assert store.get(key) == bytes([i])
    assert store.get(b"a   ") is None
    assert store.get(b"a\x00\x00") is None
    assert [k for k, _ in store.scan(b"a ")] == [b"a ", b"a  "]
    assert [k for k, _ in store.scan(b"a")] == [b"a", b"a\x00", b"a ", b"a  "]
    store.delete(b"a ")
    assert [k for k, _ in store.scan(b"a")] == [b"a", b"a\x00", b"a  "]
    # Stored byte for byte: nothing stripped or padded.
    rows = query(admin, f"SELECT `key`, LENGTH(`key`) FROM `{store.table}` ORDER BY `key`")
    assert rows == [(b" ", 1), (b"  ", 2), (b"a", 1), (b"a\x00", 2), (b"a  ", 3)]


@pytest.mark.mariadb
def test_scans_are_key_ranges_on_the_primary_key(store: MariaDBStorage, admin: Admin) -> None:
    store.write_batch([(b"k%05d" % i, b"v") for i in range(3000)])
    for reverse in (False, True):
        sql = store._range_sql(True, True, reverse, True)
        assert "LIKE" not in sql.upper()
        assert sql.startswith(f"SELECT `key`, value FROM `{store.table}` WHERE `key` >= %s")
        plan = query(admin, "EXPLAIN " + sql, (b"k001", b"k002"))
        (row,) = plan
        access, key, extra = row[3], row[5], str(row[9] or "")
        assert (access, key) == ("range", "PRIMARY")
        assert "filesort" not in extra  # the index gives the order


# -- values ---------------------------------------------------------------------------


@pytest.mark.mariadb
def test_value_limit_follows_max_allowed_packet(store: MariaDBStorage) -> None:
    limit = store.capabilities.max_value_size
    assert limit == max_value_size(store.server_settings.max_allowed_packet)
    assert MariaDBStorage.capabilities.max_value_size == max_value_size(DEFAULT_MAX_ALLOWED_PACKET)
    assert limit is not None and limit > 1 << 20
    biggest = bytes(range(256)) * (limit // 256) + b"\xff" * (limit % 256)
    assert len(biggest) == limit
    store.set(b"k" * MAX_KEY_SIZE, biggest)
    assert store.get(b"k" * MAX_KEY_SIZE) == biggest
    store.write_batch([(b"a", biggest[:1000]), (b"b", biggest)])
    assert store.get(b"b") == biggest
    too_big = biggest + b"!"
    with pytest.raises(ValueTooLargeError, match=str(limit)):
        store.set(b"x", too_big)
    with pytest.raises(ValueTooLargeError):
        store.write_batch([(b"y", b"1"), (b"x", too_big)])
    with pytest.raises(ValueTooLargeError), store.batch() as batch:
        batch.set(b"y", b"1")
        batch.set(b"x", too_big)
    assert store.get(b"x") is None and store.get(b"y") is None
    # The connection is still fine: nothing over-long reached the server.
    assert store.get(b"a") == biggest[:1000]


@pytest.mark.mariadb
def test_batches_with_many_deletes(store: MariaDBStorage) -> None:
    keys = [b"d%05d" % i for i in range(1234)]
    store.write_batch([(k, b"v") for k in keys])
    with store.batch() as batch:
        for key in keys[:1200]:
            batch.delete(key)
        batch.set(keys[5], b"back")
    assert [k for k, _ in store.scan(b"d")] == [keys[5], *keys[1200:]]
    assert store.get(keys[5]) == b"back"


# -- connections --------------------------------------------------------------------------


@pytest.mark.mariadb
def test_killed_connection_is_made_again_transparently(store: MariaDBStorage, admin: Admin) -> None:
    store.set(b"k", b"v")
    calls: list[Callable[[], object]] = [
        lambda: store.get(b"k"),
        lambda: store.set(b"k2", b"v2"),
        lambda: store.delete(b"k2"),
        lambda: store.write_batch([(b"b1", b"1"), (b"b2", None)]),
        lambda: list(store.scan()),
        lambda: list(store.scan_range(b"a", b"z", reverse=True)),
    ]
    for call in calls:
        before = store.connection_id()
        kill(admin, before)
        call()
        assert store.connection_id() != before
    assert list(store.scan()) == [(b"b1", b"1"), (b"k", b"v")]


@pytest.mark.mariadb
def test_without_retries_a_killed_connection_raises_once(
    table_url: str, admin: Admin, with_options: Callable[..., str]
) -> None:
    with open_maria(with_options(table_url, retries="0")) as store:
        store.set(b"k", b"v")
        kill(admin, store.connection_id())
        with pytest.raises(StorageConnectionError) as info:
            store.get(b"k")
        assert isinstance(info.value.original, pymysql.err.OperationalError)
        assert "127.0.0.1" in str(info.value) or "localhost" in str(info.value)
        # The next call reconnects.
        assert store.get(b"k") == b"v"


@pytest.mark.mariadb
def test_killed_batch_commits_whole_or_not_at_all(store: MariaDBStorage, admin: Admin) -> None:
    """A connection killed while a batch runs: the batch is run again on a new one, whole."""
    store.write_batch([(b"k%04d" % i, b"old") for i in range(2000)])
    victim = store.connection_id()
    killed = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = query(
                admin, "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", victim
            )
            if rows and rows[0][0] == "Query":
                query(admin, f"KILL {victim}")
                killed.set()
                return

    thread = threading.Thread(target=killer)
    thread.start()
    for _ in range(50):
        if killed.is_set():
            break
        store.write_batch([(b"k%04d" % i, b"new") for i in range(2000)])
    thread.join()
    store.write_batch([(b"k%04d" % i, b"new") for i in range(2000)])
    assert killed.is_set()
    assert store.connection_id() != victim
    assert {v for _, v in store.scan(b"k")} == {b"new"}


def lose_a_deadlock(store: MariaDBStorage, connect: Callable[[], Admin]) -> list[BaseException]:
    """Make the store's batch ``b, a = store`` the victim of a deadlock; its errors."""
    store.write_batch([(b"a", b"0"), (b"b", b"0")] + [(b"f%03d" % i, b"0") for i in range(200)])
    other = connect()
    failure: list[BaseException] = []
    try:
        with other.cursor() as cur:
            cur.execute("BEGIN")
            # A big transaction: InnoDB picks the store's smaller one as the deadlock victim.
            cur.execute(f"UPDATE `{store.table}` SET value = 'x' WHERE `key` LIKE 'f%'")
            cur.execute(f"UPDATE `{store.table}` SET value = 'x' WHERE `key` = 'a'")
        done = threading.Event()

        def batch() -> None:
            try:
                store.write_batch([(b"b", b"store"), (b"a", b"store")])
            except BaseException as exc:
                failure.append(exc)
            done.set()

        thread = threading.Thread(target=batch)
        thread.start()
        time.sleep(0.3)  # the store's batch now holds b and waits for a
        with other.cursor() as cur:
            cur.execute(f"UPDATE `{store.table}` SET value = 'x' WHERE `key` = 'b'")
            other.commit()
        thread.join(10)
        assert done.is_set()
    finally:
        other.close()
    return failure


@pytest.mark.mariadb
def test_deadlock_victim_batch_is_run_again(
    store: MariaDBStorage, connect: Callable[[], Admin], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[object] = []
    transient = store._transient

    def spy(exc: BaseException) -> bool:
        seen.append(exc.args[0])
        return transient(exc)

    store._transient = spy  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="supervm_mariadb")
    failure = lose_a_deadlock(store, connect)
    assert not failure, failure
    assert seen == [1213]  # ER_LOCK_DEADLOCK, once: the batch ran again and landed
    assert store.get(b"a") == b"store" and store.get(b"b") == b"store"
    assert store.conflicts_retried == 1
    (record,) = [r for r in caplog.records if r.name == "supervm_mariadb"]
    assert "MariaDB batch" in record.getMessage()
    assert "lost a write conflict (1213); running it again (1 of 5)" in record.getMessage()


@pytest.mark.mariadb
def test_without_conflict_retries_a_deadlock_victim_batch_fails_and_changes_nothing(
    table_url: str, with_options: Callable[..., str], connect: Callable[[], Admin]
) -> None:
    with open_maria(with_options(table_url, conflict_retries="0")) as store:
        failure = lose_a_deadlock(store, connect)
        assert len(failure) == 1 and isinstance(failure[0], StorageError), failure
        assert "Deadlock" in str(failure[0])
        assert store.conflicts_retried == 0
        # The other transaction's values, nothing of the failed batch.
        assert store.get(b"a") == b"x" and store.get(b"b") == b"x"


@pytest.mark.mariadb
def test_lock_wait_timeout_is_a_locked_error(
    store: MariaDBStorage, connect: Callable[[], Admin]
) -> None:
    store.set(b"k", b"v")
    store._cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
    other = connect()
    try:
        with other.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"SELECT * FROM `{store.table}` WHERE `key` = 'k' FOR UPDATE")
        with pytest.raises(StorageLockedError, match="row lock") as info:
            store.set(b"k", b"new")
        assert isinstance(info.value.original, pymysql.err.OperationalError)
        other.rollback()
    finally:
        other.close()
    store.set(b"k", b"new")
    assert store.get(b"k") == b"new"


# -- large scans ----------------------------------------------------------------------------


@pytest.mark.mariadb
def test_large_scan_is_one_consistent_view(store: MariaDBStorage) -> None:
    keys = [b"r%05d" % i for i in range(2500)]
    store.write_batch([(k, b"old") for k in keys])
    scan = store.scan(b"r")
    # Writes through the same store after the scan was asked for do not show up in it.
    store.write_batch([(k, None) for k in keys[1:]] + [(b"r99999", b"new")])
    assert list(scan) == [(k, b"old") for k in keys]
    assert list(store.scan(b"r")) == [(keys[0], b"old"), (b"r99999", b"new")]


@pytest.mark.mariadb
def test_large_reverse_and_range_scans(store: MariaDBStorage) -> None:
    keys = [i.to_bytes(2, "big") for i in range(3000)] + [b"\xff\xff\xff", b"\xff\xff\xff\x00"]
    store.write_batch([(k, k) for k in keys])
    assert [k for k, _ in store.scan()] == keys
    assert [k for k, _ in store.scan_range(reverse=True)] == keys[::-1]
    assert [k for k, _ in store.scan_range(keys[100], keys[2900])] == keys[100:2900]
    assert [k for k, _ in store.scan_range(None, keys[2500], reverse=True)] == keys[:2500][::-1]
    assert [k for k, _ in store.scan(b"\xff")] == [k for k in keys if k.startswith(b"\xff")]
    # Exactly a page, a page and one, two pages.
    page = store._page_limit()
    for count in (page, page + 1, 2 * page + 1):
        assert len(list(store.scan_range(keys[0], keys[count]))) == count


@pytest.mark.mariadb
def test_large_scan_reads_pages_in_one_snapshot_transaction(
    store: MariaDBStorage, admin: Admin
) -> None:
    store.write_batch([(b"s%05d" % i, b"v" * 100) for i in range(5000)])
    scan = store.scan(b"s")
    next(scan)
    (raw,) = store._busy
    scan_id = raw.driver_connection.thread_id()
    assert in_transaction(raw)  # between pages the connection is idle, in its transaction
    assert sum(1 for _ in scan) == 4999
    # Done: the transaction is over and the connection is kept for the next scan.
    assert [r.driver_connection.thread_id() for r in store._idle] == [scan_id]
    assert not in_transaction(store._idle[0])
    assert sum(1 for _ in store.scan(b"s")) == 5000


@pytest.mark.mariadb
def test_abandoned_scan_ends_its_transaction(store: MariaDBStorage, admin: Admin) -> None:
    store.write_batch([(b"s%05d" % i, b"v") for i in range(5000)])
    scan = store.scan(b"s")
    next(scan)
    (raw,) = store._busy
    del scan  # dropping the last reference closes the generator
    assert store._idle == [raw] and not store._busy
    assert not in_transaction(raw)


@pytest.mark.mariadb
def test_closing_the_store_ends_open_scans(table_url: str, admin: Admin) -> None:
    store = open_maria(table_url)
    store.write_batch([(b"s%05d" % i, b"v") for i in range(5000)])
    scan = store.scan(b"s")
    next(scan)
    (raw,) = store._busy
    scan_id = raw.driver_connection.thread_id()
    hot_id = store.connection_id()
    store.close()
    with pytest.raises(StorageClosedError):
        list(scan)
    deadline = time.monotonic() + 5
    while query(
        admin,
        "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN (%s, %s)",
        (scan_id, hot_id),
    ):
        assert time.monotonic() < deadline, "the store's connections outlived it"
        time.sleep(0.01)


@pytest.mark.mariadb
def test_killed_idle_scan_connection_is_replaced(store: MariaDBStorage, admin: Admin) -> None:
    store.write_batch([(b"s%05d" % i, b"v") for i in range(3000)])
    assert sum(1 for _ in store.scan()) == 3000
    (raw,) = store._idle
    kill(admin, raw.driver_connection.thread_id())
    assert sum(1 for _ in store.scan()) == 3000


@pytest.mark.mariadb
def test_scan_connection_killed_midway_is_a_connection_error(
    store: MariaDBStorage, admin: Admin
) -> None:
    store.write_batch([(b"s%05d" % i, b"v") for i in range(5000)])
    scan = store.scan(b"s")
    next(scan)
    (raw,) = store._busy
    kill(admin, raw.driver_connection.thread_id())
    with pytest.raises(StorageConnectionError, match=r"\(scan\)"):
        list(scan)
    assert not store._busy
    assert sum(1 for _ in store.scan(b"s")) == 5000


def test_shared_names_come_from_supervm_sql() -> None:
    import supervm_mariadb

    assert supervm_mariadb.DEFAULT_TABLE == DEFAULT_TABLE
    assert issubclass(MariaDBStorage, SQLStorage)
