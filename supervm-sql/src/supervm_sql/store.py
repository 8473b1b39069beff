"""Key-value storage in one SQL table, whatever the database: the shared part.

SQLAlchemy parses the URL, picks the dialect, creates the DBAPI connections,
quotes names, compiles the table's DDL and looks tables up. The hot path (get,
set, delete, batches, scans) runs pre-built SQL on the DBAPI connection
directly, through the dialect's executor. This module knows no driver and
writes no database's own syntax: a dialect subclass of :class:`SQLStorage`
(:mod:`supervm_sql.sqlite`, :mod:`supervm_postgres.postgresql`,
:mod:`supervm_mariadb.mariadb`) names its schemes, its driver's exception class
and its parameter placeholder, and fills in the hooks below: its upsert
(:meth:`SQLStorage._upsert_sql`; the default is ``INSERT ... ON CONFLICT``),
column types, transactions and streamed scans.

The statements built here are plain SQL that PostgreSQL, SQLite, MariaDB and
MySQL accept, as do the PostgreSQL-wire distributed engines (CockroachDB,
YugabyteDB): ``SELECT``/``DELETE`` with ``=``, ``>=``, ``<``, ``ORDER BY``
and ``LIMIT``, ``CREATE TABLE IF NOT EXISTS`` through SQLAlchemy, ``DROP
TABLE IF EXISTS``.
"""

from __future__ import annotations

import contextlib
import operator
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, ClassVar, Self, TypeVar, cast

import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.schema import CreateTable

from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StoreNotFoundError,
)
from supervm.storage import (
    Batch,
    BatchOp,
    Capabilities,
    QueuedBatch,
    RangeScanStorage,
    check_key,
    check_ops,
    check_value,
)
from supervm.url import StorageURL, mask_password

__all__ = [
    "CHUNK_ROWS",
    "COMMON_OPTIONS",
    "DEFAULT_TABLE",
    "MAX_KEY_SIZE",
    "PAGE_ROWS",
    "SQLOptions",
    "SQLStorage",
]

#: Table used when the URL has no ``table`` option.
DEFAULT_TABLE = "supervm_kv"
#: Longest key accepted, on every dialect: PostgreSQL refuses B-tree index entries
#: above ~2.7 KB and InnoDB index keys above 3072 bytes; SuperVM's own keys take
#: at most 277 bytes.
MAX_KEY_SIZE = 2048
#: URL options every SQL dialect takes (and does not pass on to its driver).
COMMON_OPTIONS = ("table", "retries", "sync", "create")
#: Rows a scan fetches in one statement before it switches to streaming.
PAGE_ROWS = 1000
#: Rows per chunk while streaming a large scan.
CHUNK_ROWS = 500
#: Idle scan connections kept for reuse.
_IDLE_SCAN_CONNECTIONS = 4

_NO_LIMIT = 1 << 62
_value_of = operator.itemgetter(1)
_T = TypeVar("_T")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SQLOptions:
    """The URL options every dialect takes (:data:`COMMON_OPTIONS`), read and checked.

    From a URL (``SQLOptions(url)``) or given directly, by a dialect's constructor.
    """

    def __init__(
        self,
        url: StorageURL | None = None,
        *,
        table: str = DEFAULT_TABLE,
        retries: int = 1,
        sync: bool | None = None,
        create: bool = True,
    ) -> None:
        if url is not None:
            table = url.options.get("table", DEFAULT_TABLE)
            retries = url.int_option("retries", 1)
            sync = url.bool_option("sync", True) if "sync" in url.options else None
            create = url.bool_option("create", True)
        elif type(retries) is not int or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
            where = f" in {url.raw!r}" if url is not None else ""
            raise InvalidURLError(
                f"table={table!r}{where} is not a valid table name (letters, digits "
                "and underscores, not starting with a digit, at most 63 characters)"
            )
        self.table = table
        self.retries = retries
        self.sync = sync
        self.create = create


class SQLStorage(RangeScanStorage):
    """A key-value store kept in one table of a SQL database.

    ``SQLStorage.from_url`` returns the dialect subclass registered for the
    URL's scheme (the dialects register when their module is imported):
    :class:`~supervm_sql.SQLiteStorage` for ``sqlite://``,
    :class:`~supervm_postgres.PostgresStorage` for ``postgresql://``,
    :class:`~supervm_mariadb.MariaDBStorage` for ``mariadb://`` and
    ``mysql://``. Each dialect's ``schemes`` are its ``dialect_schemes``.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    url_form = "DIALECT://... (each SQL dialect's class gives its own URL form)"
    capabilities = Capabilities(
        persistent=True,
        range_scan=True,
        reverse_scan=True,
        snapshots=False,
        sync_writes=True,
        max_key_size=MAX_KEY_SIZE,
    )

    # -- what a dialect declares ---------------------------------------------

    #: URL schemes this dialect opens (a dialect subclass sets these; they become
    #: its ``schemes``). Their bases (``mariadb`` of ``mariadb+pymysql``) are how
    #: a URL naming another driver of the same database is recognised and refused.
    dialect_schemes: ClassVar[tuple[str, ...]] = ()
    #: The main scheme base (``url.backend``) of this dialect.
    dialect_backend: ClassVar[str] = ""
    #: What to say to a URL of this database with a driver the dialect does not use.
    driver_hint: ClassVar[str] = ""
    #: Driver exception base class of the dialect.
    _driver_error: ClassVar[type[Exception]] = Exception
    #: Human-readable database kind for messages.
    _kind: ClassVar[str] = "SQL"
    #: Placeholder for a bytes parameter in this dialect's SQL.
    _param: ClassVar[str] = "?"
    #: Name of the binary column type, for messages.
    _binary_type: ClassVar[str] = "binary"

    _dialects: ClassVar[dict[str, type[SQLStorage]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("dialect_schemes", ())
        if own and "schemes" not in cls.__dict__:
            cls.schemes = own
        for scheme in own:
            SQLStorage._dialects[scheme] = cls

    _engine: Engine
    _table: str
    _where: str
    _retries: int
    _sync: bool | None
    _page_rows: int | None
    _raw: PoolProxiedConnection | None
    _conn: Any
    _cur: Any
    _execute: Callable[[str, tuple[bytes, ...]], Any]
    _max_value: int
    _closed: bool
    _dead: bool
    _lock: threading.Lock
    _idle: list[PoolProxiedConnection]
    _busy: set[PoolProxiedConnection]
    _idle_lock: threading.Lock
    _scan_sql: dict[tuple[bool, bool, bool, bool], str]
    _q_table: str
    _q_key: str
    _q_value: str
    _q_get: str
    _q_set: str
    _q_del: str

    # -- opening ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        raw = url.raw
        url = replace(url, raw=mask_password(raw))
        impl = SQLStorage._dialects.get(url.scheme)
        if impl is None:
            for dialect in SQLStorage._dialects.values():
                if url.backend in {s.split("+", 1)[0] for s in dialect.dialect_schemes}:
                    raise InvalidURLError(
                        f"{url.scheme}:// is not supported: {dialect.driver_hint}"
                    )
        if impl is None or not issubclass(impl, cls):
            raise InvalidURLError(f"{cls.__name__} cannot open {url.scheme}:// URLs")
        return cast(Self, impl._open(url, raw))

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        """Open a store; ``url`` has its password masked, ``raw`` is the URL as given."""
        raise NotImplementedError

    def _start(self, engine: Engine, where: str, options: SQLOptions) -> None:
        """Set the store up on ``engine``, connect, and find or create its table.

        A dialect's ``_open`` makes the instance, sets its own attributes and
        calls this; on failure the store is closed and the error raised.
        """
        self._engine = engine
        self._table = options.table
        self._where = where
        self._retries = options.retries
        self._sync = options.sync
        self._page_rows = PAGE_ROWS
        self._max_value = _NO_LIMIT
        self._raw = None
        self._closed = False
        self._dead = False
        self._lock = threading.Lock()
        self._idle = []
        self._busy = set()
        self._idle_lock = threading.Lock()
        self._scan_sql = {}
        # Names quoted the dialect's way: the table always, the columns where needed.
        preparer = engine.dialect.identifier_preparer
        self._q_table = preparer.quote_identifier(self._table)
        self._q_key = key = preparer.quote("key")
        self._q_value = preparer.quote("value")
        p = self._param
        self._q_get = f"SELECT {self._q_value} FROM {self._q_table} WHERE {key} = {p}"
        self._q_set = self._upsert_sql()
        self._q_del = f"DELETE FROM {self._q_table} WHERE {key} = {p}"
        try:
            self._use(*self._open_connection())
        except self._driver_error as exc:
            self.close()
            raise self._connect_error(exc) from exc
        except BaseException:
            self.close()
            raise
        try:
            self._ensure_table(options.create)
            self._ready()
        except self._driver_error as exc:
            self.close()
            raise self._error(exc, "opening") from exc
        except BaseException:
            self.close()
            raise

    def _upsert_sql(self) -> str:
        """The statement that stores one pair, replacing any value the key had."""
        key, value, p = self._q_key, self._q_value, self._param
        return (
            f"INSERT INTO {self._q_table} ({key}, {value}) VALUES ({p}, {p}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {value} = excluded.{value}"
        )

    def _select_sql(self) -> str:
        """``SELECT`` of the pairs of the whole table, without order."""
        return f"SELECT {self._q_key}, {self._q_value} FROM {self._q_table}"

    def _open_connection(self) -> tuple[PoolProxiedConnection, Any, Any]:
        """A new DBAPI connection from the engine, set up, and a cursor on it."""
        try:
            raw = self._engine.raw_connection()
        except sqlalchemy.exc.DBAPIError as exc:
            orig = _unwrap(exc)
            if isinstance(orig, self._driver_error):
                raise orig from exc
            raise
        try:
            conn: Any = raw.driver_connection
            self._configure(conn)
            return raw, conn, conn.cursor()
        except BaseException:
            _discard(raw)
            raise

    def _use(self, raw: PoolProxiedConnection, conn: Any, cur: Any) -> None:
        """Make ``raw`` the store's connection, with ``cur`` its cursor."""
        self._raw, self._conn, self._cur = raw, conn, cur
        self._execute = self._executor(cur)

    def _executor(self, cur: Any) -> Callable[[str, tuple[bytes, ...]], Any]:
        """``execute(sql, params) -> cursor`` for the store's statements on ``cur``."""
        execute: Callable[[str, tuple[bytes, ...]], Any] = cur.execute
        return execute

    def _configure(self, conn: Any) -> None:
        """Set a new connection up (autocommit, the ``sync`` option)."""

    def _connect_error(self, exc: BaseException) -> StorageError:
        """The error for a failure to make the store's first connection."""
        return self._error(exc, "opening")

    def _ready(self) -> None:
        """Last step of opening, once the table is there."""

    def _prepare_database(self) -> None:
        """Database settings made before the table is created (the store lock is held)."""

    def _created_concurrently(self, exc: BaseException) -> bool:
        """Whether ``exc`` from ``CREATE TABLE IF NOT EXISTS`` means another connection won."""
        return False

    def _ensure_table(self, create: bool) -> None:
        """Create the table if missing (or, without ``create``, insist that it exists)."""
        if not create and not self._has_table():
            raise StoreNotFoundError(
                f"no {self._kind} store in table {self._table} at {self._where}: "
                "nothing was created (create=false)"
            )
        table = sqlalchemy.Table(
            self._table,
            sqlalchemy.MetaData(),
            sqlalchemy.Column("key", self._key_type(), primary_key=True),
            sqlalchemy.Column("value", self._value_type(), nullable=False),
            **self._table_options(),
        )
        ddl = str(CreateTable(table, if_not_exists=True).compile(dialect=self._engine.dialect))
        with self._lock:
            cur = self._cur
            self._prepare_database()
            if create:
                try:
                    cur.execute(ddl)
                except self._driver_error as exc:
                    if not self._created_concurrently(exc):
                        raise self._error(exc, f"creating table {self._table}") from exc
            try:
                cur.execute(f"{self._select_sql()} LIMIT 0")
            except self._driver_error as exc:
                raise StorageError(
                    f"table {self._table} in {self._where} is not a key-value table "
                    f"(key {self._binary_type} primary key, value {self._binary_type}): {exc}",
                    original=exc,
                ) from exc

    def _key_type(self) -> sqlalchemy.types.TypeEngine[Any]:
        """Column type of the key (the primary key): the dialect's binary type by default."""
        return sqlalchemy.LargeBinary()

    def _value_type(self) -> sqlalchemy.types.TypeEngine[Any]:
        """Column type of the value."""
        return sqlalchemy.LargeBinary()

    def _table_options(self) -> dict[str, Any]:
        """Dialect keyword arguments of the table (``mysql_engine=...``), none by default."""
        return {}

    def _limit_values(self, size: int) -> None:
        """Declare, for this store, that values longer than ``size`` bytes are refused.

        Sets the instance's ``capabilities.max_value_size`` and makes ``set``
        and batches raise :class:`~supervm.errors.ValueTooLargeError` beyond it.
        """
        self._max_value = size
        # An instance attribute shadows the class-level declaration for this store only.
        vars(self)["capabilities"] = replace(type(self).capabilities, max_value_size=size)

    def _has_table(self) -> bool:
        """Whether the store's table exists (looked up through SQLAlchemy's dialect)."""
        try:
            return sqlalchemy.inspect(self._engine).has_table(self._table)
        except sqlalchemy.exc.DBAPIError as exc:
            orig = _unwrap(exc)
            raise self._error(orig, f"looking up table {self._table}") from orig

    @property
    def table(self) -> str:
        """Name of the table holding this store's pairs."""
        return self._table

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the store's connections come from."""
        return self._engine

    # -- errors and reconnection -------------------------------------------

    def _lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection to the server is gone."""
        return False

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` rolled the statement's whole transaction back and running it
        again on the same connection may succeed (a deadlock victim, say)."""
        return False

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        return StorageError(f"{self._kind} {doing} failed on {self._where}: {exc}", original=exc)

    def _reconnect(self) -> None:
        old = self._raw
        self._raw = None
        if old is not None:
            _discard(old)
        self._use(*self._open_connection())

    def _transient_budget(self) -> int:
        """How many times a :meth:`_transient` failure is run again (``retries`` by default)."""
        return self._retries

    def _before_transient_retry(self, exc: BaseException, doing: str, attempt: int) -> None:
        """Called before the ``attempt``-th rerun after a :meth:`_transient` failure."""

    def _recover(self, exc: BaseException, run: Callable[[], _T], doing: str) -> _T:
        """Handle a driver error raised by ``run``; the store lock is held.

        A lost connection is made again and ``run`` retried, up to the
        ``retries`` option; a :meth:`_transient` failure is run again on the
        same connection, up to :meth:`_transient_budget` times; any other
        error is raised as a storage error.
        """
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed") from None
        # A call on a connection already known to be dead sent nothing: the first
        # reconnection is not a retry.
        reconnects = self._retries + (1 if self._dead else 0)
        reruns = self._transient_budget()
        attempt = 0
        while True:
            lost = self._lost(exc)
            if lost:
                self._dead = True
                if reconnects <= 0:
                    raise StorageConnectionError(
                        f"lost the connection to {self._kind} at {self._where} ({doing}): {exc}",
                        original=exc,
                    ) from exc
                reconnects -= 1
            elif self._transient(exc) and reruns > 0:
                reruns -= 1
                attempt += 1
                self._before_transient_retry(exc, doing, attempt)
            else:
                raise self._error(exc, doing) from exc
            try:
                if lost:
                    self._reconnect()
                result = run()
            except self._driver_error as again:
                exc = again
                continue
            self._dead = False
            return result

    def _run(self, run: Callable[[], _T], doing: str) -> _T:
        """``run()`` on the store's connection under its lock, recovering from driver errors."""
        with self._lock:
            try:
                return run()
            except self._driver_error as exc:
                return self._recover(exc, run, doing)

    # -- protocol ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        row: tuple[bytes] | None
        with self._lock:
            try:
                row = self._execute(self._q_get, (key,)).fetchone()
            except self._driver_error as exc:
                row = self._recover(
                    exc, lambda: self._execute(self._q_get, (key,)).fetchone(), "get"
                )
        return None if row is None else row[0]

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        if type(value) is not bytes or len(value) > self._max_value:
            check_value(value, self.capabilities.max_value_size)
        with self._lock:
            try:
                self._execute(self._q_set, (key, value))
            except self._driver_error as exc:
                self._recover(exc, lambda: self._execute(self._q_set, (key, value)), "set")

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        with self._lock:
            try:
                self._execute(self._q_del, (key,))
            except self._driver_error as exc:
                self._recover(exc, lambda: self._execute(self._q_del, (key,)), "delete")

    def _range_sql(self, lo: bool, hi: bool, reverse: bool, limited: bool) -> str:
        """``SELECT`` of the pairs in a key range, in key order, maybe with a row limit."""
        shape = (lo, hi, reverse, limited)
        sql = self._scan_sql.get(shape)
        if sql is None:
            key = self._q_key
            conditions = []
            if lo:
                conditions.append(f"{key} >= {self._param}")
            if hi:
                conditions.append(f"{key} < {self._param}")
            sql = self._select_sql()
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += f" ORDER BY {key} DESC" if reverse else f" ORDER BY {key}"
            if limited and self._page_rows is not None:
                sql += f" LIMIT {self._page_rows + 1}"
            self._scan_sql[shape] = sql
        return sql

    def _range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in ``[start, end)``.

        Up to a page of rows (all rows when there is no page limit) comes back
        from one statement on the store's connection; a larger result is read
        again by :meth:`_stream_range`, as one consistent view.
        """
        params = tuple(b for b in (start, end) if b is not None)
        sql = self._range_sql(start is not None, end is not None, reverse, True)
        rows = self._run(lambda: self._execute(sql, params).fetchall(), "scan")
        if self._page_rows is None or len(rows) <= self._page_rows:
            return iter(rows)
        return self._stream_range(start, end, reverse)

    def _stream_range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in ``[start, end)`` when they are more than a page, as one consistent view.

        By default a single statement streamed on a connection of its own (:meth:`_stream`).
        """
        params = tuple(b for b in (start, end) if b is not None)
        sql = self._range_sql(start is not None, end is not None, reverse, False)
        return self._stream(sql, params)

    def _stream(self, sql: str, params: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        """Rows of one statement, read on a scan connection as they are consumed."""
        raise NotImplementedError

    def batch(self) -> Batch:
        self._check_open()
        return QueuedBatch(self._write, MAX_KEY_SIZE)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        self._write(*check_ops(ops, MAX_KEY_SIZE))

    def _write(self, ops: list[BatchOp], deleting: bool) -> None:
        """Apply validated operations, in order, in one transaction."""
        if self._closed:
            self._check_open()
        if not ops:
            return
        if (
            self._max_value != _NO_LIMIT
            and max(map(len, filter(None, map(_value_of, ops))), default=0) > self._max_value
        ):
            check_ops(ops, None, self._max_value)  # raises ValueTooLargeError
        puts: Collection[tuple[bytes, bytes | None]]
        deletes: list[bytes]
        if deleting:
            # Only the last operation on each key counts, so puts and deletes can run apart.
            final = dict(ops)
            puts = [(k, v) for k, v in final.items() if v is not None]
            deletes = [k for k, v in final.items() if v is None]
        else:
            # Upserts in order: a key put twice ends with its last value.
            puts, deletes = ops, []

        def run() -> None:
            cur = self._cur
            with self._transaction():
                if puts:
                    cur.executemany(self._q_set, puts)
                if deletes:
                    self._delete_keys(cur, deletes)

        self._run(run, "batch")

    def _delete_keys(self, cur: Any, keys: list[bytes]) -> None:
        """Delete ``keys`` on ``cur``, inside the batch's transaction."""
        cur.executemany(self._q_del, [(k,) for k in keys])

    def _transaction(self) -> AbstractContextManager[object]:
        """A context in which the store's cursor runs one transaction (lock held)."""
        raise NotImplementedError

    def drop(self) -> None:
        """Drop this store's table (every pair in it) and close the store."""
        self._check_open()
        # Open scans would hold the table and block the drop: end them first.
        self._close_scan_connections()
        sql = f"DROP TABLE IF EXISTS {self._q_table}"
        self._run(lambda: self._cur.execute(sql), "drop")
        self.close()

    # -- scan connections ----------------------------------------------------

    def _borrow(self) -> PoolProxiedConnection:
        """A connection for one scan: an idle one, else a new one."""
        with self._idle_lock:
            if self._idle and not self._closed:
                raw = self._idle.pop()
                self._busy.add(raw)
                return raw
        raw, _conn, _cur = self._open_connection()
        with self._idle_lock:
            if not self._closed:
                self._busy.add(raw)
                return raw
        _discard(raw)
        raise StorageClosedError(f"{type(self).__name__} is closed")

    def _give_back(self, raw: PoolProxiedConnection, healthy: bool) -> None:
        """End a scan's use of ``raw``: kept for the next scan when ``healthy``."""
        with self._idle_lock:
            self._busy.discard(raw)
            if healthy and not self._closed and len(self._idle) < _IDLE_SCAN_CONNECTIONS:
                self._idle.append(raw)
                return
        _discard(raw)

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            raw, self._raw = self._raw, None
            if raw is not None:
                _discard(raw)
        # Scans still open lose their connections too; reading on raises StorageClosedError.
        self._close_scan_connections()
        self._engine.dispose()

    def _close_scan_connections(self) -> None:
        with self._idle_lock:
            others = [*self._idle, *self._busy]
            self._idle = []
            self._busy = set()
        for conn in others:
            _discard(conn)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._where} table={self._table} {state}>"


def _discard(raw: PoolProxiedConnection) -> None:
    """Close a pooled DBAPI connection without returning it to the pool."""
    if raw.is_valid:
        with contextlib.suppress(Exception):
            raw.invalidate()


def _unwrap(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc
