"""The local Galera cluster behaves as the MariaDB back end will rely on.

Plain PyMySQL against the session's 3-node cluster: replication with causal
reads, losing and regaining a node, write conflicts between nodes, and the
command line of scripts/galera_cluster.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI", "").lower() != "true":
    pytest.importorskip("pymysql", reason="PyMySQL is not installed (a dev dependency)")
import pymysql
from galera_cluster import Cluster, make_base_dir
from pymysql.connections import Connection

pytestmark = pytest.mark.cluster

DEADLOCK = 1213
REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "scripts" / "galera_cluster.py")]


@pytest.fixture
def table(galera: Cluster) -> Iterator[str]:
    """A fresh table ``(id INT PRIMARY KEY, v VARCHAR(64))``, created through node 1."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    yield name
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


def causal(cluster: Cluster, node: int, **kwargs: Any) -> Connection[Any]:
    """A connection to ``node`` whose reads wait until it has applied every earlier commit."""
    conn = cluster.connect(node, **kwargs)
    with conn.cursor() as cur:
        cur.execute("SET SESSION wsrep_sync_wait = 1")
    return conn


def rows(conn: Connection[Any], table: str) -> dict[int, str]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
        return {int(key): str(value) for key, value in cur.fetchall()}


def cluster_size(conn: Connection[Any]) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'")
        return int(cur.fetchone()[1])


def test_a_row_written_on_node_1_is_read_on_nodes_2_and_3(galera: Cluster, table: str) -> None:
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
    for node in (2, 3):
        with causal(galera, node) as conn:
            assert rows(conn, table) == {1: "one", 2: "two"}
            assert cluster_size(conn) == 3


def test_a_killed_node_rejoins_and_serves_what_was_written_meanwhile(
    galera: Cluster, table: str
) -> None:
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, 'before')")
    killed_pid = galera.node(2).pid
    galera.kill(2)
    assert not galera.running(2)
    assert killed_pid is not None and not os.path.exists(f"/proc/{killed_pid}/cmdline")

    # Writes on the surviving nodes go on (they may wait until node 2 is evicted).
    for node, key in ((1, 2), (3, 3)):
        with galera.connect(node, read_timeout=60) as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (key, f"while down, node {node}"))
    galera.wait_synced(size=2)
    for node in (1, 3):
        with causal(galera, node) as conn:
            assert cluster_size(conn) == 2
            assert len(rows(conn, table)) == 3
    with pytest.raises(pymysql.err.OperationalError):
        galera.connect(2, connect_timeout=2)

    galera.restart(2)
    assert galera.running(2)
    with causal(galera, 2) as conn:
        assert cluster_size(conn) == 3
        assert rows(conn, table) == {
            1: "before",
            2: "while down, node 1",
            3: "while down, node 3",
        }
    with galera.connect(2) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (4, 'after')")
    with causal(galera, 1) as conn:
        assert rows(conn, table)[4] == "after"


def test_concurrent_updates_of_one_row_on_two_nodes_one_commits_one_gets_1213(
    galera: Cluster, table: str
) -> None:
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, 'initial')")
    sessions = {f"node {n}": causal(galera, n, autocommit=False) for n in (1, 2)}
    for name, conn in sessions.items():
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (f"by {name}",))

    barrier = threading.Barrier(len(sessions))
    outcome: dict[str, object] = {}

    def commit(name: str, conn: Connection[Any]) -> None:
        barrier.wait()
        try:
            conn.commit()
            outcome[name] = "committed"
        except pymysql.err.OperationalError as exc:
            outcome[name] = exc.args[0]

    threads = [threading.Thread(target=commit, args=item) for item in sessions.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for conn in sessions.values():
        conn.close()

    assert sorted(map(str, outcome.values())) == [str(DEADLOCK), "committed"], outcome
    (winner,) = [name for name, result in outcome.items() if result == "committed"]
    for node in (1, 2, 3):
        with causal(galera, node) as conn:
            assert rows(conn, table) == {1: f"by {winner}"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCRIPT, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_the_command_line_finds_the_cluster_through_its_state_file(galera: Cluster) -> None:
    base = str(galera.base_dir)
    status = run_cli("status", "--json", "--base-dir", base)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert [node["url"] for node in report["nodes"]] == galera.urls()
    assert {node["cluster_size"] for node in report["nodes"]} == {3}

    killed = run_cli("kill", "3", "--base-dir", base)
    assert killed.returncode == 0, killed.stderr
    galera.reload()
    assert not galera.running(3)
    assert run_cli("status", "--base-dir", base).returncode == 1  # not every node is Synced
    again = run_cli("kill", "3", "--base-dir", base)
    assert again.returncode == 1
    assert "node 3 is not running" in again.stderr
    unknown = run_cli("restart", "9", "--base-dir", base)
    assert unknown.returncode == 1
    assert "no node 9" in unknown.stderr

    restarted = run_cli("restart", "3", "--base-dir", base)
    assert restarted.returncode == 0, restarted.stderr
    assert "rejoined" in restarted.stdout
    galera.reload()
    assert galera.running(3)
    galera.wait_synced(size=3)


def test_the_command_line_fails_clearly(tmp_path: Path) -> None:
    missing = run_cli("status", "--base-dir", str(tmp_path))
    assert missing.returncode == 1
    assert "no cluster in" in missing.stderr
    assert run_cli("stop", "--base-dir", str(tmp_path)).returncode == 0  # nothing to stop
    bad = run_cli("kill", "9", "--base-dir", str(tmp_path))
    assert bad.returncode == 1


def test_a_one_node_cluster_stops_cleanly_and_stop_is_idempotent(
    galera_session: Cluster,
) -> None:
    """A separate cluster gets its own ports; a clean stop records the position."""
    base = make_base_dir()
    cluster = Cluster.start(1, base, owner_pid=os.getpid())
    try:
        assert {node.port for node in cluster.nodes}.isdisjoint(
            node.port for node in galera_session.nodes
        )
        (node,) = cluster.nodes
        assert cluster.urls() == [f"mariadb+pymysql://root@127.0.0.1:{node.port}/test"]
        with cluster.connect(1) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE one (id INT PRIMARY KEY)")
            cur.execute("INSERT INTO one VALUES (1)")
        pid = node.pid
        assert pid is not None
        cluster.stop()
        assert not os.path.exists(f"/proc/{pid}/cmdline")
        assert "seqno:   -1" not in (node.datadir / "grastate.dat").read_text()
        saved = json.loads((base / "galera-cluster.json").read_text())
        assert [entry["pid"] for entry in saved["nodes"]] == [None]
        cluster.stop()  # idempotent
        Cluster.load(base).stop()
    finally:
        cluster.stop(remove=True)
    assert not base.exists()
