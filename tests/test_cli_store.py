"""The CLI's embedded default store persists across processes."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_kv_options_after_the_action(tmp_path: Path) -> None:
    store = f"rocksdb://{tmp_path}/db"
    done = supervm("kv", "set", "6b", "76", "--store", store, "--hex", home=tmp_path)
    assert done.returncode == 0, done.stderr
    got = supervm("kv", "get", "k", "--store", store, home=tmp_path)
    assert (got.returncode, got.stdout) == (0, "v\n"), got.stderr
    mixed = supervm("kv", "--store", store, "scan", "--hex", home=tmp_path)
    assert mixed.stdout == "6b\t76\n", mixed.stderr


@pytest.mark.parametrize("scheme", ["rocksdb", "lmdb", "leveldb", "sqlite"])
def test_reading_a_path_that_holds_no_store_creates_nothing(tmp_path: Path, scheme: str) -> None:
    missing = tmp_path / "typo" / "path"
    url = f"{scheme}:///{missing}" if scheme == "sqlite" else f"{scheme}://{missing}"
    for args in (("kv", "get", "k"), ("kv", "scan"), ("call", "00" * 20, "get")):
        got = supervm(*args, "--store", url, home=tmp_path)
        assert got.returncode == 1, (args, got.stdout, got.stderr)
        assert str(missing) in got.stderr and "'k' not found" not in got.stderr, got.stderr
    assert not (tmp_path / "typo").exists()


def test_reading_the_default_store_before_any_write_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    got = supervm("kv", "get", "k", home=home)
    assert got.returncode == 1
    assert "supervm: error:" in got.stderr
    assert not home.exists()
