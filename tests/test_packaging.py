"""Install ``supervm[rocksdb]`` from built wheels with plain pip, as a user would."""

from __future__ import annotations

import json
import sys
import venv
from pathlib import Path

import pytest

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


def test_wheels_carry_py_typed(wheelhouse: Path) -> None:
    import zipfile

    for dist in (
        "supervm_core",
        "supervm_rocksdb",
        "supervm_leveldb",
        "supervm_lmdb",
        "supervm_postgres",
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
