"""The CLI's embedded default store persists across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _supervm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUPERVM_STORE"}
    env["SUPERVM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "supervm", *args], capture_output=True, text=True, env=env
    )


def test_default_store_is_embedded_rocksdb_and_persists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _supervm("kv", "set", "greeting", "hello", home=home).returncode == 0
    assert _supervm("kv", "set", "greet2", "", home=home).returncode == 0
    got = _supervm("kv", "get", "greeting", home=home)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "hello\n"
    assert (home / "rocksdb").is_dir()
    listing = _supervm("kv", "scan", "greet", home=home)
    assert listing.stdout.splitlines() == ["greet2\t", "greeting\thello"]
    assert _supervm("kv", "delete", "greeting", home=home).returncode == 0
    missing = _supervm("kv", "get", "greeting", home=home)
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_hex_keys(tmp_path: Path) -> None:
    store = f"lmdb://{tmp_path}/db"
    done = _supervm("kv", "--store", store, "--hex", "set", "00ff", "", home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = _supervm("kv", "--store", store, "--hex", "scan", "00", home=tmp_path)
    assert out.stdout == "00ff\t\n"
