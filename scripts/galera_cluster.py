#!/usr/bin/env python3
"""A local MariaDB Galera cluster on loopback, for tests and measurements.

Every node is a ``mariadbd`` process listening on 127.0.0.1 only, with its own
data directory under one base directory that also holds the state file
(``galera-cluster.json``: pids, ports, directories), so that later commands,
from Python or from the command line, find the cluster again::

    python scripts/galera_cluster.py start --nodes 3 --base-dir /tmp/galera
    python scripts/galera_cluster.py status --base-dir /tmp/galera
    python scripts/galera_cluster.py kill 2 --base-dir /tmp/galera
    python scripts/galera_cluster.py restart 2 --base-dir /tmp/galera
    python scripts/galera_cluster.py stop --base-dir /tmp/galera [--remove]
    python scripts/galera_cluster.py bench --base-dir /tmp/galera-bench

    with Cluster.start(3, make_base_dir()) as cluster:
        cluster.urls()  # ['mariadb+pymysql://root@127.0.0.1:PORT/test', ...]

Nodes are numbered from 1. Processes are signalled only by the pid recorded in
the state file, and only after checking that the pid still runs ``mariadbd``
on this cluster's data directory: other MariaDB servers on the machine are
never touched. Run as root, the nodes run as the ``mysql`` user (rsync state
transfer fails under root), so the base directory and all its parents must be
traversable by ``mysql``: :func:`make_base_dir` makes a suitable one under /tmp.
Needs Debian's ``mariadb-server`` (10.11), ``galera-4`` and ``rsync``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import random
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pymysql

STATE_FILE = "galera-cluster.json"
HOST = "127.0.0.1"
SERVER_USER = "mysql"
DATABASE = "test"
#: Ports each node takes from its block: SQL, group communication, IST, SST.
PORTS_PER_NODE = 4
#: Distance between the port blocks of consecutive nodes when a base port is given.
PORT_STRIDE = 10
#: Where free port blocks are looked for: below Linux's ephemeral range (32768-60999),
#: so outgoing connections do not take them between the check and the bind.
PORT_RANGE = (20000, 32000)
GALERA_PROVIDERS = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
#: Failure detection in a few seconds instead of Galera's defaults (5 s suspect,
#: 15 s inactive): loopback does not lose packets, and a killed node should leave
#: the cluster quickly. gcache is smaller than the 128 MB default.
PROVIDER_TUNING = (
    "gcache.size=64M",
    "evs.keepalive_period=PT0.5S",
    "evs.inactive_check_period=PT0.5S",
    "evs.suspect_timeout=PT3S",
    "evs.inactive_timeout=PT6S",
    "evs.install_timeout=PT6S",
)
LOG_TAIL_LINES = 20
#: Seconds the watchdog grants nodes to shut down before SIGKILL: their data is
#: deleted anyway, and a node still joining ignores SIGTERM until its transfer ends.
WATCHDOG_GRACE = 5.0
#: The same when a start fails.
FAILED_START_GRACE = 10.0


class ClusterError(RuntimeError):
    """A cluster could not be started, reached, or brought to the wanted state."""


@dataclass
class Node:
    """One node: its ports, directory and, while it runs, its pid."""

    number: int
    host: str
    port: int
    gcomm_port: int
    ist_port: int
    sst_port: int
    dir: Path
    pid: int | None = None

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def socket(self) -> Path:
        return self.dir / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    @property
    def output_log(self) -> Path:
        """stdout and stderr of the process (normally empty: messages go to error_log)."""
        return self.dir / "output.log"

    def url(self, database: str = DATABASE) -> str:
        """SQLAlchemy URL for root without password over TCP."""
        return f"mariadb+pymysql://root@{self.host}:{self.port}/{database}"

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "host": self.host,
            "port": self.port,
            "gcomm_port": self.gcomm_port,
            "ist_port": self.ist_port,
            "sst_port": self.sst_port,
            "dir": str(self.dir),
            "datadir": str(self.datadir),
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            number=int(data["number"]),
            host=str(data["host"]),
            port=int(data["port"]),
            gcomm_port=int(data["gcomm_port"]),
            ist_port=int(data["ist_port"]),
            sst_port=int(data["sst_port"]),
            dir=Path(data["dir"]),
            pid=None if data.get("pid") is None else int(data["pid"]),
        )


@dataclass(frozen=True)
class NodeStatus:
    """What a node reported (or why it could not report)."""

    number: int
    pid: int | None
    port: int
    running: bool
    ready: bool = False
    state: str | None = None
    cluster_size: int | None = None
    cluster_status: str | None = None
    error: str | None = None

    def synced(self, size: int) -> bool:
        """Ready, Synced, in the primary component, and seeing ``size`` nodes."""
        return (
            self.running
            and self.ready
            and self.state == "Synced"
            and self.cluster_status == "Primary"
            and self.cluster_size == size
        )

    def describe(self) -> str:
        if not self.running:
            return f"node {self.number}: not running"
        if self.error is not None:
            return f"node {self.number} (pid {self.pid}, port {self.port}): {self.error}"
        return (
            f"node {self.number} (pid {self.pid}, port {self.port}): "
            f"ready={'ON' if self.ready else 'OFF'} state={self.state} "
            f"cluster_size={self.cluster_size} cluster_status={self.cluster_status}"
        )


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a cluster (empty when nothing is missing)."""
    missing = []
    if shutil.which("mariadbd", path=_sbin_path()) is None:
        missing.append("mariadbd (Debian package mariadb-server)")
    if shutil.which("mariadb-install-db", path=_sbin_path()) is None:
        missing.append("mariadb-install-db (Debian package mariadb-server)")
    if _galera_provider() is None:
        missing.append("libgalera_smm.so (Debian package galera-4)")
    if shutil.which("rsync") is None:
        missing.append("rsync (Debian package rsync)")
    if shutil.which("wsrep_sst_rsync", path=_sbin_path()) is None:
        missing.append("wsrep_sst_rsync (Debian package mariadb-server)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            missing.append(f"the {SERVER_USER!r} user (created by mariadb-server)")
    return missing


def make_base_dir(parent: str | Path = "/tmp") -> Path:
    """A new empty directory (mode 0755) under ``parent`` that the mysql user can traverse."""
    path = Path(tempfile.mkdtemp(prefix="supervm-galera-", dir=parent))
    path.chmod(0o755)
    return path


class Cluster:
    """A Galera cluster of local nodes, found through the state file in ``base_dir``."""

    def __init__(self, base_dir: Path, nodes: Sequence[Node]) -> None:
        self.base_dir = base_dir
        self._nodes = list(nodes)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------- construction

    @classmethod
    def start(
        cls,
        n: int = 3,
        base_dir: str | Path | None = None,
        *,
        base_port: int | None = None,
        timeout: float = 120.0,
        owner_pid: int | None = None,
    ) -> Cluster:
        """Create and start a new ``n``-node cluster; returns when every node is Synced.

        ``base_dir`` (default: a new one from :func:`make_base_dir`) must hold no
        earlier cluster. With ``base_port``, node ``i`` takes ports ``base_port +
        10 * (i - 1)`` to ``+ 3``; without, a free block is picked. On failure every
        started node is stopped and the error carries the tail of the failing
        node's error log. With ``owner_pid``, a watchdog process stops the cluster
        and deletes its directories as soon as that process exits, however it ends
        (even by SIGKILL); :meth:`stop` ends the watchdog.
        """
        if n < 1:
            raise ClusterError(f"a cluster needs at least one node, not {n}")
        missing = missing_prerequisites()
        if missing:
            raise ClusterError("cannot run a Galera cluster here; missing: " + ", ".join(missing))
        base = make_base_dir() if base_dir is None else Path(base_dir).resolve()
        base.mkdir(parents=True, exist_ok=True)
        _check_base_dir(base)
        if (base / STATE_FILE).exists():
            earlier = cls.load(base)
            pids = [str(node.pid) for node in earlier._nodes if earlier._alive(node)]
            if pids:
                raise ClusterError(f"a cluster already runs in {base} (pids {', '.join(pids)})")
            raise ClusterError(
                f"{base} holds a stopped cluster: remove it first (`stop --remove`) "
                "or choose another base directory"
            )
        taken = [base / f"node{i}" for i in range(1, n + 1) if (base / f"node{i}").exists()]
        if taken:
            raise ClusterError(f"{taken[0]} already exists: choose an empty base directory")
        ports = _allocate_ports(n, base_port)
        nodes = [Node(i + 1, HOST, *ports[i], dir=base / f"node{i + 1}") for i in range(n)]
        cluster = cls(base, nodes)
        try:
            cluster._save()
            if owner_pid is not None:
                cluster._start_watchdog(owner_pid)
            cluster._create(timeout)
        except BaseException:
            cluster.stop(FAILED_START_GRACE)
            raise
        return cluster

    @classmethod
    def load(cls, base_dir: str | Path) -> Cluster:
        """The cluster described by the state file in ``base_dir``."""
        path = Path(base_dir).resolve() / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {path.parent}: {STATE_FILE} is missing") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {path}: {exc}") from exc
        return cls(path.parent, [Node.from_json(node) for node in data["nodes"]])

    def reload(self) -> None:
        """Re-read the pids from the state file, after another process changed the cluster."""
        saved = {node.number: node.pid for node in Cluster.load(self.base_dir).nodes}
        for node in self._nodes:
            node.pid = saved.get(node.number)

    def _create(self, timeout: float) -> None:
        for node in self._nodes:
            node.dir.mkdir()
            node.datadir.mkdir()
            _chown_to_server_user(node.dir)
        first = self._nodes[0]
        self._install_db(first)
        self._spawn(first, bootstrap=True)
        # mariadb-install-db --skip-name-resolve made root@127.0.0.1: TCP polling works.
        self._wait(timeout, size=1, numbers=[1])
        self._grant_root(first)
        for node in self._nodes[1:]:
            self._spawn(node)
        self.wait_synced(timeout=timeout)

    def _install_db(self, node: Node) -> None:
        install_db = shutil.which("mariadb-install-db", path=_sbin_path())
        assert install_db is not None
        args = [
            install_db,
            "--no-defaults",
            f"--datadir={node.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if os.geteuid() == 0:
            args.append(f"--user={SERVER_USER}")
        proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ClusterError(
                f"mariadb-install-db failed ({proc.returncode}) for node {node.number}:\n"
                f"{_tail_text(proc.stdout + proc.stderr)}"
            )

    def _grant_root(self, node: Node) -> None:
        """root@127.0.0.1 and root@localhost without password, and database ``test``.

        Done through the socket on the first node before the others join, so they
        receive it with their state transfer.
        """
        conn = pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=5)
        try:
            with conn.cursor() as cur:
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}'")
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION")
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        finally:
            conn.close()

    # ----------------------------------------------------------------- access

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes; ``nodes[i - 1]`` is node ``i``."""
        return tuple(self._nodes)

    def node(self, number: int) -> Node:
        """Node ``number`` (from 1)."""
        if not 1 <= number <= len(self._nodes):
            raise ClusterError(f"no node {number}: the cluster has nodes 1 to {len(self._nodes)}")
        return self._nodes[number - 1]

    def urls(self, database: str = DATABASE) -> list[str]:
        """One SQLAlchemy URL per node, in node order."""
        return [node.url(database) for node in self._nodes]

    def connect(
        self, number: int, *, database: str = DATABASE, **kwargs: Any
    ) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection to node ``number`` as root over TCP (autocommit on)."""
        node = self.node(number)
        options: dict[str, Any] = {
            "host": node.host,
            "port": node.port,
            "user": "root",
            "database": database,
            "autocommit": True,
            "connect_timeout": 5,
        }
        options.update(kwargs)
        return pymysql.connect(**options)

    def running(self, number: int) -> bool:
        """Whether node ``number``'s recorded process is alive (and is that node)."""
        return self._alive(self.node(number))

    def status(self) -> list[NodeStatus]:
        """Each node's wsrep status, queried over TCP."""
        return [self._status(node) for node in self._nodes]

    def _status(self, node: Node) -> NodeStatus:
        if not self._alive(node):
            return NodeStatus(node.number, None, node.port, running=False)
        try:
            conn = pymysql.connect(
                host=node.host,
                port=node.port,
                user="root",
                connect_timeout=2,
                read_timeout=5,
            )
        except pymysql.Error as exc:
            return NodeStatus(node.number, node.pid, node.port, True, error=_oneline(exc))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', "
                    "'wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_status')"
                )
                values = {str(name): str(value) for name, value in cur.fetchall()}
        except pymysql.Error as exc:
            return NodeStatus(node.number, node.pid, node.port, True, error=_oneline(exc))
        finally:
            conn.close()
        size = values.get("wsrep_cluster_size")
        return NodeStatus(
            node.number,
            node.pid,
            node.port,
            running=True,
            ready=values.get("wsrep_ready") == "ON",
            state=values.get("wsrep_local_state_comment"),
            cluster_size=int(size) if size and size.isdigit() else None,
            cluster_status=values.get("wsrep_cluster_status"),
        )

    # ---------------------------------------------------------------- waiting

    def wait_synced(self, timeout: float = 120.0, size: int | None = None) -> None:
        """Wait until every running node is Synced and sees ``size`` nodes.

        ``size`` defaults to the number of running nodes. Raises
        :class:`ClusterError` (with each lagging node's status and error-log tail)
        on timeout or when a node's process exits.
        """
        numbers = [node.number for node in self._nodes if self._alive(node)]
        if not numbers:
            raise ClusterError("no node of the cluster is running")
        self._wait(timeout, size=len(numbers) if size is None else size, numbers=numbers)

    def _wait(self, timeout: float, *, size: int, numbers: Sequence[int]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            statuses = [self._status(self.node(number)) for number in numbers]
            for status in statuses:
                if not status.running:
                    node = self.node(status.number)
                    raise ClusterError(
                        f"node {node.number} exited while waiting for it to sync\n{_log_tail(node)}"
                    )
            lagging = [status for status in statuses if not status.synced(size)]
            if not lagging:
                return
            if time.monotonic() >= deadline:
                details = "\n".join(
                    f"{status.describe()}\n{_log_tail(self.node(status.number))}"
                    for status in lagging
                )
                raise ClusterError(
                    f"not every node was Synced with cluster size {size} after {timeout:g} s:\n"
                    f"{details}"
                )
            time.sleep(0.2)

    # ---------------------------------------------------------------- control

    def kill(self, number: int) -> None:
        """SIGKILL node ``number`` and wait until its process is gone."""
        node = self.node(number)
        if not self._alive(node):
            raise ClusterError(f"node {number} is not running")
        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)
        self._wait_exit([node], 30.0)
        node.pid = None
        self._save()

    def stop_node(self, number: int, timeout: float = 60.0) -> None:
        """Shut node ``number`` down cleanly (SIGTERM, SIGKILL after ``timeout``)."""
        node = self.node(number)
        if not self._alive(node):
            raise ClusterError(f"node {number} is not running")
        self._terminate([node], timeout)

    def restart(self, number: int, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Start stopped or killed node ``number`` again; it rejoins through IST or SST.

        First waits until the running nodes are Synced among themselves (a
        just-killed node has been evicted). After a kill the node's position is
        recovered from InnoDB (``--wsrep-recover``), as mysqld_safe does, so that
        it catches up by incremental state transfer. With ``wait``, returns once
        every running node is Synced with the node counted in.
        """
        node = self.node(number)
        if self._alive(node):
            raise ClusterError(f"node {number} is already running (pid {node.pid})")
        if not any(self._alive(other) for other in self._nodes if other is not node):
            raise ClusterError(
                f"node {number} has no running node to join: the whole cluster is down; "
                "start a new cluster"
            )
        _check_ports_free([node.port, node.gcomm_port, node.ist_port, node.sst_port])
        # A just-killed node rejoins faster once the others have evicted its old
        # incarnation (seconds, set by evs.suspect_timeout) than while they still wait on it.
        others = [other.number for other in self._nodes if self._alive(other)]
        self._wait(timeout, size=len(others), numbers=others)
        position = self._recover_position(node)
        self._spawn(node, start_position=position)
        if wait:
            self.wait_synced(timeout=timeout)

    def heal(self, timeout: float = 120.0) -> None:
        """Restart every node that is not running, then wait until all are Synced."""
        for node in self._nodes:
            if not self._alive(node):
                self.restart(node.number, wait=False, timeout=timeout)
        self.wait_synced(timeout=timeout, size=len(self._nodes))

    def stop(self, timeout: float = 60.0, *, remove: bool = False) -> None:
        """Shut every running node down (SIGTERM, then SIGKILL after ``timeout``).

        Idempotent. With ``remove``, the nodes' directories and the state file
        are deleted afterwards, and the base directory too if that empties it.
        """
        self._terminate([node for node in self._nodes if self._alive(node)], timeout)
        for node in self._nodes:
            node.pid = None
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait()
            self._watchdog = None
        if remove:
            for node in self._nodes:
                shutil.rmtree(node.dir, ignore_errors=True)
            (self.base_dir / STATE_FILE).unlink(missing_ok=True)
            (self.base_dir / "watchdog.log").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.base_dir.rmdir()  # only if that left it empty
        elif self.base_dir.exists():
            self._save()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ", ".join(str(node.port) for node in self._nodes)
        return f"Cluster({str(self.base_dir)!r}, ports=[{ports}])"

    # -------------------------------------------------------------- processes

    def _server_args(self, node: Node) -> list[str]:
        mariadbd = shutil.which("mariadbd", path=_sbin_path())
        provider = _galera_provider()
        assert mariadbd is not None and provider is not None
        members = ",".join(f"{other.host}:{other.gcomm_port}" for other in self._nodes)
        provider_options = ";".join(
            (
                f"gmcast.listen_addr=tcp://{node.host}:{node.gcomm_port}",
                f"ist.recv_addr={node.host}:{node.ist_port}",
                f"base_port={node.gcomm_port}",
                *PROVIDER_TUNING,
            )
        )
        args = [
            mariadbd,
            "--no-defaults",  # must come first
            f"--datadir={node.datadir}",
            f"--port={node.port}",
            f"--socket={node.socket}",
            f"--pid-file={node.dir / 'mysqld.pid'}",
            f"--log-error={node.error_log}",
            f"--bind-address={node.host}",
            "--skip-name-resolve",
            "--wsrep-on=ON",
            f"--wsrep-provider={provider}",
            "--wsrep-cluster-name=supervm-test",
            f"--wsrep-node-name=node{node.number}",
            f"--wsrep-cluster-address=gcomm://{members}",
            f"--wsrep-provider-options={provider_options}",
            "--wsrep-sst-method=rsync",
            f"--wsrep-sst-receive-address={node.host}:{node.sst_port}",
            f"--wsrep-node-address={node.host}",
            f"--wsrep-node-incoming-address={node.host}:{node.port}",
            "--binlog-format=ROW",
            "--innodb-autoinc-lock-mode=2",
            "--default-storage-engine=InnoDB",
            "--innodb-buffer-pool-size=128M",
            "--innodb-log-file-size=48M",
            "--performance-schema=OFF",
        ]
        if os.geteuid() == 0:
            args.insert(2, f"--user={SERVER_USER}")
        return args

    def _spawn(
        self, node: Node, *, bootstrap: bool = False, start_position: str | None = None
    ) -> None:
        args = self._server_args(node)
        if bootstrap:
            args.append("--wsrep-new-cluster")
        if start_position is not None:
            args.append(f"--wsrep-start-position={start_position}")
        with node.output_log.open("ab") as output:
            child = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the caller's process group: no stray ^C
                close_fds=True,
            )
        node.pid = child.pid
        self._children[child.pid] = child
        self._save()

    def _start_watchdog(self, owner_pid: int) -> None:
        """A detached ``watch`` process that stops the cluster once ``owner_pid`` exits."""
        log = (self.base_dir / "watchdog.log").open("ab")
        with log:
            self._watchdog = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "watch",
                    "--base-dir",
                    str(self.base_dir),
                    "--pid",
                    str(owner_pid),
                    "--timeout",
                    str(WATCHDOG_GRACE),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives a ^C or SIGKILL of the owner's group
                close_fds=True,
            )

    def _recover_position(self, node: Node) -> str | None:
        """The node's last committed position ``uuid:seqno`` when grastate.dat lacks it."""
        grastate = node.datadir / "grastate.dat"
        try:
            text = grastate.read_text()
        except OSError:
            return None
        if not re.search(r"^seqno:\s*-1\s*$", text, re.MULTILINE):
            return None  # a clean shutdown wrote the position
        recover_log = node.dir / "recover.log"
        recover_log.unlink(missing_ok=True)
        args = [arg for arg in self._server_args(node) if not arg.startswith("--log-error=")]
        args += [f"--log-error={recover_log}", "--wsrep-recover"]
        try:
            subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"wsrep recovery of node {node.number} timed out") from exc
        try:
            log = recover_log.read_text(errors="replace")
        except OSError:
            return None
        found = re.findall(r"WSREP: Recovered position: ([0-9a-f-]{36}:-?\d+)", log)
        if not found or found[-1].endswith(":-1"):
            return None  # unknown position: the node will take a full state transfer
        return str(found[-1])

    def _alive(self, node: Node) -> bool:
        if node.pid is None:
            return False
        child = self._children.get(node.pid)
        if child is not None:
            return child.poll() is None
        return _pid_runs_node(node.pid, node)

    def _terminate(self, nodes: Sequence[Node], timeout: float) -> None:
        for node in nodes:
            if node.pid is not None and self._alive(node):
                os.kill(node.pid, signal.SIGTERM)
        left = self._wait_exit(nodes, timeout)
        for node in left:
            if node.pid is not None and self._alive(node):
                os.kill(node.pid, signal.SIGKILL)
        self._wait_exit(left, 30.0)
        for node in nodes:
            node.pid = None
        if self.base_dir.exists():
            self._save()

    def _wait_exit(self, nodes: Sequence[Node], timeout: float) -> list[Node]:
        """Wait up to ``timeout`` for the nodes' processes to exit; returns those still alive."""
        deadline = time.monotonic() + timeout
        left = [node for node in nodes if self._alive(node)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [node for node in left if self._alive(node)]
        for node in nodes:
            if node.pid is not None and node not in left:
                self._children.pop(node.pid, None)
        return left

    def _save(self) -> None:
        data = {
            "format": 1,
            "nodes": [node.to_json() for node in self._nodes],
            "urls": self.urls(),
        }
        path = self.base_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)


# ------------------------------------------------------------------ helpers


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def _galera_provider() -> str | None:
    return next((path for path in GALERA_PROVIDERS if Path(path).is_file()), None)


def _pid_runs_node(pid: int, node: Node) -> bool:
    """Whether ``pid`` is a live (not zombie) mariadbd serving ``node``'s data directory."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat_line.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return f"--datadir={node.datadir}".encode() in cmdline and any(
        Path(os.fsdecode(arg)).name == "mariadbd" for arg in cmdline[:1]
    )


def _port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _check_ports_free(ports: Sequence[int]) -> None:
    busy = [port for port in ports if not _port_free(port)]
    if busy:
        raise ClusterError(f"port(s) {', '.join(map(str, busy))} on {HOST} are already in use")


def _node_ports(base: int, n: int) -> list[tuple[int, int, int, int]]:
    return [
        tuple(base + PORT_STRIDE * i + k for k in range(PORTS_PER_NODE))  # type: ignore[misc]
        for i in range(n)
    ]


def _allocate_ports(n: int, base_port: int | None) -> list[tuple[int, int, int, int]]:
    if base_port is not None:
        if not 1024 <= base_port <= 65535 - PORT_STRIDE * n:
            raise ClusterError(f"base port {base_port} is out of range")
        blocks = _node_ports(base_port, n)
        _check_ports_free([port for block in blocks for port in block])
        return blocks
    low, high = PORT_RANGE
    for _ in range(200):
        base = random.randrange(low, high - PORT_STRIDE * n, PORT_STRIDE)
        blocks = _node_ports(base, n)
        if all(_port_free(port) for block in blocks for port in block):
            return blocks
    raise ClusterError(f"no free block of {PORT_STRIDE * n} ports found in {low}-{high}")


def _check_base_dir(base: Path) -> None:
    """The mysql user must reach the data directories through every parent."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(SERVER_USER)
    for path in [base, *base.parents]:
        info = path.stat()
        mode = info.st_mode
        if (
            (info.st_uid == user.pw_uid and mode & stat.S_IXUSR)
            or (info.st_gid == user.pw_gid and mode & stat.S_IXGRP)
            or mode & stat.S_IXOTH
        ):
            continue
        raise ClusterError(
            f"{path} (mode {stat.S_IMODE(mode):04o}) cannot be traversed by the "
            f"{SERVER_USER} user that runs the nodes; use a base directory whose parents "
            "are all world-traversable, e.g. `mktemp -d /tmp/galera-XXXX && chmod 755` it"
        )


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(SERVER_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def _tail_text(text: str, lines: int = LOG_TAIL_LINES, width: int = 300) -> str:
    """The last ``lines`` lines of ``text``, each cut to ``width`` characters."""
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[:width] + " [...]" for line in tail)


def _log_tail(node: Node, lines: int = LOG_TAIL_LINES) -> str:
    """The end of the node's error log (of its stdout and stderr when the log is empty)."""
    for path in (node.error_log, node.output_log):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            return f"--- last lines of {path}\n{_tail_text(text, lines)}"
    return f"--- {node.error_log}: empty or missing"


def watch(
    base_dir: Path, pid: int, timeout: float = WATCHDOG_GRACE, *, remove: bool = True
) -> None:
    """Wait until process ``pid`` has exited, then stop (and remove) the cluster in ``base_dir``."""
    _wait_for_exit(pid)
    if (base_dir / STATE_FILE).exists():
        Cluster.load(base_dir).stop(timeout, remove=remove)


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # immune to pid reuse
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (Linux < 5.3): poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(0.5)
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# -------------------------------------------------------------- measurements


def bench(
    base_dir: Path,
    *,
    nodes: int = 3,
    base_port: int | None = None,
    rows: int = 1000,
    keep: bool = False,
) -> dict[str, float | int | str]:
    """Start a cluster in ``base_dir``, measure it, stop it; returns the figures.

    Measured: start time; ``rows`` single-row autocommit inserts through node 1
    (after 100 unmeasured ones);
    one ``rows``-row transaction (insert time and COMMIT latency); causal reads
    (``wsrep_sync_wait=1``) from node 2; with 3 or more nodes, how long the
    others take to drop a killed node 2 and how long it takes to rejoin. The node
    directories are removed afterwards unless ``keep``.
    """
    figures: dict[str, float | int | str] = {"nodes": nodes, "rows": rows}
    started = time.perf_counter()
    cluster = Cluster.start(nodes, base_dir, base_port=base_port)
    figures["start_s"] = time.perf_counter() - started
    try:
        conn = cluster.connect(1)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE bench (id INT PRIMARY KEY, v VARBINARY(64)) ENGINE=InnoDB")
            for i in range(100):  # warm-up, not measured
                cur.execute("INSERT INTO bench VALUES (%s, %s)", (-1 - i, b"w"))
            t0 = time.perf_counter()
            for i in range(rows):
                cur.execute("INSERT INTO bench VALUES (%s, %s)", (i, b"x" * 32))
            elapsed = time.perf_counter() - t0
            figures["autocommit_inserts_per_s"] = rows / elapsed
            figures["autocommit_insert_ms"] = 1000 * elapsed / rows

            conn.begin()
            t0 = time.perf_counter()
            cur.executemany(
                "INSERT INTO bench VALUES (%s, %s)",
                [(rows + i, b"y" * 32) for i in range(rows)],
            )
            t1 = time.perf_counter()
            conn.commit()
            t2 = time.perf_counter()
            figures["batch_insert_ms"] = 1000 * (t1 - t0)
            figures["batch_commit_ms"] = 1000 * (t2 - t1)
        conn.close()

        if nodes >= 2:
            reader = cluster.connect(2)
            with reader.cursor() as cur:
                cur.execute("SET SESSION wsrep_sync_wait = 1")
                t0 = time.perf_counter()
                for i in range(rows):
                    cur.execute("SELECT v FROM bench WHERE id = %s", (i,))
                    cur.fetchone()
                figures["causal_reads_per_s_node2"] = rows / (time.perf_counter() - t0)
            reader.close()

        if nodes >= 3:
            t0 = time.perf_counter()
            cluster.kill(2)
            cluster.wait_synced(size=nodes - 1)
            figures["kill_detected_s"] = time.perf_counter() - t0
            conn = cluster.connect(1)
            with conn.cursor() as cur:
                for i in range(100):
                    cur.execute("INSERT INTO bench VALUES (%s, %s)", (2 * rows + i, b"z"))
            conn.close()
            t0 = time.perf_counter()
            cluster.restart(2)
            figures["rejoin_s"] = time.perf_counter() - t0
            figures["rejoin_transfer"] = _last_transfer(cluster.node(2))
    finally:
        t0 = time.perf_counter()
        cluster.stop(remove=not keep)
        figures["stop_s"] = time.perf_counter() - t0
    return figures


def _last_transfer(node: Node) -> str:
    """How the node caught up when it last started: "IST", "SST" or "none"."""
    try:
        log = node.error_log.read_text(errors="replace")
    except OSError:
        return "unknown"
    last_start = log.rfind("Starting MariaDB")
    recent = log[last_start:] if last_start >= 0 else log
    if "rsync SST completed on joiner" in recent:
        return "SST"
    if "rsync IST completed on joiner" in recent or "IST received" in recent:
        return "IST"
    if "State transfer required" not in recent:
        return "none"
    return "unknown"


# ----------------------------------------------------------------------- CLI


def _print_status(cluster: Cluster, as_json: bool) -> bool:
    statuses = cluster.status()
    size = len(cluster.nodes)
    healthy = all(status.synced(size) for status in statuses)
    if as_json:
        print(
            json.dumps(
                {
                    "base_dir": str(cluster.base_dir),
                    "healthy": healthy,
                    "nodes": [
                        {**node.to_json(), "url": node.url(), **status.__dict__}
                        for node, status in zip(cluster.nodes, statuses, strict=True)
                    ],
                },
                indent=2,
            )
        )
    else:
        for node, status in zip(cluster.nodes, statuses, strict=True):
            print(f"{status.describe()}  {node.url()}")
    return healthy


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-dir",
        required=True,
        type=Path,
        help="directory of the cluster (state file, node directories)",
    )
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    parser = argparse.ArgumentParser(
        prog="galera_cluster.py", description="A local MariaDB Galera cluster on 127.0.0.1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", parents=[common], help="create and start a new cluster")
    start.add_argument("--nodes", type=int, default=3)
    start.add_argument("--base-port", type=int, help="first port (default: a free block)")
    start.add_argument("--json", action="store_true")
    status = sub.add_parser(
        "status", parents=[common], help="each node's state; exit 1 unless all are Synced"
    )
    status.add_argument("--json", action="store_true")
    stop = sub.add_parser("stop", parents=[common], help="shut every node down (idempotent)")
    stop.add_argument("--remove", action="store_true", help="then delete the node directories")
    kill = sub.add_parser("kill", parents=[common], help="SIGKILL one node")
    kill.add_argument("node", type=int)
    restart = sub.add_parser("restart", parents=[common], help="start a stopped node again")
    restart.add_argument("node", type=int)
    watch_cmd = sub.add_parser(
        "watch", parents=[common], help="stop the cluster once process PID has exited"
    )
    watch_cmd.add_argument("--pid", type=int, required=True)
    watch_cmd.add_argument("--keep", action="store_true", help="keep the node directories")
    bench_cmd = sub.add_parser(
        "bench", parents=[common], help="start a cluster, measure it, stop it"
    )
    bench_cmd.add_argument("--nodes", type=int, default=3)
    bench_cmd.add_argument("--base-port", type=int)
    bench_cmd.add_argument("--rows", type=int, default=1000)
    bench_cmd.add_argument("--json", action="store_true")
    bench_cmd.add_argument("--keep", action="store_true", help="keep the node directories")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "start":
            t0 = time.perf_counter()
            cluster = Cluster.start(
                args.nodes, args.base_dir, base_port=args.base_port, timeout=args.timeout
            )
            if not args.json:
                print(f"started {args.nodes} nodes in {time.perf_counter() - t0:.1f} s")
            _print_status(cluster, args.json)
        elif args.command == "status":
            return 0 if _print_status(Cluster.load(args.base_dir), args.json) else 1
        elif args.command == "stop":
            base = args.base_dir
            if (base / STATE_FILE).exists():
                Cluster.load(base).stop(args.timeout, remove=args.remove)
            print(f"stopped the cluster in {base}")
        elif args.command == "kill":
            Cluster.load(args.base_dir).kill(args.node)
            print(f"killed node {args.node}")
        elif args.command == "restart":
            t0 = time.perf_counter()
            cluster = Cluster.load(args.base_dir)
            cluster.restart(args.node, timeout=args.timeout)
            print(f"node {args.node} rejoined in {time.perf_counter() - t0:.1f} s")
        elif args.command == "watch":
            watch(args.base_dir.resolve(), args.pid, args.timeout, remove=not args.keep)
        elif args.command == "bench":
            figures = bench(
                args.base_dir,
                nodes=args.nodes,
                base_port=args.base_port,
                rows=args.rows,
                keep=args.keep,
            )
            if args.json:
                print(json.dumps(figures, indent=2))
            else:
                for key, value in figures.items():
                    shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
                    print(f"{key:28} {shown}")
    except (ClusterError, pymysql.Error, OSError) as exc:
        print(f"galera_cluster: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
