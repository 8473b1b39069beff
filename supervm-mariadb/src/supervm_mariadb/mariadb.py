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

On a Galera cluster the URL may name several nodes (``?hosts=``; see
:mod:`supervm_mariadb.nodes`): a lost connection is made again to the next
usable node and the statement or batch run again there. A transaction that
Galera aborts on a certification conflict with another node's commit (error
1213, as an InnoDB deadlock victim gets) is rolled back whole; it is run again
up to ``conflict_retries`` times, each retry logged, after a short random pause.
``causal_reads=true`` makes every read wait until the node has applied every
transaction committed anywhere in the cluster before the read began
(``wsrep_sync_wait=1``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
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
from supervm_mariadb.nodes import (
    DEFAULT_PORT,
    LOST_CODES,
    Address,
    NodeList,
    parse_hosts,
    unique,
)
from supervm_mariadb.nodes import error_code as _code
from supervm_sql.store import (
    COMMON_OPTIONS,
    DEFAULT_TABLE,
    MAX_KEY_SIZE,
    SQLOptions,
    SQLStorage,
    _discard,
)

__all__ = [
    "DEFAULT_CONFLICT_RETRIES",
    "DEFAULT_MAX_ALLOWED_PACKET",
    "MariaDBStorage",
    "ServerSettings",
    "max_value_size",
]

#: PyMySQL connection arguments taken from the URL query, by type.
_INT_OPTIONS = ("connect_timeout", "read_timeout", "write_timeout")
_STR_OPTIONS = ("unix_socket", "ssl_ca", "ssl_cert", "ssl_key", "program_name")
_BOOL_OPTIONS = ("ssl_disabled", "ssl_verify_cert", "ssl_verify_identity")
_DRIVER_OPTIONS = (*_INT_OPTIONS, *_STR_OPTIONS, *_BOOL_OPTIONS)
#: URL options of this back end besides the common ones and the driver's.
_OWN_OPTIONS = ("hosts", "causal_reads", "conflict_retries")
#: Runs of a transaction after a write conflict, by default.
DEFAULT_CONFLICT_RETRIES = 5
#: Longest pause before a conflict retry, in seconds (doubling from a fifth of a ms).
_MAX_CONFLICT_PAUSE = 0.05

logger = logging.getLogger("supervm_mariadb")

#: Session settings of every connection: errors instead of silent truncation,
#: and no silent fall back from InnoDB to an engine without transactions.
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"

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


def _addresses(
    host: str | None, port: int | None, hosts: Sequence[str | Address] | str | None
) -> tuple[Address, ...]:
    """The store's nodes: ``host:port`` (when given), then ``hosts``, each once."""
    first = [Address(host or "localhost", port or DEFAULT_PORT)] if host or not hosts else []
    if hosts is None:
        more: tuple[Address, ...] = ()
    elif isinstance(hosts, str):
        more = parse_hosts(hosts)
    else:
        more = tuple(h if isinstance(h, Address) else parse_hosts(h)[0] for h in hosts)
    return unique([*first, *more])


@dataclass(frozen=True)
class ServerSettings:
    """The server variables the store reads when it opens."""

    version: str
    max_allowed_packet: int
    innodb_flush_log_at_trx_commit: int
    log_bin: bool
    sync_binlog: int
    binlog_format: str
    #: Whether the server is a Galera node (``wsrep_on=ON``).
    galera: bool = False

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
#: Empty on MySQL, OFF on a MariaDB server that is not a Galera node.
_WSREP_SQL = "SHOW VARIABLES LIKE 'wsrep_on'"


class MariaDBStorage(SQLStorage):
    """A store in a MariaDB (or MySQL) InnoDB table, through PyMySQL."""

    dialect_schemes = ("mariadb", "mariadb+pymysql", "mysql", "mysql+pymysql")
    dialect_backend = "mariadb"
    url_form = (
        "mariadb[+pymysql]://USER[:PASSWORD]@HOST[:PORT]/DBNAME (or mysql[+pymysql]://)"
        "[?table=NAME&hosts=HOST:PORT,...&causal_reads=BOOL&conflict_retries=N&retries=N"
        "&sync=BOOL&create=BOOL&connect_timeout=S&ssl_ca=PATH&...]"
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
    _delete_sql: dict[int, str]
    _nodes: NodeList
    _causal: bool
    _conflict_retries: int
    _conflicts: int

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
        hosts: Sequence[str | Address] | str | None = None,
        causal_reads: bool = False,
        conflict_retries: int = DEFAULT_CONFLICT_RETRIES,
        **driver_args: Any,
    ) -> None:
        """Open (with ``create``, make) the store in ``table`` of ``database``.

        ``sync``: ``True`` insists that the server commits durably, ``None``
        (or ``False``) takes the server's settings. ``flavour`` is ``"mariadb"``
        or ``"mysql"`` (the SQLAlchemy dialect). ``hosts``: more nodes of the
        same Galera cluster (``"HOST:PORT,..."`` or a sequence), tried after
        ``host:port`` when a node is unusable. ``causal_reads``: every read
        waits for the node to catch up with the cluster (Galera only).
        ``conflict_retries``: runs of a transaction after a write conflict
        (error 1213). ``driver_args`` are PyMySQL
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
        if type(conflict_retries) is not int or conflict_retries < 0:
            raise ValueError(f"conflict_retries must be an int >= 0, got {conflict_retries!r}")
        if type(causal_reads) is not bool:
            raise TypeError(f"causal_reads must be a bool, got {causal_reads!r}")
        options = SQLOptions(table=table, retries=retries, sync=sync, create=create)
        socket = driver_args.get("unix_socket")
        addresses = _addresses(host, port, hosts)
        if socket and len(addresses) > 1:
            raise InvalidURLError("unix_socket names one server; it cannot be used with hosts=")
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
        self._nodes = NodeList(addresses, user=user, password=password, connect_args=connect_args)
        place = socket or self._nodes.describe()
        self._create = options.create
        self._opening = True
        self._database = database
        self._server = None
        self._delete_sql = {}
        self._causal = causal_reads
        self._conflict_retries = conflict_retries
        self._conflicts = 0
        engine = sqlalchemy.create_engine(
            sa_url, poolclass=NullPool, creator=lambda: self._nodes.connect(database)
        )
        self._start(engine, f"{place}/{database}", options)

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        url.reject_unknown_options((*COMMON_OPTIONS, *_DRIVER_OPTIONS, *_OWN_OPTIONS))
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
        hosts = parse_hosts(url.options["hosts"]) if "hosts" in url.options else None
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
            hosts=hosts,
            causal_reads=url.bool_option("causal_reads", False),
            conflict_retries=url.int_option("conflict_retries", DEFAULT_CONFLICT_RETRIES),
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
        name = self._engine.dialect.identifier_preparer.quote_identifier(self._database)
        conn = self._nodes.connect(None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {name}")
        finally:
            conn.close()

    def _configure(self, conn: Connection[Cursor]) -> None:
        if self._server is None:
            with conn.cursor() as cur:
                cur.execute(_SETTINGS_SQL)
                row = cur.fetchone()
            assert row is not None
            version, packet, flush, log_bin, sync_binlog, binlog_format = row
            with conn.cursor() as cur:
                cur.execute(_WSREP_SQL)
                wsrep = cur.fetchone()
            self._server = ServerSettings(
                str(version), int(packet), int(flush), bool(log_bin), int(sync_binlog),
                str(binlog_format), galera=wsrep is not None and str(wsrep[1]).upper() == "ON",
            )  # fmt: skip
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {self._server.isolation}")
            if self._causal and self._server.galera:
                cur.execute("SET SESSION wsrep_sync_wait = 1")

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

    @property
    def node(self) -> Address:
        """The node the store's connections go to now (the first usable of its hosts)."""
        return self._nodes.current

    @property
    def nodes(self) -> tuple[Address, ...]:
        """Every node the store may use, in the order it tries them."""
        return self._nodes.addresses

    @property
    def failovers(self) -> int:
        """How many times the store's connections moved to another node."""
        return self._nodes.failovers

    @property
    def conflicts_retried(self) -> int:
        """Transactions run again after a write conflict (error 1213), since opening."""
        return self._conflicts

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
        return self._scan_lost(exc, self._conn)

    def _transient(self, exc: BaseException) -> bool:
        # A deadlock victim's transaction is rolled back whole (as is a Galera
        # certification failure): running it again is safe.
        return _code(exc) == _ER_LOCK_DEADLOCK

    def _transient_budget(self) -> int:
        return self._conflict_retries

    def _before_transient_retry(self, exc: BaseException, doing: str, attempt: int) -> None:
        self._conflicts += 1
        pause = random.uniform(0, min(_MAX_CONFLICT_PAUSE, 0.0002 * 2**attempt))
        logger.warning(
            "MariaDB %s on %s lost a write conflict (%s); running it again (%d of %d) in %.1f ms",
            doing, self._nodes.current, _code(exc), attempt, self._conflict_retries, pause * 1000,
        )  # fmt: skip
        time.sleep(pause)

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
            _code(exc) in LOST_CODES or isinstance(exc, pymysql.err.InterfaceError) or not conn.open
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
