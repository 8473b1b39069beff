"""Every benchmark runs end to end, at toy sizes (the figures are not looked at).

``nox -s bench`` runs them at full size; this keeps them from breaking
unnoticed when the code they measure changes.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Measurement options that make every comparison a couple of pairs.
TINY = shlex.split("--rounds 2 --processes 1 --budget 0.2 --min-pairs 1 --warmup 0 --spread 1")
RUNS = {
    "storage": shlex.split("--backends rocksdb,lmdb,sqlite --keys 300"),
    "vm": [],
    "chain": shlex.split(
        "--hash-calls 4 --hash-rounds 10 --hot-transfers 100 --transfers 500 --accounts 50 "
        "--min-block 50 --commit-keys 500"
    ),
    "state": shlex.split(
        "--accounts 50 --block-txs 200 --breakdown-reps 1 --tree-keys 2000 --tree-batch 1000 "
        "--proofs 50 --proof-reps 1 --read-keys 500 --history-blocks 20 --block-keys 10 "
        "--reads 200 --keep-blocks 5"
    ),
    "transfer": shlex.split(
        "--keys 2000 --memory-keys 3000 --tracemalloc-keys 2000 --sync-blocks 2 --sync-txs 10 "
        "--sync-accounts 20"
    ),
    "node": shlex.split(
        "--txs 200 --repeats 1 --no-pyevm --blocks 2 --block-txs 100 --pipeline-repeats 1 "
        "--reads 50"
    ),
}


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("module", sorted(RUNS))
def test_the_benchmark_runs(module: str, tmp_path: Path) -> None:
    out = run(module, *TINY, *RUNS[module], "--json", str(tmp_path / "out.json"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "| comparison | ratio |" in out.stdout
    assert (tmp_path / "out.json").stat().st_size > 0


def test_the_mvmemory_benchmark_runs() -> None:
    out = run("mvmemory")
    assert out.returncode == 0, out.stderr[-4000:]
    assert "hot key" in out.stdout


@pytest.mark.cluster
def test_the_galera_benchmark_runs(tmp_path: Path) -> None:
    json_out = str(tmp_path / "out.json")
    out = run("galera", *TINY, "--keys", "300", "--failovers", "1", "--json", json_out)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "failover (kill of the serving node to the next committed block)" in out.stdout
