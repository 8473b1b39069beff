"""Install ``supervm[rocksdb]`` (``[mariadb]``, ``[postgres]``, ``[node]``) from built wheels
with plain pip, as a user would, and check that each extra brings its own driver and no
other (the node: PyNaCl and no storage back end)."""

from __future__ import annotations

import json
import sys
import uuid
import venv
from pathlib import Path

import pytest

from .backends import MARIADB_URL, require_server, with_table
from .conftest import run

pytestmark = pytest.mark.slow

CHECK = r"""
import importlib.util, json, sys
import supervm
from supervm.errors import BackendNotFoundError

with supervm.open_storage(sys.argv[1]) as store:
    store.set(b"k", b"v")
with supervm.open_storage(sys.argv[1]) as store:
    value = store.get(b"k")
try:
    supervm.open_storage("leveldb:///tmp/never")
    missing_error = None
except BackendNotFoundError as exc:
    missing_error = str(exc)
print(json.dumps({
    "value": value.decode(),
    "backends": sorted(supervm.available_backends()),
    "absent": {m: importlib.util.find_spec(m) is None
               for m in ("plyvel", "lmdb", "sqlalchemy", "psycopg", "rocksdict")},
    "missing_error": missing_error,
}))
"""


def test_pip_install_rocksdb_extra_installs_only_rocksdb(wheelhouse: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--find-links",
            str(wheelhouse),
            "supervm[rocksdb]==0.1.0",
        ]
    )

    proc = run([python, "-c", CHECK, f"rocksdb://{tmp_path}/db"])
    report = json.loads(proc.stdout)
    assert report["value"] == "v"
    assert report["backends"] == ["memory", "rocksdb"]
    assert report["absent"] == {
        "plyvel": True,
        "lmdb": True,
        "sqlalchemy": True,
        "psycopg": True,
        "rocksdict": False,
    }
    assert "pip install 'supervm[leveldb]'" in report["missing_error"]

    listing = run([str(env_dir / "bin" / "supervm"), "backends"]).stdout
    assert "rocksdb" in listing and "supervm-rocksdb" in listing
    assert "leveldb" not in listing
    # A library user gets no web stack and no node.
    web = "import importlib.util as u; print([m for m in WEB if u.find_spec(m)])"
    assert run([python, "-c", web.replace("WEB", repr(WEB))]).stdout.strip() == "[]"


DRIVERS = ("plyvel", "lmdb", "rocksdict", "psycopg", "pymysql", "sqlalchemy")
#: What the node brings and a library user must not get.
WEB = ("supervm_node", "nacl", "starlette", "uvicorn", "prometheus_client")

SQL_CHECK = r"""
import importlib.util, json, sys
import supervm

with supervm.open_storage(sys.argv[1]) as store:
    store.write_batch([(b"k", b"v"), (b"\xff", b"")])
    pairs = [[k.hex(), v.hex()] for k, v in store.scan()]
    kind = type(store).__module__
    if len(sys.argv) > 2:
        store.drop()
print(json.dumps({
    "pairs": pairs,
    "class": kind,
    "backends": sorted(supervm.available_backends()),
    "present": sorted(m for m in DRIVERS if importlib.util.find_spec(m) is not None),
}))
""".replace("DRIVERS", repr(DRIVERS))


def install(wheelhouse: Path, env_dir: Path, requirement: str) -> str:
    """A fresh venv with ``requirement`` pip-installed from the wheelhouse; its python."""
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--find-links", str(wheelhouse)]
    run([*pip, requirement])
    return python


def test_pip_install_mariadb_extra_brings_pymysql_and_sqlalchemy_only(
    wheelhouse: Path, tmp_path: Path
) -> None:
    require_server("mariadb")
    python = install(wheelhouse, tmp_path / "venv", "supervm[mariadb]==0.1.0")
    url = with_table(MARIADB_URL, f"t_pkg_{uuid.uuid4().hex[:12]}")
    report = json.loads(run([python, "-c", SQL_CHECK, url, "drop"]).stdout)
    assert report["pairs"] == [["6b", "76"], ["ff", ""]]
    assert report["class"] == "supervm_mariadb.mariadb"
    assert report["present"] == ["pymysql", "sqlalchemy"]
    assert report["backends"] == [
        "mariadb", "mariadb+pymysql", "memory", "mysql", "mysql+pymysql", "sqlite",
    ]  # fmt: skip
    # SQLite comes with the shared SQL distribution, and needs no driver.
    report = json.loads(run([python, "-c", SQL_CHECK, f"sqlite:///{tmp_path}/kv.db"]).stdout)
    assert report["class"] == "supervm_sql.sqlite"
    listing = run([str(tmp_path / "venv" / "bin" / "supervm"), "backends"]).stdout
    assert "supervm-mariadb" in listing and "supervm-sql" in listing
    assert "postgres" not in listing


def test_pip_install_postgres_extra_still_serves_sqlite(wheelhouse: Path, tmp_path: Path) -> None:
    python = install(wheelhouse, tmp_path / "venv", "supervm[postgres]==0.1.0")
    report = json.loads(run([python, "-c", SQL_CHECK, f"sqlite:///{tmp_path}/kv.db"]).stdout)
    assert report["pairs"] == [["6b", "76"], ["ff", ""]]
    assert report["class"] == "supervm_sql.sqlite"
    assert report["present"] == ["psycopg", "sqlalchemy"]
    assert report["backends"] == ["memory", "postgresql", "postgresql+psycopg", "sqlite"]
    # The names supervm_postgres always had still import from it.
    names = "from supervm_postgres import SQLStorage, SQLiteStorage, PostgresStorage, MAX_KEY_SIZE"
    old = (
        "from supervm_postgres.sql import SQLStorage; "
        "from supervm_postgres.sqlite import SQLiteStorage; "
        "from supervm_postgres.storage import DEFAULT_TABLE"
    )
    run([python, "-c", f"{names}; {old}"])


def test_pip_install_sqlite_extra_brings_sqlalchemy_only(wheelhouse: Path, tmp_path: Path) -> None:
    python = install(wheelhouse, tmp_path / "venv", "supervm[sqlite]==0.1.0")
    report = json.loads(run([python, "-c", SQL_CHECK, f"sqlite:///{tmp_path}/kv.db"]).stdout)
    assert report["pairs"] == [["6b", "76"], ["ff", ""]]
    assert report["present"] == ["sqlalchemy"]
    assert report["backends"] == ["memory", "sqlite"]


NODE_CHECK = r"""
import importlib.metadata, importlib.util, json, sys
import supervm
from supervm_node import KeyPair, verify

key = KeyPair.generate()
print(json.dumps({
    "verified": verify(key.public_key, b"m", key.sign(b"m")),
    "backends": sorted(supervm.available_backends()),
    "present": sorted(m for m in DRIVERS if importlib.util.find_spec(m) is not None),
    "dists": sorted(
        d.metadata["Name"] for d in importlib.metadata.distributions()
        if d.metadata["Name"].startswith("supervm")
    ),
    "nacl": importlib.metadata.version("pynacl"),
    "web": sorted(m for m in ("starlette", "uvicorn", "prometheus_client")
                  if importlib.util.find_spec(m) is not None),
}))
""".replace("DRIVERS", repr(DRIVERS))


def test_pip_install_node_extra_brings_the_node_and_pynacl_and_no_back_end(
    wheelhouse: Path, tmp_path: Path
) -> None:
    python = install(wheelhouse, tmp_path / "venv", "supervm[node]==0.1.0")
    report = json.loads(run([python, "-c", NODE_CHECK]).stdout)
    assert report["verified"] is True
    assert report["dists"] == ["supervm", "supervm-core", "supervm-node"]
    assert report["backends"] == ["memory"]
    assert report["present"] == []
    assert tuple(int(part) for part in report["nacl"].split(".")[:2]) >= (1, 5)
    # The node's commands reach the installed console script through the entry point.
    supervm = str(tmp_path / "venv" / "bin" / "supervm")
    key_file = tmp_path / "node.key"
    made = json.loads(run([supervm, "keys", "new", "--out", str(key_file), "--json"]).stdout)
    shown = json.loads(run([supervm, "keys", "show", str(key_file), "--json"]).stdout)
    assert shown == made and len(bytes.fromhex(made["address"])) == 20
    assert report["web"] == ["prometheus_client", "starlette", "uvicorn"]
    # The installed node serves: health, its status page (package data), then stops on SIGTERM.
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    node = subprocess.Popen(
        [supervm, "node", "--store", "memory://", "--rpc", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert json.load(r)["ok"] is True
                    break
            except OSError:
                assert node.poll() is None and time.monotonic() < deadline, "no node"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert b"<html" in page.read().lower()
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0


def test_wheels_carry_py_typed(wheelhouse: Path) -> None:
    import zipfile

    for dist in (
        "supervm_core",
        "supervm_rocksdb",
        "supervm_leveldb",
        "supervm_lmdb",
        "supervm_sql",
        "supervm_postgres",
        "supervm_mariadb",
        "supervm_node",
    ):
        (wheel,) = wheelhouse.glob(f"{dist}-0.1.0-*.whl")
        package = "supervm" if dist == "supervm_core" else dist
        assert f"{package}/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_meta_distribution_has_no_code(wheelhouse: Path) -> None:
    import zipfile

    (wheel,) = wheelhouse.glob("supervm-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(".dist-info/" in name for name in names), names
    assert sys.version_info >= (3, 11)
