"""The CLI's embedded default store persists across processes."""

from __future__ import annotations

from pathlib import Path

from .conftest import run_supervm as supervm


def test_default_store_is_embedded_rocksdb_and_persists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert supervm("kv", "set", "greeting", "hello", home=home).returncode == 0
    assert supervm("kv", "set", "greet2", "", home=home).returncode == 0
    got = supervm("kv", "get", "greeting", home=home)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "hello\n"
    assert (home / "rocksdb").is_dir()
    listing = supervm("kv", "scan", "greet", home=home)
    assert listing.stdout.splitlines() == ["greet2\t", "greeting\thello"]
    assert supervm("kv", "delete", "greeting", home=home).returncode == 0
    missing = supervm("kv", "get", "greeting", home=home)
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_hex_keys(tmp_path: Path) -> None:
    store = f"lmdb://{tmp_path}/db"
    done = supervm("kv", "--store", store, "--hex", "set", "00ff", "", home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = supervm("kv", "--store", store, "--hex", "scan", "00", home=tmp_path)
    assert out.stdout == "00ff\t\n"
