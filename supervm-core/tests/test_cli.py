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
