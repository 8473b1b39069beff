"""The MariaDB (and MySQL) dialect of the SQL store, through PyMySQL.

The table is ``key VARBINARY(2048) PRIMARY KEY, value LONGBLOB NOT NULL`` on
InnoDB (``ROW_FORMAT=DYNAMIC``): MySQL cannot index a whole BLOB, VARBINARY
compares bytes as unsigned values with no padding, and InnoDB takes index keys
up to 3072 bytes. ``set`` is ``INSERT ... ON DUPLICATE KEY UPDATE``; a batch is
one transaction (multi-row upserts, deletes by ``IN`` lists). Scans of more than
a page of rows are read page by page, by key, inside one ``REPEATABLE READ``
transaction started ``WITH CONSISTENT SNAPSHOT`` on a connection of their own,
so a scan is one view of the table however slowly it is consumed. The store's
own connection runs in autocommit mode at ``READ COMMITTED`` (no gap locks
between concurrent writers), with ``STRICT_ALL_TABLES`` and
``NO_ENGINE_SUBSTITUTION``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import pymysql
import sqlalchemy
from pymysql.connections import Connection
from pymysql.cursors import Cursor
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool, PoolProxiedConnection

from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
)
from supervm.url import StorageURL
from supervm_sql.store import (
    COMMON_OPTIONS,
    DEFAULT_TABLE,
    MAX_KEY_SIZE,
    SQLOptions,
    SQLStorage,
    _discard,
)

__all__ = ["DEFAULT_MAX_ALLOWED_PACKET", "MariaDBStorage", "ServerSettings", "max_value_size"]

#: PyMySQL connection arguments taken from the URL query, by type.
_INT_OPTIONS = ("connect_timeout", "read_timeout", "write_timeout")
_STR_OPTIONS = ("unix_socket", "ssl_ca", "ssl_cert", "ssl_key", "program_name")
_BOOL_OPTIONS = ("ssl_disabled", "ssl_verify_cert", "ssl_verify_identity")
_DRIVER_OPTIONS = (*_INT_OPTIONS, *_STR_OPTIONS, *_BOOL_OPTIONS)

#: Session settings of every connection: errors instead of silent truncation,
#: and no silent fall back from InnoDB to an engine without transactions.
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"

#: Server error codes (``pymysql.constants.ER`` / ``CR``) that mean the connection is gone.
_LOST_CODES = frozenset(
    {
        1927,  # ER_CONNECTION_KILLED
        2002,  # CR_CONNECTION_ERROR
        2003,  # CR_CONN_HOST_ERROR
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)
_ER_BAD_DB = 1049
_ER_LOCK_WAIT_TIMEOUT = 1205
_ER_LOCK_DEADLOCK = 1213

#: The server's ``max_allowed_packet`` by default (MariaDB 10.2+, MySQL 8): 16 MiB.
DEFAULT_MAX_ALLOWED_PACKET = 16 * 1024 * 1024
#: Bytes of an upsert statement besides its two hex literals (table name included).
_STATEMENT_OVERHEAD = 1024
#: Keys deleted by one ``DELETE ... IN (...)`` statement of a batch.
_DELETE_CHUNK = 500


def max_value_size(max_allowed_packet: int) -> int:
    """Longest value whose upsert fits in a packet of ``max_allowed_packet`` bytes.

    PyMySQL sends parameters inside the statement, bytes as hex literals (two
    characters a byte), and the server refuses a statement longer than its
    ``max_allowed_packet``, which a session cannot raise.
    """
    return (max_allowed_packet - _STATEMENT_OVERHEAD) // 2 - MAX_KEY_SIZE


def _code(exc: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL exception, if it has one."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


@dataclass(frozen=True)
class ServerSettings:
    """The server variables the store reads when it opens."""

    version: str
    max_allowed_packet: int
    innodb_flush_log_at_trx_commit: int
    log_bin: bool
    sync_binlog: int
    binlog_format: str

    @property
    def durable(self) -> bool:
        """Whether a commit is on disk when it returns: the redo log (and binary log) synced."""
        return self.innodb_flush_log_at_trx_commit == 1 and (
            not self.log_bin or self.sync_binlog == 1
        )

    @property
    def isolation(self) -> str:
        """The isolation level of the store's connection.

        READ COMMITTED, unless statement-based binary logging refuses it for InnoDB.
        """
        if self.log_bin and self.binlog_format.upper() == "STATEMENT":
            return "REPEATABLE READ"
        return "READ COMMITTED"


_SETTINGS_SQL = (
    "SELECT VERSION(), @@max_allowed_packet, @@innodb_flush_log_at_trx_commit, "
    "@@log_bin, @@sync_binlog, @@binlog_format"
)


class MariaDBStorage(SQLStorage):
    """A store in a MariaDB (or MySQL) InnoDB table, through PyMySQL."""

    dialect_schemes = ("mariadb", "mariadb+pymysql", "mysql", "mysql+pymysql")
    dialect_backend = "mariadb"
    url_form = (
        "mariadb[+pymysql]://USER[:PASSWORD]@HOST[:PORT]/DBNAME (or mysql[+pymysql]://)"
        "[?table=NAME&retries=N&sync=BOOL&create=BOOL&connect_timeout=S&ssl_ca=PATH&...]"
    )
    driver_hint = (
        "this back end drives MariaDB and MySQL with PyMySQL; use mariadb://, "
        "mariadb+pymysql://, mysql:// or mysql+pymysql://"
    )
    capabilities = replace(
        SQLStorage.capabilities, max_value_size=max_value_size(DEFAULT_MAX_ALLOWED_PACKET)
    )
    _driver_error = pymysql.Error
    _kind = "MariaDB"
    _param = "%s"
    _binary_type = "VARBINARY"

    _conn: Connection[Cursor]
    _cur: Cursor
    _create: bool
    _opening: bool
    _database: str
    _server: ServerSettings | None
    _connect_args: dict[str, Any]
    _delete_sql: dict[int, str]

    # -- opening ---------------------------------------------------------------

    def __init__(
        self,
        database: str,
        *,
        host: str | None = "127.0.0.1",
        port: int | None = 3306,
        user: str | None = None,
        password: str | None = None,
        table: str = DEFAULT_TABLE,
        retries: int = 1,
        sync: bool | None = None,
        create: bool = True,
        flavour: str = "mariadb",
        **driver_args: Any,
    ) -> None:
        """Open (with ``create``, make) the store in ``table`` of ``database``.

        ``sync``: ``True`` insists that the server commits durably, ``None``
        (or ``False``) takes the server's settings. ``flavour`` is ``"mariadb"``
        or ``"mysql"`` (the SQLAlchemy dialect). ``driver_args`` are PyMySQL
        connection arguments: ``connect_timeout``, ``read_timeout``,
        ``write_timeout``, ``unix_socket``, ``ssl_ca``, ``ssl_cert``,
        ``ssl_key``, ``program_name``, ``ssl_disabled``, ``ssl_verify_cert``,
        ``ssl_verify_identity``. The URL form, ``mariadb://USER@HOST/DBNAME?...``,
        takes the same settings.
        """
        unknown = sorted(set(driver_args) - set(_DRIVER_OPTIONS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}")
        if flavour not in ("mariadb", "mysql"):
            raise ValueError(f"flavour must be 'mariadb' or 'mysql', not {flavour!r}")
        if not database:
            raise InvalidURLError("a MariaDB store needs a database name")
        options = SQLOptions(table=table, retries=retries, sync=sync, create=create)
        connect_args: dict[str, Any] = {
            "charset": "utf8mb4",
            "autocommit": True,
            "sql_mode": _SQL_MODE,
            **driver_args,
        }
        sa_url = URL.create(
            f"{flavour}+pymysql",
            username=user,
            password=password,
            host=host,
            port=port,
            database=database,
        )
        socket = driver_args.get("unix_socket")
        place = socket or f"{host or 'localhost'}:{port or 3306}"
        self._create = options.create
        self._opening = True
        self._database = database
        self._server = None
        self._connect_args = connect_args
        self._delete_sql = {}
        engine = sqlalchemy.create_engine(sa_url, poolclass=NullPool, connect_args=connect_args)
        self._start(engine, f"{place}/{database}", options)

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        url.reject_unknown_options((*COMMON_OPTIONS, *_DRIVER_OPTIONS))
        options = SQLOptions(url)
        driver_args: dict[str, Any] = {}
        for name in _INT_OPTIONS:
            if name in url.options:
                driver_args[name] = url.int_option(name, 0, minimum=1)
        for name in _STR_OPTIONS:
            if name in url.options:
                driver_args[name] = url.options[name]
        for name in _BOOL_OPTIONS:
            if name in url.options:
                driver_args[name] = url.bool_option(name, False)
        try:
            sa_url = make_url(raw)
        except sqlalchemy.exc.ArgumentError:
            raise InvalidURLError(f"malformed MariaDB URL {url.raw!r}") from None
        if not sa_url.database:
            raise InvalidURLError(
                f"{url.raw!r} names no database; use {url.scheme}://USER@HOST[:PORT]/DBNAME"
            )
        return cls(
            sa_url.database,
            host=sa_url.host,
            port=sa_url.port,
            user=sa_url.username,
            password=sa_url.password,
            table=options.table,
            retries=options.retries,
            sync=options.sync,
            create=options.create,
            flavour="mysql" if url.backend == "mysql" else "mariadb",
            **driver_args,
        )

    def _open_connection(self) -> tuple[PoolProxiedConnection, Any, Any]:
        try:
            return super()._open_connection()
        except pymysql.err.OperationalError as exc:
            if not self._opening or _code(exc) != _ER_BAD_DB:
                raise
            if not self._create:
                raise StoreNotFoundError(
                    f"no MariaDB store in table {self._table} at {self._where}: database "
                    f"{self._database} does not exist; nothing was created (create=false)"
                ) from None
        self._create_database()
        return super()._open_connection()

    def _create_database(self) -> None:
        """``CREATE DATABASE IF NOT EXISTS`` the URL's database (opening with ``create``)."""
        url = self._engine.url.set(database="")
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=self._connect_args)
        name = engine.dialect.identifier_preparer.quote_identifier(self._database)
        try:
            raw = engine.raw_connection()
            try:
                conn = cast("Connection[Cursor]", raw.driver_connection)
                with conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS {name}")
            finally:
                raw.close()
        except sqlalchemy.exc.DBAPIError as exc:
            if exc.orig is not None:
                raise exc.orig from exc
            raise
        finally:
            engine.dispose()

    def _configure(self, conn: Connection[Cursor]) -> None:
        if self._server is None:
            with conn.cursor() as cur:
                cur.execute(_SETTINGS_SQL)
                row = cur.fetchone()
            assert row is not None
            version, packet, flush, log_bin, sync_binlog, binlog_format = row
            self._server = ServerSettings(
                str(version), int(packet), int(flush), bool(log_bin), int(sync_binlog),
                str(binlog_format),
            )  # fmt: skip
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {self._server.isolation}")

    def _key_type(self) -> sqlalchemy.types.TypeEngine[Any]:
        return sqlalchemy.VARBINARY(MAX_KEY_SIZE)

    def _value_type(self) -> sqlalchemy.types.TypeEngine[Any]:
        return mysql.LONGBLOB()

    def _table_options(self) -> dict[str, Any]:
        return {"mysql_engine": "InnoDB", "mysql_row_format": "DYNAMIC"}

    def _upsert_sql(self) -> str:
        key, value, p = self._q_key, self._q_value, self._param
        return (
            f"INSERT INTO {self._q_table} ({key}, {value}) VALUES ({p}, {p}) "
            f"ON DUPLICATE KEY UPDATE {value} = VALUES({value})"
        )

    def _ready(self) -> None:
        """Check the table's engine and columns and the ``sync`` option; size the values."""
        self._opening = False
        server = self._server
        assert server is not None
        with self._lock:
            self._cur.execute(
                "SELECT c.COLUMN_NAME, c.DATA_TYPE, t.ENGINE FROM information_schema.COLUMNS c "
                "JOIN information_schema.TABLES t "
                "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
                "WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = %s",
                (self._table,),
            )
            found = {str(name).lower(): (str(kind).lower(), str(engine)) for name, kind, engine in
                     self._cur.fetchall()}  # fmt: skip
        expected = {"key": "varbinary", "value": "longblob"}
        shape = {name: kind for name, (kind, _) in found.items()}
        engines = {engine.lower() for _, engine in found.values()}
        if shape != expected or engines != {"innodb"}:
            described = ", ".join(f"{n} {k}" for n, k in shape.items()) or "no columns"
            raise StorageError(
                f"table {self._table} in {self._where} is not a key-value table of this back "
                f"end (key VARBINARY primary key, value LONGBLOB, engine InnoDB): it has "
                f"{described}, engine {', '.join(sorted(engines)) or 'unknown'}"
            )
        if self._sync and not server.durable:
            raise StorageError(
                f"sync=true asks for commits that are on disk when they return, but the server "
                f"at {self._where} has innodb_flush_log_at_trx_commit="
                f"{server.innodb_flush_log_at_trx_commit}"
                + (f", log_bin=ON and sync_binlog={server.sync_binlog}" if server.log_bin else "")
                + " (durable needs 1, and sync_binlog=1 with a binary log); these are server "
                "settings (SET GLOBAL or the server's configuration), not session ones"
            )
        self._limit_values(max_value_size(server.max_allowed_packet))

    @property
    def server_settings(self) -> ServerSettings:
        """The server variables read when the store opened (durability, packet size)."""
        assert self._server is not None
        return self._server

    def connection_id(self) -> int:
        """The server's id of the store's connection (``CONNECTION_ID()``; ``KILL`` takes it)."""
        self._check_open()
        with self._lock:
            return int(self._conn.thread_id())  # type: ignore[no-untyped-call]

    # -- errors ------------------------------------------------------------------

    def _connect_error(self, exc: BaseException) -> StorageError:
        return StorageConnectionError(
            f"cannot connect to MariaDB at {self._where}: {exc}", original=exc
        )

    def _lost(self, exc: BaseException) -> bool:
        return (
            _code(exc) in _LOST_CODES
            or isinstance(exc, pymysql.err.InterfaceError)
            or not self._conn.open
        )

    def _transient(self, exc: BaseException) -> bool:
        # A deadlock victim's transaction is rolled back whole (as is a Galera
        # certification failure): running it again is safe.
        return _code(exc) == _ER_LOCK_DEADLOCK

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        if _code(exc) == _ER_LOCK_WAIT_TIMEOUT:
            return StorageLockedError(
                f"MariaDB {doing} on {self._where} waited too long for a row lock "
                f"held by another transaction: {exc}",
                original=exc,
            )
        return super()._error(exc, doing)

    # -- statements --------------------------------------------------------------

    def _executor(self, cur: Cursor) -> Callable[[str, tuple[bytes, ...]], Any]:
        execute = cur.execute

        def run(sql: str, params: tuple[bytes, ...]) -> Cursor:
            execute(sql, params)
            return cur

        return run

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        conn = self._conn
        conn.begin()
        try:
            yield
            conn.commit()
        except BaseException:
            if conn.open:
                with contextlib.suppress(pymysql.Error):
                    conn.rollback()
            raise

    def _delete_keys(self, cur: Cursor, keys: list[bytes]) -> None:
        for i in range(0, len(keys), _DELETE_CHUNK):
            chunk = keys[i : i + _DELETE_CHUNK]
            cur.execute(self._delete_in(len(chunk)), chunk)

    def _delete_in(self, count: int) -> str:
        """``DELETE ... WHERE key IN (...)`` with ``count`` placeholders (cached)."""
        sql = self._delete_sql.get(count)
        if sql is None:
            marks = ", ".join([self._param] * count)
            sql = f"DELETE FROM {self._q_table} WHERE {self._q_key} IN ({marks})"
            if len(self._delete_sql) < 64:
                self._delete_sql[count] = sql
        return sql

    # -- scans -------------------------------------------------------------------

    def _stream_range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pages of the key range, read in one consistent-snapshot transaction.

        The transaction starts, and its first page is read, before this
        returns: the scan sees the table as it was when it was asked for. A
        connection lost before any row was read is made again (``retries``).
        """
        budget = self._retries
        while True:
            if self._closed:
                raise StorageClosedError(f"{type(self).__name__} is closed")
            try:
                raw = self._borrow()
            except pymysql.Error as exc:
                raise self._connect_error(exc) from exc
            conn = cast("Connection[Cursor]", raw.driver_connection)
            try:
                cur = conn.cursor()
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                rows = self._page(cur, start, end, reverse)
            except pymysql.Error as exc:
                self._end_scan(raw, conn)
                if self._closed:
                    raise StorageClosedError(f"{type(self).__name__} is closed") from None
                if not self._scan_lost(exc, conn):
                    raise self._error(exc, "scan") from exc
                self._drop_idle()  # idle ones are likely as stale as this one
                if budget > 0:
                    budget -= 1
                    continue
                raise StorageConnectionError(
                    f"lost the connection to MariaDB at {self._where} (scan): {exc}",
                    original=exc,
                ) from exc
            except BaseException:
                self._end_scan(raw, conn)
                raise
            if len(rows) <= self._page_limit():
                self._end_scan(raw, conn)
                return iter(rows)
            rest = self._pages(raw, conn, cur, rows, start, end, reverse)
            next(rest)  # from here on, closing or dropping ``rest`` ends the scan
            return itertools.chain(rows, itertools.chain.from_iterable(rest))

    def _page_limit(self) -> int:
        assert self._page_rows is not None
        return self._page_rows

    def _page(
        self, cur: Cursor, start: bytes | None, end: bytes | None, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        """Up to a page of rows (plus one) of ``[start, end)``, from the start (or the end)."""
        sql = self._range_sql(start is not None, end is not None, reverse, True)
        cur.execute(sql, tuple(b for b in (start, end) if b is not None))
        return cast("list[tuple[bytes, bytes]]", list(cur.fetchall()))

    def _pages(
        self,
        raw: PoolProxiedConnection,
        conn: Connection[Cursor],
        cur: Cursor,
        rows: list[tuple[bytes, bytes]],
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """The pages after ``rows``, read as they are consumed; then the transaction ends."""
        try:
            yield []
            while len(rows) > self._page_limit():
                last = rows[-1][0]
                if reverse:
                    end = last
                else:
                    start = last + b"\x00"  # the smallest key after ``last``
                rows = self._page(cur, start, end, reverse)
                yield rows
        except pymysql.Error as exc:
            if self._closed:
                raise StorageClosedError(f"{type(self).__name__} is closed") from None
            if self._scan_lost(exc, conn):
                raise StorageConnectionError(
                    f"lost the connection to MariaDB at {self._where} (scan): {exc}",
                    original=exc,
                ) from exc
            raise self._error(exc, "scan") from exc
        finally:
            self._end_scan(raw, conn)

    @staticmethod
    def _scan_lost(exc: BaseException, conn: Connection[Cursor]) -> bool:
        return (
            _code(exc) in _LOST_CODES
            or isinstance(exc, pymysql.err.InterfaceError)
            or not conn.open
        )

    def _end_scan(self, raw: PoolProxiedConnection, conn: Connection[Cursor]) -> None:
        """End a scan's transaction and give its connection back (kept when healthy)."""
        healthy = False
        if conn.open and not self._closed:
            try:
                conn.rollback()
                healthy = True
            except pymysql.Error:
                pass
        self._give_back(raw, healthy)

    def _drop_idle(self) -> None:
        with self._idle_lock:
            stale, self._idle = self._idle, []
        for raw in stale:
            _discard(raw)
