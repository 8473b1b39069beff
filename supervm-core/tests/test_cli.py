from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from supervm import cli
from supervm.cli import build_parser, main


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


# Command plugins: the ``supervm.commands`` entry-point group.


def _plugin_module(name: str, register: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.register = register  # type: ignore[attr-defined]
    return module


def _fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, plugins: dict[str, object]
) -> list[EntryPoint]:
    """Entry points named after ``plugins``' keys, each a module whose ``register`` is the
    value (None: a module that does not exist); only these are seen."""
    eps = []
    for name, register in plugins.items():
        module = f"fake_supervm_plugin_{name}"
        if register is not None:
            monkeypatch.setitem(sys.modules, module, _plugin_module(module, register))
        eps.append(
            EntryPoint(name=name, value=f"{module}:register", group=cli.COMMANDS_ENTRY_POINT_GROUP)
        )
    monkeypatch.setattr(cli, "_command_entry_points", lambda: eps)
    return eps


def _register_hello(subparsers: cli.PluginSubparsers) -> None:
    hello = subparsers.add_parser("hello", help="say hello")
    hello.add_argument("--name", default="world")

    def run(args: argparse.Namespace) -> int:
        if args.name == "bad":
            raise ValueError("no such name")
        print(f"hello {args.name}")
        return 0

    hello.set_defaults(func=run)


def test_plugin_command_is_added_and_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_entry_points(monkeypatch, {"hello": _register_hello})
    assert main(["hello", "--name", "vm"]) == 0
    assert capsys.readouterr().out == "hello vm\n"
    # Its errors go through main's handling.
    assert main(["hello", "--name", "bad"]) == 1
    assert capsys.readouterr().err == "supervm: error: no such name\n"
    assert main(["backends", "--json"]) == 0
    assert "hello" in build_parser().format_help()


def test_core_cli_works_without_plugins(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_entry_points(monkeypatch, {})
    assert main(["backends", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["keys", "show", "x.key"])
    assert "invalid choice: 'keys'" in capsys.readouterr().err


def test_failing_plugin_warns_and_core_commands_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(subparsers: cli.PluginSubparsers) -> None:
        subparsers.add_parser("half", help="added before the failure")
        raise RuntimeError("plugin\nexploded")

    _fake_entry_points(monkeypatch, {"missing": None, "broken": broken, "hello": _register_hello})
    assert main(["backends", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)
    warnings = captured.err.splitlines()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("supervm: warning: command plugin 'missing' failed to load")
    assert "ModuleNotFoundError" in warnings[0]
    assert warnings[1] == (
        "supervm: warning: command plugin 'broken' failed to load "
        "(RuntimeError: plugin exploded); its commands are off"
    )
    # The broken plugin's half-made command is gone; the good plugin's is there.
    with pytest.raises(SystemExit):
        main(["half"])
    capsys.readouterr()
    assert main(["hello"]) == 0
    assert capsys.readouterr().out == "hello world\n"


@pytest.mark.parametrize("clash", [{"name": "kv"}, {"name": "other", "aliases": ["demo"]}])
def test_plugin_command_clashing_with_a_core_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], clash: dict[str, Any]
) -> None:
    def greedy(subparsers: cli.PluginSubparsers) -> None:
        subparsers.add_parser("mine", help="fine on its own").set_defaults(func=lambda a: 0)
        name = clash["name"]
        subparsers.add_parser(name, aliases=clash.get("aliases", [])).set_defaults(
            func=lambda args: 99
        )

    _fake_entry_points(monkeypatch, {"greedy": greedy, "hello": _register_hello})
    taken = clash.get("aliases", [clash["name"]])[0]
    assert main(["kv", "--store", "memory://", "set", "k", "v"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"supervm: warning: command plugin 'greedy' wants the command name {taken!r}, "
        "which is taken; refused"
    ]
    parser = build_parser()
    capsys.readouterr()
    assert parser.parse_args(["kv", "get", "k"]).func is cli._cmd_kv
    with pytest.raises(SystemExit):
        parser.parse_args(["mine"])  # all of the plugin's commands or none
    assert parser.parse_args(["hello"]).name == "world"
