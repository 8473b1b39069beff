"""A chain of deterministic token blocks, its independent replay, and the crash checks.

Shared by the kill -9 tests of single stores (``test_crash_recovery.py``) and of
the Galera cluster (``cluster/test_galera_store.py``): :class:`Worker` runs
``crash_worker.py`` and reads its ACKs, :class:`Replay` rebuilds the same chain
on a memory store, and :func:`check_store` asserts that a store holds exactly
the replay's state at some height no lower than the last acknowledged block.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy

import supervm
from supervm.chain import GENESIS, Chain
from supervm.layout import STATE_PREFIX, in_state_tree
from supervm.storage import Storage
from supervm.tree.rebuild import root_of

from .backends import MARIADB_URL, PG_URL, url_for, with_table
from .crash_worker import TOKEN, build_block

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "crash_worker.py"
#: Longest the worker may stay silent before the test gives up on it (a hang, not a timing check).
STALL_SECONDS = 120.0


class Replay:
    """The same chain, rebuilt block by block on a memory store in this process."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.store = supervm.open_storage("memory://")
        self.chain = Chain(self.store, threads=1)
        self.token = TOKEN
        self.height = 0

    def extend_to(self, height: int) -> None:
        while self.height < height:
            block = build_block(self.token, self.seed, self.height + 1)
            self.chain.apply(block, mode="sequential")
            self.height += 1

    def block_hash(self, height: int) -> bytes:
        header = self.chain.header(height)
        assert header is not None
        return header.hash


class Worker:
    """One run of ``crash_worker.py``, its stdout read by a thread."""

    def __init__(self, url: str, start: int, seed: int, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(start), "0", str(seed)],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, text=True,
        )  # fmt: skip
        self._lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.acks: dict[int, bytes] = {}
        #: When each ACK line was read here (``time.perf_counter()``).
        self.ack_times: dict[int, float] = {}
        self.executed: list[int] = []
        #: Seconds from each EXECUTED line to the block's ACK line, as read here.
        self.commit_gaps: list[float] = []
        self._executed_at = 0.0
        self.last_event = ""
        self.eof = False
        self.killed = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put((time.perf_counter(), line))
        self._lines.put((time.perf_counter(), None))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def _take(self, item: tuple[float, str | None]) -> None:
        at, line = item
        if line is None:
            self.eof = True
            return
        words = line.split()
        if words[0] == "ACK":
            height = int(words[1])
            assert height not in self.acks, f"block {height} acknowledged twice"
            self.acks[height] = bytes.fromhex(words[2])
            self.ack_times[height] = at
            if self.executed and self.executed[-1] == height:
                self.commit_gaps.append(at - self._executed_at)
        elif words[0] == "EXECUTED":
            self.executed.append(int(words[1]))
            self._executed_at = at
        elif words[0] != "READY":
            pytest.fail(f"unexpected worker output {line!r}")
        self.last_event = words[0]

    def next_event(self) -> str:
        """Consume one line; fail if the worker ended or stalled."""
        try:
            item = self._lines.get(timeout=STALL_SECONDS)
        except queue.Empty:
            pytest.fail(f"worker printed nothing for {STALL_SECONDS:.0f} s\n{self.stderr()}")
        self._take(item)
        if self.eof:
            self.proc.wait()
            pytest.fail(f"worker exited by itself ({self.proc.returncode})\n{self.stderr()}")
        return self.last_event

    def wait_for(self, event: str, count: int) -> None:
        seen = 0
        deadline = time.monotonic() + STALL_SECONDS
        while seen < count:
            if self.next_event() == event:
                seen += 1
            elif time.monotonic() > deadline:
                pytest.fail(f"no {event} from the worker in {STALL_SECONDS:.0f} s")

    def kill(self) -> None:
        """SIGKILL the worker (if still running), reap it and read what it printed."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed = True
        self.proc.wait()
        while not self.eof:
            self._take(self._lines.get())
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


@dataclass
class Tally:
    kills: int = 0
    acked: int = 0
    committed: int = 0
    lost: int = 0
    #: Kills after a block's execution finished and before its ACK (in or by the commit).
    commit_window: int = 0
    commit_window_committed: int = 0
    #: Kills whose in-flight block turned out committed without an ACK.
    unacked_committed: int = 0
    modes: dict[str, int] = field(default_factory=dict)


def pause_until(moment: float) -> None:
    """Busy-wait: sleeping is too coarse for the sub-millisecond commit window."""
    while time.perf_counter() < moment:
        pass


def check_store(
    store: Storage, replay: Replay, worker: Worker, resumed_from: int, tally: Tally
) -> int:
    """Every recovery property for one kill; returns the head."""
    chain = Chain(store, threads=1)
    try:
        head, block_hash, state_root = chain.head()
        run_top = max(worker.acks, default=0)
        confirmed = max(resumed_from, run_top)
        if head < confirmed:
            tally.lost += confirmed - head
        assert head >= confirmed, (
            f"acknowledged blocks lost: head {head}, highest ACK {run_top}, resumed from "
            f"{resumed_from}"
        )
        assert head <= confirmed + 1, f"head {head} is past the in-flight block {confirmed + 1}"
        if head == confirmed + 1:
            assert head in worker.executed, f"block {head} committed before it was executed"
            tally.unacked_committed += 1

        replay.extend_to(head)
        expected = GENESIS if head == 0 else replay.chain.head()
        assert (head, block_hash, state_root) == expected, (
            f"head {head} is a block the chain never had"
        )
        if worker.acks and head == run_top:
            assert block_hash == worker.acks[head]
        for height, acked in worker.acks.items():
            assert acked == replay.block_hash(height), f"ACK {height} does not match the replay"
        for height in range(1, head + 1):
            assert chain.header(height) == replay.chain.header(height), height
            assert chain.block(height) == replay.chain.block(height), height
        assert chain.header(head + 1) is None
        # The root is the state's: recomputed from the store's pairs, it is the same.
        assert state_root == root_of({k: v for k, v in store.scan(b"") if in_state_tree(k)})
        if head:
            assert chain.tree.check(head) >= 1

        namespace = STATE_PREFIX + replay.token
        state = dict(store.scan(namespace))
        assert state == dict(replay.store.scan(namespace))
        assert bool(state) == (head > 1)
        assert dict(store.scan()) == dict(replay.store.scan())
        return head
    finally:
        chain.close()


class PostgresSessions:
    """Waits until the server has finished with a killed worker's connections."""

    def __init__(self) -> None:
        self.engine = sqlalchemy.create_engine(PG_URL, poolclass=sqlalchemy.pool.NullPool)

    def wait_gone(self, application_name: str) -> None:
        query = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        )
        deadline = time.monotonic() + STALL_SECONDS
        with self.engine.connect() as conn:
            while conn.execute(query, {"name": application_name}).scalar_one():
                if time.monotonic() > deadline:
                    pytest.fail(f"a killed worker's PostgreSQL session {application_name} lingers")
                time.sleep(0.005)

    def close(self) -> None:
        self.engine.dispose()


class MariaDBSessions:
    """Waits until the server has ended a killed worker's sessions in its database."""

    def __init__(self) -> None:
        import pymysql

        url = sqlalchemy.engine.make_url(MARIADB_URL)
        self.conn = pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username,
            password=url.password or "", autocommit=True,
        )  # fmt: skip

    def wait_gone(self, database: str) -> None:
        deadline = time.monotonic() + STALL_SECONDS
        with self.conn.cursor() as cur:
            while True:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s",
                            (database,))  # fmt: skip
                row = cur.fetchone()
                if row is None or row[0] == 0:
                    return
                if time.monotonic() > deadline:
                    pytest.fail(f"a killed worker's MariaDB session in {database} lingers")
                time.sleep(0.005)

    def drop_database(self, database: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")

    def close(self) -> None:
        self.conn.close()


@dataclass
class CrashTarget:
    """Where a crash test's worker writes: the URL the test reopens, the worker's URL (on a
    server, one that names the worker's sessions) and a wait for those sessions to end."""

    url: str
    worker_url: str
    sessions: PostgresSessions | MariaDBSessions | None = None
    name: str = ""

    def wait_gone(self) -> None:
        """Until the server has ended a killed worker's sessions (no-op for file stores)."""
        if self.sessions is not None:
            self.sessions.wait_gone(self.name)


@contextlib.contextmanager
def crash_target(backend: str, tmp_path: Path, label: str) -> Iterator[CrashTarget]:
    """A fresh store for ``backend``; on a server it is dropped afterwards.

    PostgreSQL workers get an ``application_name`` of their own, MariaDB workers a
    database of their own (the store creates it), so that their sessions can be
    told apart and waited for.
    """
    url = url_for(backend, tmp_path)
    target = CrashTarget(url, url)
    if backend == "postgresql":
        target.name = f"supervm_{label}_{uuid.uuid4().hex[:12]}"
        target.worker_url = f"{url}&application_name={target.name}"
        target.sessions = PostgresSessions()
    if backend == "mariadb":
        target.name = f"supervm_{label}_{uuid.uuid4().hex[:12]}"
        server = sqlalchemy.engine.make_url(MARIADB_URL).set(database=target.name)
        target.url = target.worker_url = with_table(server.render_as_string(hide_password=False))
        target.sessions = MariaDBSessions()
    try:
        yield target
    finally:
        if backend in ("postgresql", "mariadb"):
            leftover = supervm.open_storage(target.url)
            leftover.drop()  # type: ignore[attr-defined]
            leftover.close()
        if isinstance(target.sessions, MariaDBSessions):
            target.sessions.drop_database(target.name)
        if target.sessions is not None:
            target.sessions.close()
