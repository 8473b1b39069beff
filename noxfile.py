"""The test matrix: Python versions x packages, plus lint, types and benchmarks.

nox -l                      # list sessions
nox -s tests                # every package on every installed Python
nox -s "tests-3.12(package='rocksdb')"
nox -s lint types
nox -s bench
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHONS = ["3.11", "3.12", "3.13"]
PACKAGES = ["core", "rocksdb", "leveldb", "lmdb", "sql", "postgres", "mariadb", "node"]
#: Workspace distributions a package needs besides supervm-core (not on any index).
WORKSPACE_DEPENDENCIES = {"postgres": ["sql"], "mariadb": ["sql"]}

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "types", "tests", "vm", "integration"]

# pyenv keeps each interpreter in its own directory; make python3.X findable.
_pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[1-9]*/bin")))
if _pyenv:
    os.environ["PATH"] = os.pathsep.join([*_pyenv, os.environ.get("PATH", "")])


def _install_workspace(session: nox.Session, *packages: str) -> None:
    """Install supervm-core plus the given back ends from this checkout."""
    args = ["-e", "./supervm-core[testing]"]
    wanted = [
        dep for package in packages for dep in [*WORKSPACE_DEPENDENCIES.get(package, []), package]
    ]
    for package in dict.fromkeys(wanted):
        if package != "core":
            args += ["-e", f"./supervm-{package}"]
    session.install(*args)


@nox.session(python=PYTHONS)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests (its conformance suite included)."""
    if package == "leveldb" and session.python == "3.13" and not _have_leveldb_headers():
        session.error(
            "plyvel has no wheel for Python 3.13 and builds from source: "
            "install Debian's libleveldb-dev first (apt-get install libleveldb-dev)"
        )
    # The core's and the node's own tests use RocksDB as their persistent store (the
    # node's light client also SQLite); the core's also zig, to build contracts.
    extra = {"core": ["rocksdb"], "node": ["rocksdb", "sql"]}.get(package, [])
    _install_workspace(session, package, *extra)
    if package == "core":
        session.install("ziglang==0.17.1")
    if package == "node":
        # The status page's test drives Debian's chromium through selenium.
        session.install("selenium>=4.20")
    session.run("pytest", f"supervm-{package}/tests", "-q", *session.posargs)


#: wasmtime releases the runtime supports (supervm-core pins wasmtime>=49,<51).
WASMTIME_VERSIONS = ["49.0.0", "50.0.1"]


@nox.session(python=PYTHONS[0])
@nox.parametrize("wasmtime", WASMTIME_VERSIONS)
def vm(session: nox.Session, wasmtime: str) -> None:
    """The runtime's tests against each supported wasmtime release."""
    _install_workspace(session, "rocksdb")
    session.install(f"wasmtime=={wasmtime}", "ziglang==0.17.1")
    session.run("pytest", "supervm-core/tests/vm", "-q", *session.posargs)


@nox.session(python=PYTHONS[0])
def integration(session: nox.Session) -> None:
    """Cross-package tests: packaging, plugin discovery, end to end."""
    _install_workspace(session, *PACKAGES)
    session.install("uv", "pymysql")
    session.run("pytest", "tests", "-q", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff lint and format check over the whole tree; import-linter's layer contracts."""
    _install_workspace(session, *PACKAGES)
    session.install("ruff", "import-linter")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=PYTHONS[0])
def types(session: nox.Session) -> None:
    """mypy --strict on the core and the back ends."""
    _install_workspace(session, *PACKAGES)
    session.install("mypy", "types-pymysql")
    session.run("mypy", "supervm-core/src")
    for package in PACKAGES[1:]:
        session.run("mypy", f"supervm-{package}/src")


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """Benchmarks (bench/RESULTS.md): storage, VM, chain, state and transfer, bench.mvmemory,
    bench.galera.

    nox -s bench              # print each benchmark's table
    nox -s bench -- DIR       # also write DIR/storage.json, DIR/vm.json, DIR/chain.json,
                              # DIR/state.json, DIR/transfer.json;
                              # python -m bench.compare OLD/vm.json DIR/vm.json shows changes
    """
    _install_workspace(session, *PACKAGES)
    out = Path(session.posargs[0]) if session.posargs else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for name in ("storage", "vm", "chain"):
        json_args = ["--json", str(out / f"{name}.json")] if out is not None else []
        session.run("python", "-m", f"bench.{name}", *json_args)
    for name in ("state", "transfer", "node"):
        json_args = ["--json", str(out / f"{name}.json")] if out is not None else []
        session.run("python", "-m", f"bench.{name}", *json_args)
    if (ROOT / "bench" / "mvmemory.py").exists():
        session.run("python", "-m", "bench.mvmemory")
    for name in ("cache", "light", "followers"):
        json_args = ["--json", str(out / f"{name}.json")] if out is not None else []
        session.run("python", "-m", f"bench.{name}", *json_args)
    # The Galera benchmark starts a 3-node cluster of its own (needs mariadb-server, galera-4).
    if Path("/usr/lib/galera/libgalera_smm.so").exists() and shutil.which("rsync"):
        json_args = ["--json", str(out / "galera.json")] if out is not None else []
        session.run("python", "-m", "bench.galera", *json_args)
    else:
        session.log("bench.galera not run: MariaDB Galera is not installed (galera-4, rsync)")


def _have_leveldb_headers() -> bool:
    return Path("/usr/include/leveldb/db.h").exists() or shutil.which("leveldbutil") is not None
