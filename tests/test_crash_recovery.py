"""Block commits survive SIGKILL at any moment on every persistent back end.

``crash_worker.py`` commits a stream of token blocks, each a function of
``(seed, height)`` alone, and prints ``ACK <height> <digest>`` once
:meth:`Chain.apply` has returned. The test kills it with SIGKILL at random
moments: a random 10-300 ms after its first ACK, right after a random number of
ACKs, or right after it reports that a block has been executed (so that the
kill lands in or next to the commit). After each kill it reopens the store and
checks that

- no acknowledged block is lost: the head is at least the highest ACK (and at
  least the head the worker resumed from);
- at most the in-flight block is committed beyond that, and only one whose
  execution had finished;
- the head's digest, every block record up to the head, the token's state and
  in fact the whole store equal those of an independent replay of blocks
  ``1..head`` on a memory store, so no block is torn;

then restarts the worker, which must resume at ``head + 1``.

A SIGKILL ends the process, not the operating system: what a store has handed
to the kernel survives it. LMDB syncs every commit by default (``sync=true``);
RocksDB and LevelDB write their log without an fsync per batch by default,
which survives a killed process but not a power cut or kernel crash; SQLite
runs in WAL mode; PostgreSQL and MariaDB commit on the server (MariaDB in a
database of the test's own, so that the killed worker's sessions are the ones
in it, which the test waits to see gone before it looks). So this test checks
atomicity and recovery after a process crash, not durability across a power
failure.

``SUPERVM_CRASH_KILLS`` sets the kills per back end (default 24) and
``SUPERVM_CRASH_SEED`` the seed of the kill schedule (default: random, printed).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy

import supervm
from supervm.chain import Chain
from supervm.chain.block import GENESIS_DIGEST
from supervm.layout import STATE_PREFIX
from supervm.storage import Storage

from .backends import (
    FILE_BACKENDS,
    MARIADB_URL,
    PG_URL,
    require_postgres,
    require_server,
    url_for,
    with_table,
)
from .crash_worker import build_block, token_code

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "crash_worker.py"
KILLS = int(os.environ.get("SUPERVM_CRASH_KILLS", "24"))
#: Longest the worker may stay silent before the test gives up on it (a hang, not a timing check).
STALL_SECONDS = 120.0


class Replay:
    """The same chain, rebuilt block by block on a memory store in this process."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.store = supervm.open_storage("memory://")
        self.chain = Chain(self.store, threads=1)
        self.token = self.chain.deploy(token_code())
        self.height = 0

    def extend_to(self, height: int) -> None:
        while self.height < height:
            block = build_block(self.token, self.seed, self.height + 1)
            self.chain.apply(block, mode="sequential")
            self.height += 1

    def digest(self, height: int) -> bytes:
        record = self.chain.block_record(height)
        assert record is not None
        return record[0]


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
        head, digest = chain.head()
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
        expected = GENESIS_DIGEST if head == 0 else replay.digest(head)
        assert digest == expected, f"head {head} holds a digest the chain never had"
        if worker.acks and head == run_top:
            assert digest == worker.acks[head]
        for height, acked in worker.acks.items():
            assert acked == replay.digest(height), f"ACK {height} does not match the replay"
        for height in range(1, head + 1):
            assert chain.block_record(height) == replay.chain.block_record(height), height
        assert chain.block_record(head + 1) is None

        namespace = STATE_PREFIX + replay.token
        state = dict(store.scan(namespace))
        assert state == dict(replay.store.scan(namespace))
        assert bool(state) == (head > 0)
        assert dict(store.scan()) == dict(replay.store.scan())
        return head
    finally:
        chain.close()


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "postgresql", "mariadb"])
def test_sigkill_during_commits_loses_and_tears_nothing(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        require_postgres()
    if backend == "mariadb":
        require_server("mariadb")
    schedule_seed = int(os.environ.get("SUPERVM_CRASH_SEED", "0")) or random.randrange(1, 2**31)
    rng = random.Random(schedule_seed)
    chain_seed = zlib.crc32(backend.encode())
    url = url_for(backend, tmp_path)
    worker_url = url
    application_name = ""
    sessions: PostgresSessions | MariaDBSessions | None = None
    if backend == "postgresql":
        application_name = f"supervm_crash_{uuid.uuid4().hex[:12]}"
        worker_url = f"{url}&application_name={application_name}"
        sessions = PostgresSessions()
    if backend == "mariadb":
        # The database of the test's own (the store creates it) names the worker's sessions.
        application_name = f"supervm_crash_{uuid.uuid4().hex[:12]}"
        server = sqlalchemy.engine.make_url(MARIADB_URL).set(database=application_name)
        url = worker_url = with_table(server.render_as_string(hide_password=False))
        sessions = MariaDBSessions()

    replay = Replay(chain_seed)
    tally = Tally()
    gaps: list[float] = []
    head = 0
    worker: Worker | None = None
    started = time.monotonic()
    try:
        for cycle in range(KILLS):
            worker = Worker(worker_url, head + 1, chain_seed, tmp_path / "worker.stderr")
            mode = rng.choice(["timer", "acks", "executed"])
            tally.modes[mode] = tally.modes.get(mode, 0) + 1
            if mode == "timer":
                worker.wait_for("ACK", 1)
                time.sleep(rng.uniform(0.010, 0.300))
            elif mode == "acks":
                worker.wait_for("ACK", rng.randint(1, 20))
            else:
                worker.wait_for("EXECUTED", rng.randint(1, 8))
                # Spread kills over the whole stretch from execution to ACK, commit included.
                gaps.extend(worker.commit_gaps)
                if gaps:
                    pause_until(time.perf_counter() + rng.uniform(0, statistics.median(gaps)))
            worker.kill()
            # Killed after the block's execution and before its ACK: in or next to the commit.
            in_flight = worker.executed[-1] if worker.last_event == "EXECUTED" else None
            assert worker.killed and worker.proc.returncode == -signal.SIGKILL, (
                f"cycle {cycle}: worker was not killed ({worker.proc.returncode})\n"
                f"{worker.stderr()}"
            )
            tally.kills += 1
            tally.acked += len(worker.acks)
            if sessions is not None:
                sessions.wait_gone(application_name)

            store = supervm.open_storage(url)
            try:
                resumed_from = head
                head = check_store(store, replay, worker, resumed_from, tally)
            finally:
                store.close()
            if in_flight is not None:
                tally.commit_window += 1
                tally.commit_window_committed += head == in_flight
            worker = None
    finally:
        tally.committed = head
        if worker is not None:
            worker.kill()
        if backend in ("postgresql", "mariadb"):
            leftover = supervm.open_storage(url)
            leftover.drop()  # type: ignore[attr-defined]
            leftover.close()
        if isinstance(sessions, MariaDBSessions):
            sessions.drop_database(application_name)
        if sessions is not None:
            sessions.close()
        replay.chain.close()
        seconds = time.monotonic() - started
        modes = ", ".join(f"{name} {n}" for name, n in sorted(tally.modes.items()))
        print(
            f"\ncrash-recovery {backend}: {tally.kills} kills ({modes}), "
            f"{tally.acked} blocks acknowledged, {tally.committed} committed "
            f"({tally.unacked_committed} in-flight committed without ACK), "
            f"{tally.commit_window} kills between execution and ACK "
            f"({tally.commit_window_committed} committed, "
            f"{tally.commit_window - tally.commit_window_committed} rolled back), "
            f"lost {tally.lost}, {seconds:.1f} s, schedule seed {schedule_seed}"
        )

    assert tally.lost == 0
    assert tally.kills == KILLS
    assert tally.committed == tally.acked + tally.unacked_committed
