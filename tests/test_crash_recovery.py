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
import random
import signal
import statistics
import time
import zlib
from pathlib import Path

import pytest

import supervm

from .backends import (
    FILE_BACKENDS,
    require_postgres,
    require_server,
)
from .crash_support import (
    CrashTarget,
    Replay,
    Tally,
    Worker,
    check_store,
    crash_target,
    pause_until,
)

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("SUPERVM_CRASH_KILLS", "24"))


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "postgresql", "mariadb"])
def test_sigkill_during_commits_loses_and_tears_nothing(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        require_postgres()
    if backend == "mariadb":
        require_server("mariadb")
    schedule_seed = int(os.environ.get("SUPERVM_CRASH_SEED", "0")) or random.randrange(1, 2**31)
    rng = random.Random(schedule_seed)
    chain_seed = zlib.crc32(backend.encode())
    with crash_target(backend, tmp_path, "crash") as target:
        run_kills(backend, target, rng, chain_seed, schedule_seed, tmp_path)


def run_kills(
    backend: str, target: CrashTarget, rng: random.Random, chain_seed: int,
    schedule_seed: int, tmp_path: Path,
) -> None:  # fmt: skip
    """The kill loop of one back end, on ``target``."""
    url, worker_url = target.url, target.worker_url
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
            target.wait_gone()

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
