"""Every first-party back end as a URL factory, for cross-package tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import supervm
from supervm.storage import Storage

PG_URL = os.environ.get(
    "SUPERVM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "SUPERVM_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test"
)
FILE_BACKENDS = ["rocksdb", "leveldb", "lmdb", "sqlite"]
#: Back ends on a database server: the server URL and the variable that names it.
SERVER_BACKENDS = {
    "postgresql": (PG_URL, "SUPERVM_TEST_POSTGRES_URL"),
    "mariadb": (MARIADB_URL, "SUPERVM_TEST_MARIADB_URL"),
}
ALL_BACKENDS = ["memory", *FILE_BACKENDS, *SERVER_BACKENDS]


def with_table(url: str, table: str | None = None) -> str:
    """``url`` naming ``table`` (a fresh ``t_<hex>`` name by default)."""
    table = table or f"t_{uuid.uuid4().hex[:16]}"
    return f"{url}{'&' if '?' in url else '?'}table={table}"


def server_reachable(backend: str) -> bool:
    try:
        store = supervm.open_storage(with_table(SERVER_BACKENDS[backend][0]))
    except supervm.StorageError:
        return False
    store.drop()  # type: ignore[attr-defined]
    store.close()
    return True


def require_server(backend: str) -> None:
    """Skip when the back end's server is unreachable, except under CI, where that fails."""
    if server_reachable(backend):
        return
    url, variable = SERVER_BACKENDS[backend]
    message = f"{backend} server not reachable at {url} (set {variable})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable, except under CI, where that is a failure."""
    require_server("postgresql")


def url_for(backend: str, workdir: Path) -> str:
    """A URL for a fresh, empty store of ``backend`` under ``workdir``."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{workdir}/state.sqlite"
    if backend in SERVER_BACKENDS:
        return with_table(SERVER_BACKENDS[backend][0])
    return f"{backend}://{workdir}/{backend}"


@contextmanager
def fresh_store(backend: str, workdir: Path) -> Iterator[Storage]:
    """Open a fresh store; tables on a server are dropped afterwards."""
    if backend in SERVER_BACKENDS:
        require_server(backend)
    workdir.mkdir(parents=True, exist_ok=True)
    store = supervm.open_storage(url_for(backend, workdir))
    try:
        yield store
    finally:
        if backend in SERVER_BACKENDS and not store.closed:
            store.drop()  # type: ignore[attr-defined]
        store.close()
