"""SIGKILL during revert, re-apply and pruning leaves a whole chain on every persistent back end.

``churn_worker.py`` extends a chain to height ``TOP`` and then, until killed,
reverts it by 1 to 3 blocks, re-applies them and prunes it in small batches.
The test kills it at random moments (a random 20-400 ms after it started, or
right after it began a random step) and checks, on the reopened store, that

- the head is a block of the chain (between ``TOP - 3`` and ``TOP``, with the
  block hash of an independent replay at that height);
- the store's state is exactly the replay's state at the head, its state root
  is the root recomputed from those pairs, and a full tree check passes;
- every height from the pruning horizon to the head reads as the replay, and a
  read below the horizon raises ``PrunedHeightError``;

then restarts the worker. ``SUPERVM_CRASH_KILLS`` sets the kills per back end
(default 12, shared with the commit crash test's variable).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

import supervm
from supervm.chain import Chain, PrunedHeightError
from supervm.layout import in_state_tree
from supervm.storage import Storage
from supervm.tree.rebuild import root_of

from .backends import FILE_BACKENDS, require_postgres, require_server
from .crash_support import STALL_SECONDS, CrashTarget, Replay, crash_target

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "churn_worker.py"
KILLS = max(1, int(os.environ.get("SUPERVM_CRASH_KILLS", "24")) // 2)
TOP = 14


def tree_state(store: Storage) -> dict[bytes, bytes]:
    return {k: v for k, v in store.scan(b"") if in_state_tree(k)}


class ChurnWorker:
    def __init__(self, url: str, seed: int, stderr: Path) -> None:
        self._stderr = stderr.open("ab")
        self.stderr_path = stderr
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(seed), str(TOP)],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("EOF")
            self._cond.notify_all()

    def wait_for(self, predicate: str, count: int = 1) -> None:
        deadline = time.monotonic() + STALL_SECONDS
        with self._cond:
            while sum(1 for line in self.lines if line.startswith(predicate)) < count:
                if "EOF" in self.lines:
                    pytest.fail(f"worker ended by itself\n{self.stderr_path.read_text()[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"worker printed no {predicate!r} in {STALL_SECONDS:.0f} s")
                self._cond.wait(left)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


def check(store: Storage, replay: Replay, states: dict[int, dict[bytes, bytes]]) -> tuple[int, int]:
    """Every property after one kill; returns (head, horizon)."""
    chain = Chain(store, threads=1)
    try:
        head = chain.head()
        assert TOP - 3 <= head.height <= TOP, f"head {head.height} outside the churn"
        expected = replay.chain.header(head.height)
        assert expected is not None
        assert head == (head.height, expected.hash, expected.state_root)
        state = tree_state(store)
        assert state == states[head.height], f"state at head {head.height} is not the chain's"
        assert head.state_root == root_of(state)
        assert chain.tree.check(head.height) == len(state)
        horizon = chain.horizon()
        for height in range(max(horizon, 1), head.height + 1):
            view = chain.at(height)
            assert dict(view.scan(b"")) == states[height], f"history at {height}"
            header = chain.header(height)
            assert header is not None and header == replay.chain.header(height)
        if horizon > 0:
            with pytest.raises(PrunedHeightError):
                chain.at(horizon - 1)
        return head.height, horizon
    finally:
        chain.close()


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "postgresql", "mariadb"])
def test_sigkill_during_revert_and_pruning_leaves_a_whole_chain(
    backend: str, tmp_path: Path
) -> None:
    if backend == "postgresql":
        require_postgres()
    if backend == "mariadb":
        require_server("mariadb")
    seed = zlib.crc32(b"churn/" + backend.encode())
    schedule = random.Random(int(os.environ.get("SUPERVM_CRASH_SEED", "0")) or None)
    with crash_target(backend, tmp_path, "churn") as target:
        churn(backend, target, seed, schedule, tmp_path)


def churn(
    backend: str, target: CrashTarget, seed: int, schedule: random.Random, tmp_path: Path
) -> None:
    """The kill loop of one back end, on ``target``."""
    url, worker_url = target.url, target.worker_url
    replay = Replay(seed)
    states: dict[int, dict[bytes, bytes]] = {0: {}}
    for height in range(1, TOP + 1):
        replay.extend_to(height)
        states[height] = tree_state(replay.store)
    steps: dict[str, int] = {}
    horizons = set()
    worker: ChurnWorker | None = None
    try:
        for _ in range(KILLS):
            worker = ChurnWorker(worker_url, seed, tmp_path / "worker.stderr")
            worker.wait_for("READY")
            if schedule.random() < 0.5:
                time.sleep(schedule.uniform(0.02, 0.4))
            else:
                step = schedule.choice(["BEGIN revert", "BEGIN apply", "BEGIN prune"])
                worker.wait_for(step, schedule.randint(1, 3))
            worker.kill()
            for line in worker.lines:
                if line.startswith("BEGIN"):
                    kind = line.split()[1]
                    steps[kind] = steps.get(kind, 0) + 1
            worker = None
            target.wait_gone()
            store = supervm.open_storage(url)
            try:
                _, horizon = check(store, replay, states)
                horizons.add(horizon)
            finally:
                store.close()
    finally:
        if worker is not None:
            worker.kill()
        replay.chain.close()
        print(f"\nchurn crash {backend}: {KILLS} kills, steps begun {steps}, horizons {horizons}")
    assert steps.get("revert", 0) > 0 and steps.get("prune", 0) > 0
