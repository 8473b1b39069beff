"""Fixtures for the SQL back-end tests: the PostgreSQL server and unique table names.

The server URL comes from ``SUPERVM_TEST_POSTGRES_URL``. When the server cannot
be reached the PostgreSQL tests are skipped, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _base_url() -> str:
    return os.environ.get("SUPERVM_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _libpq_url(url: str) -> str:
    parsed = make_url(url).difference_update_query(["table", "retries", "sync"])
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def _server_problem() -> str | None:
    url = _base_url()
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = " ".join(str(exc).split())
        return f"PostgreSQL server {shown} is unreachable: {reason}"
    return None


@pytest.fixture
def postgres_url() -> str:
    """Base URL of the test server; skips when it is unreachable, fails when ``CI=true``."""
    problem = _server_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: the PostgreSQL tests must not be skipped)")
        pytest.skip(f"{problem}; set SUPERVM_TEST_POSTGRES_URL to run the PostgreSQL tests")
    return _base_url()


@pytest.fixture
def libpq_url() -> Callable[[str], str]:
    """Turns a store URL into a libpq URI for ``psycopg.connect``."""
    return _libpq_url


@pytest.fixture
def unique_table() -> Callable[[], str]:
    """Makes fresh table names (``t_<hex>``)."""
    return lambda: f"t_{uuid.uuid4().hex}"


@pytest.fixture
def with_options() -> Callable[..., str]:
    """Adds query options to a URL."""

    def add(url: str, **options: str) -> str:
        return make_url(url).update_query_dict(options).render_as_string(hide_password=False)

    return add


@pytest.fixture
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A separate autocommit psycopg connection to the test server."""
    with psycopg.connect(_libpq_url(postgres_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def table_url(postgres_url: str) -> Iterator[str]:
    """A server URL naming a fresh table, dropped after the test."""
    table = f"t_{uuid.uuid4().hex}"
    url = make_url(postgres_url).update_query_dict({"table": table})
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(_libpq_url(postgres_url), autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
