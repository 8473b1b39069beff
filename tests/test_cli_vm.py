"""supervm deploy / call / run / build, as a user runs them."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from .conftest import run_supervm as supervm

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "examples" / "contracts"
ALICE, BOB = "0a" * 20, "0b" * 20


def test_deploy_and_call_on_the_default_store(tmp_path: Path) -> None:
    deployed = supervm("deploy", str(CONTRACTS / "token.wasm"), home=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    address = deployed.stdout.strip()
    assert len(bytes.fromhex(address)) == 20
    amount = struct.pack("<Q", 500).hex()
    mint = supervm("call", address, "mint", "--input", ALICE + amount, "--sender", ALICE,
                   home=tmp_path)  # fmt: skip
    assert mint.returncode == 0, mint.stdout + mint.stderr
    assert "status:      ok" in mint.stdout
    # A separate process sees the state: the default store is persistent.
    balance = supervm("call", address, "balance", "--input", ALICE, "--json", home=tmp_path)
    receipt = json.loads(balance.stdout)
    assert receipt["status"] == "ok"
    assert bytes.fromhex(receipt["return_data"]) == struct.pack("<Q", 500)
    failing = supervm("call", address, "transfer", "--input", BOB + struct.pack("<Q", 10**6).hex(),
                      "--sender", ALICE, home=tmp_path)  # fmt: skip
    assert failing.returncode == 1
    assert "reverted" in failing.stdout and "insufficient balance" in failing.stdout


def test_clear_errors(tmp_path: Path) -> None:
    missing = supervm("deploy", str(tmp_path / "nope.wasm"), home=tmp_path)
    assert missing.returncode == 1 and "nope.wasm" in missing.stderr
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"not wasm at all")
    refused = supervm("deploy", str(bad), home=tmp_path)
    assert refused.returncode == 1 and "not valid WebAssembly" in refused.stderr
    not_hex = supervm("call", "zz", "get", home=tmp_path)
    assert not_hex.returncode != 0 and "not hexadecimal" in not_hex.stderr
    no_contract = supervm("call", "00" * 20, "get", "--store", "memory://", home=tmp_path)
    assert no_contract.returncode == 1 and "rejected" in no_contract.stdout


def test_run_a_transaction_file(tmp_path: Path) -> None:
    txs = tmp_path / "txs.jsonl"
    shutil.copy(CONTRACTS / "counter.wasm", tmp_path / "counter.wasm")
    lines = [
        {"deploy": "counter.wasm", "as": "counter"},
        {"contract": "counter", "method": "increment"},
        {"contract": "counter", "method": "increment", "sender": BOB, "gas": 100000},
        {"contract": "counter", "method": "get"},
    ]
    txs.write_text("# a comment\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    out = supervm("run", str(txs), "--store", f"lmdb://{tmp_path}/db", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert results[0]["deployed"] == "counter.wasm"
    assert [r["status"] for r in results[1:]] == ["ok", "ok", "ok"]
    assert bytes.fromhex(results[-1]["return_data"]) == struct.pack("<Q", 2)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"contract": "counter", "method": "get"}\n{not json\n')
    bad = supervm("run", str(broken), "--store", "memory://", home=tmp_path)
    assert bad.returncode == 1
    assert "broken.jsonl:1" in bad.stderr or "broken.jsonl:2" in bad.stderr


def test_build_compiles_c(tmp_path: Path) -> None:
    pytest.importorskip("ziglang")
    source = tmp_path / "counter.c"
    shutil.copy(CONTRACTS / "counter.c", source)
    out = supervm("build", str(source), "-o", str(tmp_path / "out.wasm"), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out.wasm").read_bytes() == (CONTRACTS / "counter.wasm").read_bytes()
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    failed = supervm("build", str(broken), home=tmp_path)
    assert failed.returncode == 1 and "broken.c" in failed.stderr


def test_readme_main_job(tmp_path: Path) -> None:
    out = supervm("run", str(ROOT / "examples" / "transfers.jsonl"), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "deployed contracts/token.wasm" in out.stdout
    assert out.stdout.splitlines()[-1] == "53 calls: 52 ok, 1 reverted"
