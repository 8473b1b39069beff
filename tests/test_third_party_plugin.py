"""A back end published as its own distribution is found with no change to SuperVM."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_path(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin's wheel unpacked into a directory of its own (a site dir)."""
    (wheel,) = wheelhouse.glob("supervm_logfile-*.whl")
    target = tmp_path_factory.mktemp("plugin-site")
    zipfile.ZipFile(wheel).extractall(target)
    return target


def _env(plugin_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    return env


def test_plugin_is_not_installed_here() -> None:
    import supervm

    assert "logfile" not in supervm.available_backends()


def test_installed_plugin_is_listed_and_opens(plugin_path: Path, tmp_path: Path) -> None:
    env = _env(plugin_path)
    listing = json.loads(
        run([sys.executable, "-m", "supervm", "backends", "--json"], env=env).stdout
    )
    rows = {row["scheme"]: row for row in listing}
    assert rows["logfile"]["distribution"] == "supervm-logfile"
    assert rows["logfile"]["status"] == "ok"
    assert rows["logfile"]["url"].startswith("logfile://")

    script = (
        "import logging, sys, supervm\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "s = supervm.open_storage(sys.argv[1]); s.set(b'k', b'v'); s.close()\n"
        "s = supervm.open_storage(sys.argv[1]); print(s.get(b'k').decode()); s.close()\n"
    )
    proc = run([sys.executable, "-c", script, f"logfile://{tmp_path}/x.log"], env=env)
    assert proc.stdout.strip() == "v"
    # The plugin's pluggy hook (entry-point group "supervm") observed the opens.
    assert "opened LogFileStorage store for logfile" in proc.stderr


def test_installed_plugin_passes_the_conformance_kit(plugin_path: Path, tmp_path: Path) -> None:
    tests = ROOT / "examples" / "supervm-logfile" / "tests"
    proc = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests),
            "--rootdir",
            str(tmp_path),
        ],
        env=_env(plugin_path),
        cwd=tmp_path,
    )
    assert " passed" in proc.stdout and "failed" not in proc.stdout
