"""Key-value storage in one SQL table: PostgreSQL through psycopg 3, or SQLite.

SQLAlchemy parses the URL, picks the dialect, creates the DBAPI connections and
compiles the table's DDL. The hot path (get, set, delete, batches, scans) runs
pre-built SQL on the DBAPI connection directly.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from dataclasses import replace
from typing import Any, ClassVar, NoReturn, Self, TypeVar, cast

import psycopg
import sqlalchemy
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool, PoolProxiedConnection, StaticPool
from sqlalchemy.schema import CreateTable

from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageConnectionError,
    StorageError,
    StorageLockedError,
)
from supervm.storage import (
    BAD_BATCH_OP,
    Batch,
    BatchOp,
    Capabilities,
    Storage,
    check_key,
    check_prefix,
    check_range,
    check_value,
    prefix_upper_bound,
)
from supervm.url import StorageURL, mask_password

__all__ = ["DEFAULT_TABLE", "MAX_KEY_SIZE", "PostgresStorage", "SQLStorage", "SQLiteStorage"]

#: Table used when the URL has no ``table`` option.
DEFAULT_TABLE = "supervm_kv"
#: Longest key accepted. PostgreSQL refuses B-tree index entries above ~2.7 KB.
MAX_KEY_SIZE = 2048

_T = TypeVar("_T")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Rows a scan fetches in one statement before it switches to streaming.
_PAGE_ROWS = 1000
#: Rows per chunk while streaming a large scan.
_CHUNK_ROWS = 500
#: Idle scan connections kept for reuse.
_IDLE_SCAN_CONNECTIONS = 4

_COMMON_OPTIONS = ("table", "retries", "sync")
_SQLITE_OPTIONS = (*_COMMON_OPTIONS, "timeout")
#: libpq connection parameters passed through from the URL query to psycopg.
_LIBPQ_OPTIONS = (
    "application_name",
    "channel_binding",
    "client_encoding",
    "connect_timeout",
    "fallback_application_name",
    "gssencmode",
    "gssdelegation",
    "gsslib",
    "host",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "krbsrvname",
    "load_balance_hosts",
    "options",
    "passfile",
    "port",
    "require_auth",
    "requirepeer",
    "service",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "sslcert",
    "sslcertmode",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslkey",
    "sslmode",
    "sslnegotiation",
    "sslrootcert",
    "sslsni",
    "target_session_attrs",
    "tcp_user_timeout",
)
_IDLE = psycopg.pq.TransactionStatus.IDLE
#: Chunked streaming needs libpq 17 and psycopg 3.2; otherwise rows stream one by one.
_CHUNKED_STREAMS = (
    psycopg.pq.version() >= 170000 and "size" in inspect.signature(psycopg.Cursor.stream).parameters
)
_POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")


def _table_name(url: StorageURL) -> str:
    name = url.options.get("table", DEFAULT_TABLE)
    if not _TABLE_RE.fullmatch(name):
        raise InvalidURLError(
            f"table={name!r} in {url.raw!r} is not a valid table name "
            "(letters, digits and underscores, not starting with a digit, at most 63 characters)"
        )
    return name


def _sync_option(url: StorageURL) -> bool | None:
    if "sync" not in url.options:
        return None
    return url.bool_option("sync", True)


_FINISHED = "this batch was already committed or discarded"


def _finished(*args: object) -> NoReturn:
    raise RuntimeError(_FINISHED)


class _SQLBatch(Batch):
    """Operations validated as they are queued and applied in one transaction on commit.

    ``set`` and ``delete`` are closures stored on each instance (they shadow the
    class methods): a call is one plain function call that checks its arguments
    and appends to the operation list, with no attribute lookups. Finishing the
    batch rebinds what they append with, so even a ``set`` fetched before the
    commit refuses further use.
    """

    def __init__(self, store: SQLStorage) -> None:
        self._store = store
        ops: list[BatchOp] = []
        append: Callable[[BatchOp], object] = ops.append
        deleting = False

        def set(key: bytes, value: bytes) -> None:
            """Queue a put."""
            if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
                check_key(key, MAX_KEY_SIZE)
            if type(value) is not bytes:
                check_value(value)
            append((key, value))

        def delete(key: bytes) -> None:
            """Queue a delete."""
            nonlocal deleting
            if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
                check_key(key, MAX_KEY_SIZE)
            append((key, None))
            deleting = True

        def finish(discarding: bool) -> tuple[list[BatchOp], bool]:
            nonlocal append
            if append is _finished and not discarding:
                raise RuntimeError(_FINISHED)
            append = _finished
            return ops, deleting

        self.set = set  # type: ignore[method-assign]
        self.delete = delete  # type: ignore[method-assign]
        self._finish = finish
        self._ops = ops

    # The class methods are only reached through the class (``_SQLBatch.set(b, ...)``).
    def set(self, key: bytes, value: bytes) -> None:
        vars(self)["set"](key, value)

    def delete(self, key: bytes) -> None:
        vars(self)["delete"](key)

    def commit(self) -> None:
        ops, deleting = self._finish(False)
        if ops:
            self._store._write(ops, deleting)

    def discard(self) -> None:
        self._finish(True)

    def __len__(self) -> int:
        return len(self._ops)


class SQLStorage(Storage):
    """A key-value store kept in one table of PostgreSQL or SQLite.

    ``SQLStorage.from_url`` returns a :class:`PostgresStorage` for
    ``postgresql://`` and ``postgresql+psycopg://`` URLs and a
    :class:`SQLiteStorage` for ``sqlite://`` URLs.
    """

    schemes = ("postgresql", "postgresql+psycopg", "sqlite")
    url_form = (
        "postgresql[+psycopg]://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
        "[?table=NAME&retries=N&sync=BOOL&LIBPQ_PARAM=...] "
        "or sqlite:///REL/PATH.db | sqlite:////ABS/PATH.db | sqlite://"
        "[?table=NAME&timeout=SECONDS&sync=BOOL]"
    )
    capabilities = Capabilities(
        persistent=True,
        range_scan=True,
        reverse_scan=True,
        snapshots=False,
        sync_writes=True,
        max_key_size=MAX_KEY_SIZE,
    )

    #: Driver exception base class of the dialect.
    _driver_error: ClassVar[type[Exception]] = Exception
    #: Human-readable database kind for messages.
    _kind: ClassVar[str] = "SQL"

    _engine: Engine
    _table: str
    _where: str
    _retries: int
    _sync: bool | None
    _page_rows: int | None
    _raw: PoolProxiedConnection | None
    _closed: bool
    _dead: bool
    _lock: threading.Lock
    _idle: list[PoolProxiedConnection]
    _busy: set[PoolProxiedConnection]
    _idle_lock: threading.Lock
    _scan_sql: dict[tuple[bool, bool, bool, bool], str]
    _q_get: str
    _q_set: str
    _q_del: str

    # -- opening ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        raw = url.raw
        url = replace(url, raw=mask_password(raw))
        impl: type[SQLStorage]
        if url.scheme in _POSTGRES_SCHEMES:
            impl = PostgresStorage
        elif url.scheme in _SQLITE_SCHEMES:
            impl = SQLiteStorage
        elif url.backend == "postgresql":
            raise InvalidURLError(
                f"{url.scheme}:// is not supported: this back end drives PostgreSQL with "
                "psycopg 3; use postgresql:// or postgresql+psycopg://"
            )
        else:
            raise InvalidURLError(f"{cls.__name__} cannot open {url.scheme}:// URLs")
        if not issubclass(impl, cls):
            raise InvalidURLError(f"{cls.__name__} cannot open {url.scheme}:// URLs")
        return cast(Self, impl._open(url, raw))

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        """Open a store; ``url`` has its password masked, ``raw`` is the URL as given."""
        raise NotImplementedError

    def _setup(
        self, engine: Engine, table: str, where: str, retries: int, sync: bool | None
    ) -> None:
        self._engine = engine
        self._table = table
        self._where = where
        self._retries = retries
        self._sync = sync
        self._page_rows = _PAGE_ROWS
        self._raw = None
        self._closed = False
        self._dead = False
        self._lock = threading.Lock()
        self._idle = []
        self._busy = set()
        self._idle_lock = threading.Lock()
        self._scan_sql = {}
        quoted = f'"{table}"'
        p = self._param
        self._q_get = f"SELECT value FROM {quoted} WHERE key = {p}"
        self._q_set = (
            f"INSERT INTO {quoted} (key, value) VALUES ({p}, {p}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self._q_del = f"DELETE FROM {quoted} WHERE key = {p}"

    def _create_table_sql(self) -> str:
        table = sqlalchemy.Table(
            self._table,
            sqlalchemy.MetaData(),
            sqlalchemy.Column("key", sqlalchemy.LargeBinary, primary_key=True),
            sqlalchemy.Column("value", sqlalchemy.LargeBinary, nullable=False),
        )
        return str(CreateTable(table, if_not_exists=True).compile(dialect=self._engine.dialect))

    #: Placeholder for a bytes parameter in this dialect's SQL.
    _param: ClassVar[str] = "?"

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

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        return StorageError(f"{self._kind} {doing} failed on {self._where}: {exc}", original=exc)

    def _reconnect(self) -> None:
        raise NotImplementedError

    def _recover(self, exc: BaseException, run: Callable[[], _T], doing: str) -> _T:
        """Handle a driver error raised by ``run``; the store lock is held."""
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed") from None
        if not self._lost(exc):
            raise self._error(exc, doing) from exc
        # A call on a connection already known to be dead sent nothing: the first
        # reconnection is not a retry.
        budget = self._retries + (1 if self._dead else 0)
        self._dead = True
        while budget > 0:
            budget -= 1
            try:
                self._reconnect()
                result = run()
            except self._driver_error as again:
                if not self._lost(again):
                    raise self._error(again, doing) from again
                exc = again
                continue
            self._dead = False
            return result
        raise StorageConnectionError(
            f"lost the connection to {self._kind} at {self._where} ({doing}): {exc}",
            original=exc,
        ) from exc

    # -- protocol ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        return self._scan(prefix or None, prefix_upper_bound(prefix), False)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_range(start, end, reverse)
        return self._scan(start, end, reverse)

    def _range_sql(self, lo: bool, hi: bool, reverse: bool, limited: bool) -> str:
        """``SELECT`` of the pairs in a key range, in key order, maybe with a row limit."""
        shape = (lo, hi, reverse, limited)
        sql = self._scan_sql.get(shape)
        if sql is None:
            conditions = []
            if lo:
                conditions.append(f"key >= {self._param}")
            if hi:
                conditions.append(f"key < {self._param}")
            sql = f'SELECT key, value FROM "{self._table}"'
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
            if limited and self._page_rows is not None:
                sql += f" LIMIT {self._page_rows + 1}"
            self._scan_sql[shape] = sql
        return sql

    def _scan(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs in ``[start, end)``.

        Up to a page of rows (all rows when there is no page limit) comes back
        from one statement on the store's connection; a larger result is
        streamed instead, from a single statement on a connection of its own,
        so it is one consistent view.
        """
        params = tuple(b for b in (start, end) if b is not None)
        sql = self._range_sql(start is not None, end is not None, reverse, True)
        rows = self._fetch_page(sql, params)
        if self._page_rows is None or len(rows) <= self._page_rows:
            return iter(rows)
        full_sql = self._range_sql(start is not None, end is not None, reverse, False)
        return self._stream(full_sql, params)

    def _fetch_page(self, sql: str, params: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _stream(self, sql: str, params: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def batch(self) -> Batch:
        self._check_open()
        return _SQLBatch(self)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked: list[BatchOp] = []
        append = checked.append
        deleting = False
        for op in ops:
            if type(op) is not tuple or len(op) != 2:
                raise TypeError(BAD_BATCH_OP)
            key, value = op
            if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
                check_key(key, MAX_KEY_SIZE)
            if value is None:
                deleting = True
            elif type(value) is not bytes:
                check_value(value)
            append(op)
        self._write(checked, deleting)

    def _write(self, ops: list[BatchOp], deleting: bool) -> None:
        """Apply validated operations, in order, in one transaction."""
        if self._closed:
            self._check_open()
        if not ops:
            return
        puts: Collection[tuple[bytes, bytes | None]]
        if deleting:
            # Only the last operation on each key counts, so puts and deletes can run apart.
            final = dict(ops)
            puts = [(k, v) for k, v in final.items() if v is not None]
            deletes = [(k,) for k, v in final.items() if v is None]
        else:
            # Upserts in order: a key put twice ends with its last value.
            puts, deletes = ops, []
        self._apply(puts, deletes)

    def _apply(
        self, puts: Collection[tuple[bytes, bytes | None]], deletes: list[tuple[bytes]]
    ) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        """Drop this store's table (every pair in it) and close the store."""
        self._check_open()
        # Open scans would hold the table and block the drop: end them first.
        self._close_scan_connections()
        self._drop()
        self.close()

    def _drop(self) -> None:
        raise NotImplementedError

    # -- scan connections ----------------------------------------------------

    def _new_scan_connection(self) -> PoolProxiedConnection:
        raise NotImplementedError

    def _borrow(self) -> PoolProxiedConnection:
        with self._idle_lock:
            if self._idle and not self._closed:
                raw = self._idle.pop()
                self._busy.add(raw)
                return raw
        raw = self._new_scan_connection()
        with self._idle_lock:
            if not self._closed:
                self._busy.add(raw)
                return raw
        _discard(raw)
        raise StorageClosedError(f"{type(self).__name__} is closed")

    def _give_back(self, raw: PoolProxiedConnection, healthy: bool) -> None:
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


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


class PostgresStorage(SQLStorage):
    """A store in a PostgreSQL table, through psycopg 3."""

    _driver_error = psycopg.Error
    _kind = "PostgreSQL"
    _param = "%b"

    _conn: psycopg.Connection[Any]
    _cur: psycopg.Cursor[Any]
    _stream_chunk: int

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        unknown = sorted(set(url.options) - {*_COMMON_OPTIONS, *_LIBPQ_OPTIONS})
        if unknown:
            raise InvalidURLError(
                f"unknown option(s) {', '.join(unknown)} in {url.raw!r}; {url.scheme}:// "
                f"accepts {', '.join(_COMMON_OPTIONS)} and libpq connection parameters "
                "(sslmode, connect_timeout, application_name, ...)"
            )
        table = _table_name(url)
        retries = url.int_option("retries", 1)
        sync = _sync_option(url)
        try:
            sa_url = make_url(raw)
        except sqlalchemy.exc.ArgumentError:
            raise InvalidURLError(f"malformed PostgreSQL URL {url.raw!r}") from None
        return cls._connect(sa_url, table, retries, sync)

    @classmethod
    def _connect(cls, sa_url: URL, table: str, retries: int, sync: bool | None) -> Self:
        sa_url = sa_url.difference_update_query(_COMMON_OPTIONS).set(
            drivername="postgresql+psycopg"
        )
        host = sa_url.host or sa_url.query.get("host") or "localhost"
        where = f"{host}:{sa_url.port or 5432}/{sa_url.database or ''}"
        engine = sqlalchemy.create_engine(sa_url, poolclass=NullPool)
        self = cls()
        self._setup(engine, table, where, retries, sync)
        self._stream_chunk = _CHUNK_ROWS if _CHUNKED_STREAMS else 1
        try:
            self._raw, self._conn, self._cur = self._open_connection()
        except psycopg.Error as exc:
            engine.dispose()
            raise StorageConnectionError(
                f"cannot connect to PostgreSQL at {where}: {exc}", original=exc
            ) from exc
        try:
            self._ensure_table()
        except BaseException:
            self.close()
            raise
        return self

    def _open_connection(
        self,
    ) -> tuple[PoolProxiedConnection, psycopg.Connection[Any], psycopg.Cursor[Any]]:
        try:
            raw = self._engine.raw_connection()
        except sqlalchemy.exc.DBAPIError as exc:
            orig = _unwrap(exc)
            if isinstance(orig, psycopg.Error):
                raise orig from exc
            raise
        try:
            conn = cast("psycopg.Connection[Any]", raw.driver_connection)
            conn.autocommit = True
            if self._sync is not None:
                conn.execute(f"SET synchronous_commit TO {'on' if self._sync else 'off'}")
            return raw, conn, conn.cursor()
        except BaseException:
            _discard(raw)
            raise

    def _ensure_table(self) -> None:
        ddl = self._create_table_sql()
        probe = f'SELECT key, value FROM "{self._table}" LIMIT 0'
        with self._lock:
            try:
                self._cur.execute(ddl)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                pass  # created concurrently by another connection
            except psycopg.Error as exc:
                raise self._error(exc, f"creating table {self._table}") from exc
            try:
                self._cur.execute(probe)
            except psycopg.Error as exc:
                raise StorageError(
                    f"table {self._table} on {self._where} is not a key-value table "
                    f"(key bytea primary key, value bytea): {exc}",
                    original=exc,
                ) from exc

    def _lost(self, exc: BaseException) -> bool:
        return self._conn.closed

    def _reconnect(self) -> None:
        old = self._raw
        self._raw = None
        if old is not None:
            _discard(old)
        self._raw, self._conn, self._cur = self._open_connection()

    def backend_pid(self) -> int:
        """Process id of the server backend serving this store's connection."""
        self._check_open()
        with self._lock:
            return self._conn.info.backend_pid

    # -- hot path ------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        row: tuple[bytes] | None
        with self._lock:
            try:
                cur = self._cur
                cur.execute(self._q_get, (key,), prepare=True, binary=True)
                row = cur.fetchone()
            except psycopg.Error as exc:
                row = self._recover(exc, lambda: self._get_again(key), "get")
        return None if row is None else row[0]

    def _get_again(self, key: bytes) -> Any:
        self._cur.execute(self._q_get, (key,), prepare=True, binary=True)
        return self._cur.fetchone()

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        if type(value) is not bytes:
            check_value(value)
        with self._lock:
            try:
                self._cur.execute(self._q_set, (key, value), prepare=True)
            except psycopg.Error as exc:
                self._recover(
                    exc, lambda: self._cur.execute(self._q_set, (key, value), prepare=True), "set"
                )

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        with self._lock:
            try:
                self._cur.execute(self._q_del, (key,), prepare=True)
            except psycopg.Error as exc:
                self._recover(
                    exc, lambda: self._cur.execute(self._q_del, (key,), prepare=True), "delete"
                )

    def _apply(
        self, puts: Collection[tuple[bytes, bytes | None]], deletes: list[tuple[bytes]]
    ) -> None:
        def run() -> None:
            cur = self._cur
            with self._conn.transaction():
                if puts:
                    cur.executemany(self._q_set, puts)
                if deletes:
                    cur.executemany(self._q_del, deletes)

        with self._lock:
            try:
                run()
            except psycopg.Error as exc:
                self._recover(exc, run, "batch")

    def _fetch_page(self, sql: str, params: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
        def run() -> list[tuple[bytes, bytes]]:
            cur = self._cur
            cur.execute(sql, params, prepare=True, binary=True)
            return cur.fetchall()

        with self._lock:
            try:
                cur = self._cur
                cur.execute(sql, params, prepare=True, binary=True)
                return cur.fetchall()
            except psycopg.Error as exc:
                return self._recover(exc, run, "scan")

    def _new_scan_connection(self) -> PoolProxiedConnection:
        raw, _conn, _cur = self._open_connection()
        return raw

    def _stream(self, sql: str, params: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        """Rows of one statement, read from the server in chunks as they are consumed."""
        budget = self._retries
        while True:
            if self._closed:
                raise StorageClosedError(f"{type(self).__name__} is closed")
            try:
                raw = self._borrow()
            except psycopg.Error as exc:
                raise StorageConnectionError(
                    f"cannot connect to PostgreSQL at {self._where}: {exc}", original=exc
                ) from exc
            conn = cast("psycopg.Connection[Any]", raw.driver_connection)
            started = False
            try:
                with conn.cursor() as cur:
                    if self._stream_chunk > 1:
                        stream = cur.stream(sql, params, binary=True, size=self._stream_chunk)
                    else:
                        stream = cur.stream(sql, params, binary=True)
                    rows = cast("Generator[Any, None, None]", stream)
                    try:
                        for row in rows:
                            started = True
                            yield row
                    finally:
                        rows.close()
                return
            except psycopg.Error as exc:
                if self._closed:
                    raise StorageClosedError(f"{type(self).__name__} is closed") from None
                if conn.closed and not started and budget > 0:
                    budget -= 1
                    continue
                if conn.closed:
                    raise StorageConnectionError(
                        f"lost the connection to PostgreSQL at {self._where} (scan): {exc}",
                        original=exc,
                    ) from exc
                raise self._error(exc, "scan") from exc
            finally:
                self._give_back(raw, not conn.closed and conn.info.transaction_status == _IDLE)

    def _drop(self) -> None:
        sql = f'DROP TABLE IF EXISTS "{self._table}"'
        with self._lock:
            try:
                self._cur.execute(sql)
            except psycopg.Error as exc:
                self._recover(exc, lambda: self._cur.execute(sql), "drop")


# ---------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


class SQLiteStorage(SQLStorage):
    """A store in a SQLite table (WAL journal, busy timeout)."""

    _driver_error = sqlite3.Error
    _kind = "SQLite"
    _param = "?"

    _conn: sqlite3.Connection
    _cur: sqlite3.Cursor
    _timeout: float
    _memory: bool

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        url.reject_unknown_options(_SQLITE_OPTIONS)
        table = _table_name(url)
        retries = url.int_option("retries", 1)
        sync = _sync_option(url)
        timeout = _seconds_option(url, "timeout", 5.0)
        try:
            sa_url = make_url(raw)
        except sqlalchemy.exc.ArgumentError:
            raise InvalidURLError(f"malformed SQLite URL {url.raw!r}") from None
        sa_url = sa_url.set(query={}, drivername="sqlite+pysqlite")
        if sa_url.host or sa_url.username or sa_url.password or sa_url.port:
            raise InvalidURLError(
                f"SQLite URLs take no host or user, got {url.raw!r}; use sqlite:///relative.db "
                "or sqlite:////absolute/path.db"
            )
        database = sa_url.database or ""
        memory = database in ("", ":memory:")
        if memory:
            where = "memory"
            engine = sqlalchemy.create_engine(
                sa_url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False, "timeout": timeout},
            )
        else:
            parent = os.path.dirname(database)
            if parent:
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as exc:
                    raise StorageError(
                        f"cannot create the directory of SQLite database {database}: {exc}",
                        original=exc,
                    ) from exc
            where = database
            engine = sqlalchemy.create_engine(
                sa_url,
                poolclass=NullPool,
                connect_args={"check_same_thread": False, "timeout": timeout},
            )
        self = cls()
        self._setup(engine, table, where, retries, sync)
        self._timeout = timeout
        self._memory = memory
        if memory:
            # One connection holds an in-memory database: scans read it whole.
            self._page_rows = None
        try:
            self._raw, self._conn, self._cur = self._open_connection()
            self._ensure_table()
            if not memory:
                self._ready_scan_connection()
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc, "opening") from exc
        except BaseException:
            self.close()
            raise
        return self

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StorageLockedError(
                f"SQLite database {self._where} is locked by another connection "
                f"({doing}, waited {self._timeout:g} s): {exc}",
                original=exc,
            )
        return super()._error(exc, doing)

    def _open_connection(self) -> tuple[PoolProxiedConnection, sqlite3.Connection, sqlite3.Cursor]:
        try:
            raw = self._engine.raw_connection()
        except sqlalchemy.exc.DBAPIError as exc:
            orig = _unwrap(exc)
            if isinstance(orig, sqlite3.Error):
                raise orig from exc
            raise
        try:
            conn = cast(sqlite3.Connection, raw.driver_connection)
            conn.isolation_level = None
            if self._sync is not None:
                conn.execute(f"PRAGMA synchronous = {'FULL' if self._sync else 'NORMAL'}")
            return raw, conn, conn.cursor()
        except BaseException:
            _discard(raw)
            raise

    def _ensure_table(self) -> None:
        with self._lock:
            if not self._memory:
                self._cur.execute("PRAGMA journal_mode = WAL")
            self._cur.execute(self._create_table_sql())
            try:
                self._cur.execute(f'SELECT key, value FROM "{self._table}" LIMIT 0')
            except sqlite3.Error as exc:
                raise StorageError(
                    f"table {self._table} in {self._where} is not a key-value table "
                    f"(key BLOB primary key, value BLOB): {exc}",
                    original=exc,
                ) from exc

    def _reconnect(self) -> None:  # pragma: no cover - SQLite connections are not lost
        raise StorageConnectionError(f"SQLite database {self._where} cannot be reconnected")

    # -- hot path ------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        row: tuple[bytes] | None
        with self._lock:
            try:
                row = self._cur.execute(self._q_get, (key,)).fetchone()
            except sqlite3.Error as exc:
                row = self._recover(exc, _never, "get")
        return None if row is None else row[0]

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        if type(value) is not bytes:
            check_value(value)
        with self._lock:
            try:
                self._cur.execute(self._q_set, (key, value))
            except sqlite3.Error as exc:
                self._recover(exc, _never, "set")

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes or not key or len(key) > MAX_KEY_SIZE:
            check_key(key, MAX_KEY_SIZE)
        with self._lock:
            try:
                self._cur.execute(self._q_del, (key,))
            except sqlite3.Error as exc:
                self._recover(exc, _never, "delete")

    def _apply(
        self, puts: Collection[tuple[bytes, bytes | None]], deletes: list[tuple[bytes]]
    ) -> None:
        with self._lock:
            try:
                cur = self._cur
                cur.execute("BEGIN IMMEDIATE")
                try:
                    if puts:
                        cur.executemany(self._q_set, puts)
                    if deletes:
                        cur.executemany(self._q_del, deletes)
                    cur.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    raise
            except sqlite3.Error as exc:
                self._recover(exc, _never, "batch")

    def _fetch_page(self, sql: str, params: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
        with self._lock:
            try:
                return self._cur.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                return self._recover(exc, _never, "scan")

    def _new_scan_connection(self) -> PoolProxiedConnection:
        raw, _conn, _cur = self._open_connection()
        return raw

    def _ready_scan_connection(self) -> None:
        """Open the first scan connection with the store, having it read the table's schema.

        Scans read on connections of their own; this way the first scan finds
        one ready instead of connecting, and a connection that cannot read the
        table fails the open rather than a later scan.
        """
        raw = self._new_scan_connection()
        try:
            conn = cast(sqlite3.Connection, raw.driver_connection)
            conn.execute(f'SELECT key, value FROM "{self._table}" LIMIT 0').close()
        except BaseException:
            _discard(raw)
            raise
        self._idle.append(raw)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        upper = prefix_upper_bound(prefix)
        if upper is None or not prefix or self._memory:
            return self._scan(prefix or None, upper, False)
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed")
        return self._read(self._range_sql(True, True, False, False), (prefix, upper))

    def _scan(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        if self._memory:
            return super()._scan(start, end, reverse)
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed")
        params = tuple(b for b in (start, end) if b is not None)
        return self._read(
            self._range_sql(start is not None, end is not None, reverse, False), params
        )

    def _read(self, sql: str, params: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        """Pairs from one statement, run on a connection of its own.

        Under WAL that statement sees one consistent state of the database: the
        state when the scan was asked for. The first chunk of rows is read at
        once; a result that fits in it is returned as a plain list iterator and
        its connection goes straight back to the idle ones. A longer result
        keeps the connection and streams the rest, a chunk at a time, as it is
        consumed. (An in-memory database has a single connection and is read
        at once.)
        """
        try:
            raw = self._borrow()
        except sqlite3.Error as exc:
            raise self._error(exc, "scan") from exc
        conn = cast(sqlite3.Connection, raw.driver_connection)
        try:
            cur = conn.execute(sql, params)
            rows: list[tuple[bytes, bytes]] = cur.fetchmany(_CHUNK_ROWS)
        except BaseException as exc:
            self._end_scan(raw, conn, None)
            if isinstance(exc, sqlite3.Error):
                raise self._scan_error(exc) from exc
            raise
        if len(rows) < _CHUNK_ROWS:
            self._end_scan(raw, conn, cur)
            return iter(rows)
        rest = self._rest(raw, conn, cur)
        # Run the generator to its first (empty) yield: from then on closing it,
        # or dropping it unfinished, gives the connection back.
        next(rest)
        return itertools.chain(rows, itertools.chain.from_iterable(rest))

    def _rest(
        self, raw: PoolProxiedConnection, conn: sqlite3.Connection, cur: sqlite3.Cursor
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """The remaining rows of a scan's statement, in lists, read as they are consumed."""
        try:
            yield []
            while rows := cur.fetchmany(_CHUNK_ROWS):
                yield rows
        except sqlite3.Error as exc:
            raise self._scan_error(exc) from exc
        finally:
            self._end_scan(raw, conn, cur)

    def _scan_error(self, exc: sqlite3.Error) -> StorageError:
        if self._closed:
            return StorageClosedError(f"{type(self).__name__} is closed")
        return self._error(exc, "scan")

    def _end_scan(
        self, raw: PoolProxiedConnection, conn: sqlite3.Connection, cur: sqlite3.Cursor | None
    ) -> None:
        """Give a scan's connection back: for reuse when it is left in a clean state."""
        try:
            if cur is not None:
                cur.close()
            healthy = not conn.in_transaction
        except sqlite3.Error:
            healthy = False
        self._give_back(raw, healthy)

    def _drop(self) -> None:
        with self._lock:
            try:
                self._cur.execute(f'DROP TABLE IF EXISTS "{self._table}"')
            except sqlite3.Error as exc:
                self._recover(exc, _never, "drop")


def _never() -> Any:  # pragma: no cover - only reached when a lost connection is retried
    raise AssertionError("SQLite operations are never retried")


def _seconds_option(url: StorageURL, name: str, default: float) -> float:
    value = url.options.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidURLError(
            f"option {name}={value!r} in {url.raw!r} must be a number of seconds >= 0"
        )
    return seconds
