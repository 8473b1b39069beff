from __future__ import annotations

import json
import subprocess
import sys

import pytest

from supervm.cli import main


def test_backends_json_lists_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = {row["scheme"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["memory"]["distribution"] == "supervm-core"
    assert rows["memory"]["url"] == "memory://"
    assert rows["memory"]["status"] == "ok"


def test_backends_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SCHEME", "PACKAGE", "VERSION", "URL"]
    assert any(line.startswith("memory ") for line in out)


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "backends" in capsys.readouterr().out


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supervm", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("supervm ")


def test_kv_memory_store_lives_for_one_command(capsys: pytest.CaptureFixture[str]) -> None:
    # memory:// lives for one process, so each command sees an empty store.
    assert main(["kv", "--store", "memory://", "set", "k", "v"]) == 0
    assert main(["kv", "--store", "memory://", "get", "k"]) == 1
    assert "not found" in capsys.readouterr().err


def test_kv_bad_hex_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="not hexadecimal"):
        main(["kv", "--store", "memory://", "--hex", "get", "zz"])


def test_kv_unknown_scheme_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kv", "--store", "nosuch://x", "get", "k"]) == 1
    assert "nosuch" in capsys.readouterr().err


def test_default_store_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervm.cli import default_store_url

    monkeypatch.setenv("SUPERVM_STORE", "memory://")
    assert default_store_url() == "memory://"
