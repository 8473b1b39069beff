"""The SQLite dialect of the SQL store, through the standard ``sqlite3`` module."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator
from typing import cast

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, PoolProxiedConnection, StaticPool

from supervm.errors import InvalidURLError, StorageClosedError, StorageError, StorageLockedError
from supervm.storage import check_prefix, prefix_upper_bound, store_path
from supervm.url import StorageURL
from supervm_sql.store import (
    CHUNK_ROWS,
    COMMON_OPTIONS,
    SQLOptions,
    SQLStorage,
    _discard,
)

__all__ = ["SQLiteStorage"]

_OPTIONS = (*COMMON_OPTIONS, "timeout")
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


class SQLiteStorage(SQLStorage):
    """A store in a SQLite table (WAL journal, busy timeout)."""

    dialect_schemes = ("sqlite", "sqlite+pysqlite")
    dialect_backend = "sqlite"
    url_form = (
        "sqlite:///REL/PATH.db | sqlite:////ABS/PATH.db | sqlite://"
        "[?table=NAME&timeout=SECONDS&sync=BOOL&create=BOOL]"
    )
    driver_hint = "this back end drives SQLite with sqlite3; use sqlite://"
    _driver_error = sqlite3.Error
    _kind = "SQLite"
    _param = "?"
    _binary_type = "BLOB"

    _conn: sqlite3.Connection
    _cur: sqlite3.Cursor
    _timeout: float
    _memory: bool

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        url.reject_unknown_options(_OPTIONS)
        options = SQLOptions(url)
        timeout = url.float_option("timeout", 5.0)
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
        self = cls()
        self._timeout = timeout
        self._memory = database in ("", ":memory:")
        connect_args = {"check_same_thread": False, "timeout": timeout}
        if self._memory:
            # An in-memory database is new with every store: there is nothing to find.
            options.create = True
            engine = sqlalchemy.create_engine(
                sa_url, poolclass=StaticPool, connect_args=connect_args
            )
            self._start(engine, "memory", options)
            # One connection holds an in-memory database: scans read it whole.
            self._page_rows = None
            return self
        where = store_path(database, create=options.create, kind="SQLite")
        engine = sqlalchemy.create_engine(sa_url, poolclass=NullPool, connect_args=connect_args)
        self._start(engine, where, options)
        return self

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.isolation_level = None
        if self._sync is not None:
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._sync else 'NORMAL'}")

    def _prepare_database(self) -> None:
        if not self._memory:
            self._cur.execute("PRAGMA journal_mode = WAL")

    def _ready(self) -> None:
        """Open the first scan connection with the store, having it read the table's schema.

        Scans read on connections of their own; this way the first scan finds
        one ready instead of connecting, and a connection that cannot read the
        table fails the open rather than a later scan.
        """
        if self._memory:
            return
        raw, conn, _cur = self._open_connection()
        try:
            conn.execute(f"{self._select_sql()} LIMIT 0").close()
        except BaseException:
            _discard(raw)
            raise
        self._idle.append(raw)

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StorageLockedError(
                f"SQLite database {self._where} is locked by another connection "
                f"({doing}, waited {self._timeout:g} s): {exc}",
                original=exc,
            )
        return super()._error(exc, doing)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        cur = self._cur
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield
            cur.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise

    # -- scans -----------------------------------------------------------------

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        if type(prefix) is not bytes:
            check_prefix(prefix)
        upper = prefix_upper_bound(prefix)
        if upper is None or not prefix or self._memory:
            return super().scan(prefix)
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed")
        return self._read(self._range_sql(True, True, False, False), (prefix, upper))

    def _range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        if self._memory:
            return super()._range(start, end, reverse)
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
            rows: list[tuple[bytes, bytes]] = cur.fetchmany(CHUNK_ROWS)
        except BaseException as exc:
            self._end_scan(raw, conn, None)
            if isinstance(exc, sqlite3.Error):
                raise self._scan_error(exc) from exc
            raise
        if len(rows) < CHUNK_ROWS:
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
            while rows := cur.fetchmany(CHUNK_ROWS):
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
