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
FILE_BACKENDS = ["rocksdb", "leveldb", "lmdb", "sqlite"]
ALL_BACKENDS = ["memory", *FILE_BACKENDS, "postgresql"]


def postgres_reachable() -> bool:
    try:
        store = supervm.open_storage(f"{PG_URL}?table=t_probe_{uuid.uuid4().hex[:8]}")
    except supervm.StorageError:
        return False
    store.drop()  # type: ignore[attr-defined]
    store.close()
    return True


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable, except under CI, where that is a failure."""
    if postgres_reachable():
        return
    message = f"PostgreSQL not reachable at {PG_URL} (set SUPERVM_TEST_POSTGRES_URL)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def url_for(backend: str, workdir: Path) -> str:
    """A URL for a fresh, empty store of ``backend`` under ``workdir``."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{workdir}/state.sqlite"
    if backend == "postgresql":
        return f"{PG_URL}?table=t_{uuid.uuid4().hex[:16]}"
    return f"{backend}://{workdir}/{backend}"


@contextmanager
def fresh_store(backend: str, workdir: Path) -> Iterator[Storage]:
    """Open a fresh store; PostgreSQL tables are dropped afterwards."""
    if backend == "postgresql":
        require_postgres()
    workdir.mkdir(parents=True, exist_ok=True)
    store = supervm.open_storage(url_for(backend, workdir))
    try:
        yield store
    finally:
        if backend == "postgresql" and not store.closed:
            store.drop()  # type: ignore[attr-defined]
        store.close()
