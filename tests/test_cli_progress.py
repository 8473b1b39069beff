"""Long transfer commands draw progress (rate, ETA) on a terminal and stay quiet otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import supervm
from supervm.chain import Chain
from supervm.chain.block import receipts_root, transactions_root
from supervm.chain.header import BlockHeader
from supervm.layout import state_key

ROOT = Path(__file__).resolve().parent.parent


def _store_with_state(path: Path, keys: int) -> str:
    url = f"rocksdb://{path}"
    storage = supervm.open_storage(url)
    chain = Chain(storage, threads=1)
    pairs = tuple(sorted((state_key(b"\x05" * 20, b"k%07d" % i), b"v" * 60) for i in range(keys)))
    tree = chain.tree.update(1, pairs, base_version=None, checked=True)
    header = BlockHeader(1, b"\0" * 32, 0, transactions_root(()), tree.root_hash, receipts_root(()))
    chain.import_block(header, (), pairs)
    chain.close()
    storage.close()
    return url


def _run(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """Run ``python -m supervm ARGS``, stderr on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "supervm", *args]
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=env, text=True
    )
    os.close(slave)
    drawn = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: the process is done
            break
        if not data:
            break
        drawn += data
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    os.close(master)
    return proc.returncode, out, drawn.decode(errors="replace")


def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    source = _store_with_state(tmp_path / "source", 60_000)
    snap = tmp_path / "s.snap"
    code, out, drawn = _run(
        ["snapshot", "export", "--store", source, "--out", str(snap), "--chunk-size", "65536"],
        terminal=True,
    )
    assert code == 0, drawn
    assert "height:" in out
    assert "reading" in drawn or "writing" in drawn, drawn[-2000:]
    assert "/s" in drawn  # the rate column

    code, out, quiet = _run(
        ["snapshot", "import", str(snap), "--store", f"lmdb://{tmp_path}/t", "--json"],
        terminal=False,
    )
    assert code == 0 and quiet == "", quiet
    assert '"keys": 60000' in out

    code, out, drawn = _run(
        ["migrate", "--from", source, "--to", f"sqlite:///{tmp_path}/m.db", "--batch-keys",
         "5000"],
        terminal=True,
    )  # fmt: skip
    assert code == 0, drawn
    assert "copying" in drawn and "/s" in drawn, drawn[-2000:]
