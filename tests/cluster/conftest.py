"""A 3-node MariaDB Galera cluster on loopback, shared by the tests in this folder.

The cluster is started once per test session by ``scripts/galera_cluster.py`` in
a fresh mode-0755 directory under /tmp (pytest's own tmp_path sits under a
mode-0700 directory that the ``mysql`` user running the nodes cannot enter),
and stopped, its directory removed, by a finalizer when the session ends,
whether the tests passed or not; a watchdog process does the same if pytest is
killed. Without MariaDB and Galera installed the tests
are skipped with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

ROOT = Path(__file__).resolve().parents[2]
# galera_cluster is a script, not an installed package.
sys.path.insert(0, str(ROOT / "scripts"))

if TYPE_CHECKING:
    from galera_cluster import Cluster

NODES = 3
INSTALL_HINT = "apt-get install mariadb-server galera-4 rsync"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the cluster tests must not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def galera_session(request: pytest.FixtureRequest) -> Cluster:
    """The session's cluster, started on first use and stopped when the session ends."""
    if importlib.util.find_spec("pymysql") is None:
        _unavailable("PyMySQL is not installed (it is a dev dependency: uv sync)")
    import galera_cluster

    missing = galera_cluster.missing_prerequisites()
    if missing:
        _unavailable(
            f"MariaDB Galera is not installed: missing {', '.join(missing)}; {INSTALL_HINT}"
        )
    base = galera_cluster.make_base_dir()
    started: list[Cluster] = []

    def finish() -> None:
        for cluster in started:
            cluster.stop(remove=True)
        started.clear()
        shutil.rmtree(base, ignore_errors=True)

    request.addfinalizer(finish)
    atexit.register(finish)  # also when the session is interrupted before teardown
    # And should pytest itself be killed, the watchdog stops the nodes.
    started.append(galera_cluster.Cluster.start(NODES, base, owner_pid=os.getpid()))
    return started[0]


@pytest.fixture
def galera(galera_session: Cluster) -> Iterator[Cluster]:
    """The session's cluster with every node running and Synced, before and after the test."""
    galera_session.heal()
    yield galera_session
    galera_session.heal()
