"""Fixtures shared by the cross-package tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def uv_binary() -> str:
    """The ``uv`` next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).parent / "uv"
    if local.exists():
        return str(local)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to build wheels; install the dev dependencies")
    return found


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every SuperVM distribution and of the example plugin."""
    out = tmp_path_factory.mktemp("wheelhouse")
    uv = uv_binary()
    run([uv, "build", "--all-packages", "--wheel", "--out-dir", str(out)], cwd=ROOT)
    run([uv, "build", "--wheel", "--out-dir", str(out), str(ROOT / "examples" / "supervm-logfile")])
    return out


def run_supervm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m supervm ARGS`` with ``SUPERVM_HOME=home`` and no ``SUPERVM_STORE``."""
    env = {k: v for k, v in os.environ.items() if k != "SUPERVM_STORE"}
    env["SUPERVM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "supervm", *args], capture_output=True, text=True, env=env
    )
