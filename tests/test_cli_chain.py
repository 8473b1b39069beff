"""supervm demo / block, as a user runs them."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from .conftest import run_supervm as supervm

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "examples" / "contracts"
PACKAGED_TOKEN = ROOT / "supervm-core" / "src" / "supervm" / "contracts" / "token.wasm"
ALICE, BOB = "0a" * 20, "0b" * 20
HEIGHT_KEY = b"meta/height".hex()


def header_key(height: int) -> str:
    return (b"meta/header/" + struct.pack(">Q", height)).hex()


def stored(key_hex: str, store: str, home: Path) -> str | None:
    """A value of the store in hex (None when the key is absent)."""
    out = supervm("kv", "--store", store, "--hex", "get", key_hex, home=home)
    if out.returncode == 1 and "not found" in out.stderr:
        return None
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_packaged_token_is_the_example() -> None:
    assert PACKAGED_TOKEN.read_bytes() == (CONTRACTS / "token.wasm").read_bytes(), (
        "supervm/contracts/token.wasm must be a copy of examples/contracts/token.wasm"
    )


def test_demo_runs_twice_and_continues_the_chain(tmp_path: Path) -> None:
    first = supervm("demo", "--txs", "300", home=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == "", "no progress bar when stderr is not a terminal"
    out = first.stdout
    # Block 1 deploys the token, block 2 mints, block 3 holds the transfers.
    assert "block 2 minted 1,000,000,000 each to 1,000 of them" in out
    assert "block 3: 300 transfers" in out
    assert "agreement:   yes" in out
    assert "committed block 3 " in out and ", state root " in out
    assert "parallel:" in out and "sequential:" in out and "tx/s" in out
    assert "best of 3 alternating runs per mode, after a warm-up" in out
    assert (tmp_path / "rocksdb").is_dir(), "the demo runs on the embedded default store"

    second = supervm(
        "demo", "--txs", "300", "--seed", "7", "--rounds", "2", "--json", home=tmp_path
    )
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(second.stdout)
    assert report["agree"] is True and report["committed"] is True
    assert report["setup"] is None, "accounts minted by the first run need no new mint"
    assert report["block"] == report["height"] == 4
    assert report["seed"] == 7 and report["transactions"] == 300 and report["rounds"] == 2
    assert sum(report["statuses"].values()) == 300
    assert report["ok"] + report["reverted"] == 300 and report["ok"] > 250
    assert set(report["failures"]) <= {"reverted: insufficient balance"}
    for side in ("parallel", "sequential"):
        assert report[side]["tps"] > 0 and report[side]["seconds"] > 0
    assert report["sequential"]["mode"] == "sequential"
    parallel = report["parallel"]
    assert parallel["mode"] in ("parallel", "sequential")
    assert parallel["executions"] == 300 + parallel["re_executions"]
    if parallel["mode"] == "sequential":
        assert parallel["fallback_reason"]
    # What the summary reports is what the store holds.
    store = report["store"]
    assert stored(HEIGHT_KEY, store, tmp_path) == struct.pack(">Q", 4).hex()
    header = bytes.fromhex(stored(header_key(4), store, tmp_path) or "")
    assert header[-64:-32].hex() == report["state_root"]
    supply = supervm("call", report["contract"], "total_supply", "--view", "--store", store,
                     "--json", home=tmp_path)  # fmt: skip
    assert json.loads(supply.stdout)["return_data"] == struct.pack("<Q", 1000 * 10**9).hex()
    assert stored(HEIGHT_KEY, store, tmp_path) == struct.pack(">Q", 4).hex(), "--view commits"


def test_demo_on_another_store_and_bad_arguments(tmp_path: Path) -> None:
    store = f"lmdb://{tmp_path}/chain"
    out = supervm("demo", "--txs", "50", "--accounts", "5", "--threads", "3", "--store", store,
                  "--json", home=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["store"] == store and report["height"] == 3 and report["agree"]
    assert report["setup"] == {"height": 2, "minted": 5}
    assert not (tmp_path / "rocksdb").exists()

    unknown = supervm("demo", "--txs", "10", "--store", "nope://x", home=tmp_path)
    assert unknown.returncode == 1
    assert "no storage back end for URL scheme 'nope'" in unknown.stderr
    zero = supervm("demo", "--txs", "0", home=tmp_path)
    assert zero.returncode != 0 and "--txs must be at least 1" in zero.stderr


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def counter_block(tmp_path: Path) -> Path:
    shutil.copy(CONTRACTS / "counter.wasm", tmp_path / "counter.wasm")
    return write_lines(tmp_path / "block.jsonl", [
        {"deploy": "counter.wasm", "as": "counter"},
        {"assign": {"contract": "counter", "key_text": "counter", "owner": ALICE}},
        {"contract": "counter", "method": "increment", "sender": ALICE, "owned": True},
        {"contract": "counter", "method": "increment", "sender": ALICE, "owned": True},
        {"contract": "counter", "method": "increment", "sender": BOB},
        {"contract": "counter", "method": "get", "sender": BOB},
    ])  # fmt: skip


def test_block_file(tmp_path: Path) -> None:
    txs = counter_block(tmp_path)
    reports = {}
    for mode in ("parallel", "sequential"):
        store = f"rocksdb://{tmp_path}/{mode}"
        out = supervm("block", str(txs), "--mode", mode, "--timestamp", "1000", "--store", store,
                      "--json", home=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr
        reports[mode] = report = json.loads(out.stdout)
        # Block 1 deploys the counter; the file's calls are block 2.
        assert report["height"] == 2 and report["transactions"] == 4
        assert [r["line"] for r in report["receipts"]] == [3, 4, 5, 6]
        statuses = [r["status"] for r in report["receipts"]]
        # BOB may not write the counter ALICE owns; everyone may read it.
        assert statuses == ["ok", "ok", "forbidden", "ok"], report["receipts"]
        assert report["receipts"][3]["return_data"] == struct.pack("<Q", 2).hex()
        assert report["deployed"][0]["line"] == 1
        header = bytes.fromhex(stored(header_key(2), store, tmp_path) or "")
        assert header[-64:-32].hex() == report["state_root"]
        assert header[-96:-64].hex() == report["transactions_root"]
        assert header[-32:].hex() == report["receipts_root"]
    assert reports["parallel"]["execution"]["owned_fast_path"] == 2
    assert reports["sequential"]["execution"]["mode"] == "sequential"
    for field in ("state_root", "block_hash", "transactions_root", "receipts_root", "receipts"):
        assert reports["parallel"][field] == reports["sequential"][field]

    # The next block continues the chain; the human summary names it.
    again = write_lines(tmp_path / "again.jsonl", [
        {"contract": reports["parallel"]["deployed"][0]["address"], "method": "increment",
         "sender": ALICE, "owned": True},
    ])  # fmt: skip
    out = supervm("block", str(again), "--store", f"rocksdb://{tmp_path}/parallel", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "line 1: ok, gas " in out.stdout
    assert "block 3: 1 transaction: 1 ok" in out.stdout
    assert "state root: " in out.stdout and "block hash: " in out.stdout


def test_block_on_the_default_store(tmp_path: Path) -> None:
    out = supervm("block", str(counter_block(tmp_path)), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "line 1: deployed counter.wasm at " in out.stdout
    assert "line 5: forbidden, gas " in out.stdout
    assert "block 2: 4 transactions: 3 ok, 1 forbidden" in out.stdout
    assert (tmp_path / "rocksdb").is_dir()


def test_block_errors_name_the_problem(tmp_path: Path) -> None:
    store = f"rocksdb://{tmp_path}/db"
    missing = supervm("block", str(tmp_path / "nope.jsonl"), "--store", store, home=tmp_path)
    assert missing.returncode == 1 and "nope.jsonl: no such file" in missing.stderr

    shutil.copy(CONTRACTS / "counter.wasm", tmp_path / "counter.wasm")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"deploy": "counter.wasm", "as": "counter"}\n'
        '{"contract": "counter", "method": "increment"}\n'
        "{not json\n"
    )
    bad = supervm("block", str(broken), "--store", store, home=tmp_path)
    assert bad.returncode == 1 and "broken.jsonl:3: not valid JSON" in bad.stderr
    # The file was refused as a whole, before the store was opened: nothing was made.
    assert not (tmp_path / "db").exists()
    scan = supervm("kv", "--store", store, "scan", home=tmp_path)
    assert scan.returncode == 1 and str(tmp_path / "db") in scan.stderr

    cases = {
        '{"contract": "00", "method": "get", "height": 5}': "height and timestamp are set by",
        '{"contract": "00", "method": "get", "owned": "yes"}': "owned must be true or false",
        '{"contract": "zz", "method": "get"}': "contract 'zz' is not hexadecimal",
        '{"deploy": "missing.wasm"}': "cannot read",
        '{"assign": {"contract": "00", "owner": "0a"}}': "assign needs 'contract', 'owner'",
    }
    path = tmp_path / "case.jsonl"
    for line, message in cases.items():
        path.write_text('{"contract": "00", "method": "get"}\n' + line + "\n")
        out = supervm("block", str(path), "--store", store, home=tmp_path)
        assert out.returncode == 1, (line, out.stdout)
        assert f"case.jsonl:2: {message}" in out.stderr, (line, out.stderr)
    path.write_text("# only a comment\n")
    empty = supervm("block", str(path), "--store", store, home=tmp_path)
    assert empty.returncode == 1 and "case.jsonl: no calls" in empty.stderr
    assert not (tmp_path / "db").exists()

    good = write_lines(tmp_path / "good.jsonl", [{"contract": "00" * 20, "method": "get"}])
    unknown = supervm("block", str(good), "--store", "nope://x", home=tmp_path)
    assert unknown.returncode == 1
    assert "no storage back end for URL scheme 'nope'" in unknown.stderr


def test_run_refuses_block_only_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "run.jsonl", [
        {"contract": "00" * 20, "method": "get", "owned": True},
    ])  # fmt: skip
    out = supervm("run", str(path), "--store", "memory://", home=tmp_path)
    assert (
        out.returncode == 1 and "run.jsonl:1: 'owned' is only allowed in block files" in out.stderr
    )


def test_demo_draws_progress_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys
    import threading

    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while the demo runs, so a full pty never blocks it
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {k: v for k, v in os.environ.items() if k != "SUPERVM_STORE"}
    env.update(SUPERVM_HOME=str(tmp_path), COLUMNS="100", TERM="xterm")
    proc = subprocess.run(
        [sys.executable, "-m", "supervm", "demo", "--txs", "2000", "--rounds", "1"],
        stdout=subprocess.PIPE, stderr=follower, env=env, timeout=300,
    )  # fmt: skip
    os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "sequential" in text and "/2000" in text, text[-2000:]
