"""The PostgreSQL dialect of the SQL store, through psycopg 3."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any, cast

import psycopg
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from supervm.errors import InvalidURLError, StorageClosedError, StorageConnectionError, StorageError
from supervm.url import StorageURL
from supervm_sql.store import CHUNK_ROWS, COMMON_OPTIONS, SQLOptions, SQLStorage

__all__ = ["PostgresStorage"]

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


class PostgresStorage(SQLStorage):
    """A store in a PostgreSQL table, through psycopg 3."""

    dialect_schemes = ("postgresql", "postgresql+psycopg")
    dialect_backend = "postgresql"
    url_form = (
        "postgresql[+psycopg]://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
        "[?table=NAME&retries=N&sync=BOOL&create=BOOL&LIBPQ_PARAM=...]"
    )
    driver_hint = (
        "this back end drives PostgreSQL with psycopg 3; use postgresql:// or postgresql+psycopg://"
    )
    _driver_error = psycopg.Error
    _kind = "PostgreSQL"
    _param = "%b"
    _binary_type = "bytea"

    _conn: psycopg.Connection[Any]
    _cur: psycopg.Cursor[Any]
    _stream_chunk: int

    @classmethod
    def _open(cls, url: StorageURL, raw: str) -> SQLStorage:
        url.reject_unknown_options((*COMMON_OPTIONS, *_LIBPQ_OPTIONS))
        options = SQLOptions(url)
        try:
            sa_url = make_url(raw)
        except sqlalchemy.exc.ArgumentError:
            raise InvalidURLError(f"malformed PostgreSQL URL {url.raw!r}") from None
        sa_url = sa_url.difference_update_query(COMMON_OPTIONS).set(drivername="postgresql+psycopg")
        host = sa_url.host or sa_url.query.get("host") or "localhost"
        where = f"{host}:{sa_url.port or 5432}/{sa_url.database or ''}"
        self = cls()
        self._stream_chunk = CHUNK_ROWS if _CHUNKED_STREAMS else 1
        self._start(sqlalchemy.create_engine(sa_url, poolclass=NullPool), where, options)
        return self

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = True
        if self._sync is not None:
            conn.execute(f"SET synchronous_commit TO {'on' if self._sync else 'off'}")

    def _connect_error(self, exc: BaseException) -> StorageError:
        return StorageConnectionError(
            f"cannot connect to PostgreSQL at {self._where}: {exc}", original=exc
        )

    def _created_concurrently(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.DuplicateTable)

    def _lost(self, exc: BaseException) -> bool:
        return self._conn.closed

    def backend_pid(self) -> int:
        """Process id of the server backend serving this store's connection."""
        self._check_open()
        with self._lock:
            return self._conn.info.backend_pid

    def _executor(self, cur: psycopg.Cursor[Any]) -> Callable[[str, tuple[bytes, ...]], Any]:
        # Prepared on the server, with binary results.
        return functools.partial(cur.execute, prepare=True, binary=True)

    def _transaction(self) -> AbstractContextManager[object]:
        return self._conn.transaction()

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
