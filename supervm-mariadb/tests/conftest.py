"""Fixtures for the MariaDB back-end tests: the server and unique table names.

The server URL comes from ``SUPERVM_TEST_MARIADB_URL``. When the server cannot
be reached the MariaDB tests are skipped, except under ``CI=true``, where they
fail.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import pymysql
import pytest
from sqlalchemy.engine import make_url

DEFAULT_MARIADB_URL = "mariadb+pymysql://root@127.0.0.1:3306/test"

Admin: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.Cursor]"


def _base_url() -> str:
    return os.environ.get("SUPERVM_TEST_MARIADB_URL", DEFAULT_MARIADB_URL)


def connect_args(url: str, *, database: bool = True) -> dict[str, Any]:
    """PyMySQL ``connect`` arguments for the server a store URL names."""
    parsed = make_url(url)
    args: dict[str, Any] = {
        "host": parsed.host or "localhost",
        "port": parsed.port or 3306,
        "user": parsed.username,
        "password": parsed.password or "",
        "autocommit": True,
        "connect_timeout": 5,
    }
    if database:
        args["database"] = parsed.database
    return args


@functools.cache
def _server_problem() -> str | None:
    url = _base_url()
    try:
        with pymysql.connect(**connect_args(url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    except pymysql.Error as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = " ".join(str(exc).split())
        return f"MariaDB server {shown} is unreachable: {reason}"
    return None


@pytest.fixture
def mariadb_url() -> str:
    """Base URL of the test server; skips when it is unreachable, fails when ``CI=true``."""
    problem = _server_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: the MariaDB tests must not be skipped)")
        pytest.skip(f"{problem}; set SUPERVM_TEST_MARIADB_URL to run the MariaDB tests")
    return _base_url()


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
def connect(mariadb_url: str) -> Callable[[], Admin]:
    """Opens new autocommit PyMySQL connections to the test server's database."""
    return lambda: pymysql.connect(**connect_args(mariadb_url))


@pytest.fixture
def admin(mariadb_url: str) -> Iterator[Admin]:
    """A separate autocommit PyMySQL connection to the test server's database."""
    with pymysql.connect(**connect_args(mariadb_url)) as conn:
        yield conn


@pytest.fixture
def table_url(mariadb_url: str) -> Iterator[str]:
    """A server URL naming a fresh table, dropped after the test."""
    table = f"t_{uuid.uuid4().hex}"
    url = make_url(mariadb_url).update_query_dict({"table": table})
    yield url.render_as_string(hide_password=False)
    with pymysql.connect(**connect_args(mariadb_url)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")
