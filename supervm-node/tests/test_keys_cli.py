from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from supervm.cli import build_parser, main
from supervm_node import KeyPair, load_key, save_key

RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def test_keys_is_registered_through_the_entry_point() -> None:
    parser = build_parser()
    args = parser.parse_args(["keys", "show", "x.key"])
    assert args.func.__module__ == "supervm_node.cli"


def test_keys_new_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.key"
    assert main(["keys", "new", "--out", str(path), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    key = load_key(path)
    assert made == {
        "address": key.address.hex(),
        "public_key": key.public_key.hex(),
        "file": str(path),
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert main(["keys", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == made
    assert main(["keys", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"address     {key.address.hex()}" in out
    assert f"public key  {key.public_key.hex()}" in out
    assert key.seed.hex() not in out


def test_keys_new_prints_no_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.key"
    assert main(["keys", "new", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    key = load_key(path)
    assert key.address.hex() in out and key.public_key.hex() in out
    assert key.seed.hex() not in out


def test_keys_new_refuses_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    save_key(path, KeyPair.from_seed(RFC_SEED))
    assert main(["keys", "new", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"supervm: error: {path}: the file exists")
    assert load_key(path).seed == RFC_SEED


def test_keys_show_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "show", str(tmp_path / "nope.key")]) == 1
    assert capsys.readouterr().err == f"supervm: error: {tmp_path / 'nope.key'}: no such key file\n"
    path = tmp_path / "open.key"
    save_key(path, KeyPair.generate())
    path.chmod(0o644)
    assert main(["keys", "show", str(path)]) == 1
    assert f"run: chmod 600 {path}" in capsys.readouterr().err


def test_keys_needs_an_action() -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys"])
    assert info.value.code == 2


def test_keys_through_python_m_supervm(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    env = {k: v for k, v in os.environ.items() if k != "SUPERVM_STORE"}
    new = subprocess.run(
        [sys.executable, "-m", "supervm", "keys", "new", "--out", str(path), "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert new.stderr == ""
    made = json.loads(new.stdout)
    show = subprocess.run(
        [sys.executable, "-m", "supervm", "keys", "show", str(path), "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert json.loads(show.stdout) == made
    assert made["address"] == load_key(path).address.hex()
    listing = subprocess.run(
        [sys.executable, "-m", "supervm", "--help"], capture_output=True, text=True, check=True
    )
    assert "keys" in listing.stdout
