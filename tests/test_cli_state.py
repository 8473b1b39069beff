"""supervm kv --height / prove / verify / prune / revert / head, as a user runs them."""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import run_supervm as supervm

ROOT = Path(__file__).resolve().parent.parent
TOKEN_WASM = ROOT / "examples" / "contracts" / "token.wasm"
ALICE, BOB, CAROL = "0a" * 20, "0b" * 20, "0c" * 20

#: The chain the module's tests share: (sender, recipient, amount) of each block's call
#: after block 1 (deploy) and block 2 (mint 1000 to ALICE).
TRANSFERS = [(ALICE, BOB, 100), (BOB, CAROL, 30), (ALICE, CAROL, 200), (CAROL, ALICE, 10)]
HEAD = 2 + len(TRANSFERS)


def u64(amount: int) -> str:
    return struct.pack("<Q", amount).hex()


def call(method: str, sender: str, to: str, amount: int) -> dict[str, Any]:
    return {"contract": "token", "method": method, "sender": sender, "input": to + u64(amount)}


def ok(*args: str, home: Path) -> str:
    out = supervm(*args, home=home)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


@dataclass
class Chain:
    """The shared chain: its store, token and what was read after each block."""

    dir: Path
    store: str
    token: str
    #: Height -> the token's balances (store key hex -> value hex), read right after it.
    balances: dict[int, dict[str, str]]
    #: Height -> `supervm head --json` right after it.
    heads: dict[int, dict[str, Any]]

    def key(self, account: str) -> str:
        """The store key (hex) of ``account``'s balance."""
        return b"c".hex() + self.token + b"bal/".hex() + account

    def copy(self, to: Path) -> str:
        """A copy of the store (for the tests that change it); its URL."""
        shutil.copytree(self.dir / "db", to / "db")
        return f"rocksdb://{to}/db"


def scan_balances(store: str, token: str, home: Path, *extra: str) -> dict[str, str]:
    prefix = b"c".hex() + token + b"bal/".hex()
    out = ok("kv", "scan", prefix, "--hex", "--store", store, *extra, home=home)
    return dict(line.split("\t") for line in out.splitlines())


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Token deployed (block 1), 1000 minted to ALICE (2), then one transfer a block."""
    base = tmp_path_factory.mktemp("chain")
    shutil.copy(TOKEN_WASM, base / "token.wasm")
    store = f"rocksdb://{base}/db"
    steps: list[list[dict[str, Any]]] = [
        [{"deploy": "token.wasm", "as": "token"}, call("mint", ALICE, ALICE, 1000)],
    ]
    steps += [[call("transfer", *transfer)] for transfer in TRANSFERS]
    token = ""
    balances: dict[int, dict[str, str]] = {}
    heads: dict[int, dict[str, Any]] = {}
    for number, lines in enumerate(steps):
        path = base / f"step{number}.jsonl"
        if token:
            lines = [{**line, "contract": token} for line in lines]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out = ok("run", str(path), "--store", store, "--json", home=base)
        results = [json.loads(line) for line in out.splitlines()]
        token = token or results[0]["address"]
        assert all(r.get("status", "ok") == "ok" for r in results), results
        head = json.loads(ok("head", "--store", store, "--json", home=base))
        heads[head["height"]] = head
        balances[head["height"]] = scan_balances(store, token, base)
    assert sorted(heads) == list(range(2, HEAD + 1))
    return Chain(base, store, token, balances, heads)


def header_root(chain: Chain, height: int) -> str:
    return str(chain.heads[height]["state_root"])


# -- kv at a height ------------------------------------------------------------------------


def test_kv_get_and_scan_at_past_heights(chain: Chain, tmp_path: Path) -> None:
    # The balances did change from block to block (the test would show nothing otherwise).
    assert len({json.dumps(b, sort_keys=True) for b in chain.balances.values()}) == HEAD - 1
    alice = chain.key(ALICE)
    for height, balances in chain.balances.items():
        at = scan_balances(chain.store, chain.token, tmp_path, "--height", str(height))
        assert at == balances, height
        got = ok("kv", "get", alice, "--hex", "--height", str(height), "--store", chain.store,
                 home=tmp_path)  # fmt: skip
        assert got.strip() == balances[alice]
    assert chain.balances[3][alice] == u64(900)
    # Without --height: the latest state, as before.
    assert scan_balances(chain.store, chain.token, tmp_path) == chain.balances[HEAD]

    before = supervm("kv", "get", chain.key(BOB), "--hex", "--height", "2", "--store", chain.store,
                     home=tmp_path)  # fmt: skip
    assert before.returncode == 1 and "not found at height 2" in before.stderr
    empty = ok("kv", "scan", "--height", "0", "--store", chain.store, home=tmp_path)
    assert empty == "", "nothing is in the state before the first block"

    above = supervm("kv", "get", alice, "--hex", "--height", "99", "--store", chain.store,
                    home=tmp_path)  # fmt: skip
    assert above.returncode == 1 and f"height 99 is above the head, {HEAD}" in above.stderr
    meta = supervm("kv", "get", "meta/height", "--height", "3", "--store", chain.store,
                   home=tmp_path)  # fmt: skip
    assert meta.returncode == 1 and "is chain metadata, not state" in meta.stderr
    negative = supervm("kv", "scan", "--height", "-1", "--store", chain.store, home=tmp_path)
    assert negative.returncode == 2 and "'-1' is not a height" in negative.stderr
    missing = supervm("kv", "get", "k", "--height", "1", "--store", f"rocksdb://{tmp_path}/no",
                      home=tmp_path)  # fmt: skip
    assert missing.returncode == 1 and str(tmp_path / "no") in missing.stderr
    assert not (tmp_path / "no").exists()


# -- prove and verify ------------------------------------------------------------------------


def prove(chain: Chain, account: str, height: int, *extra: str, home: Path) -> str:
    return ok("prove", b"bal/".hex() + account, "--hex", "--contract", chain.token,
              "--height", str(height), "--store", chain.store, *extra, home=home)  # fmt: skip


def field(text: str, name: str) -> str:
    """The value of ``name:`` in a command's human output."""
    (line,) = [line for line in text.splitlines() if line.startswith(name + ":")]
    return line.split(":", 1)[1].strip()


def test_prove_inclusion_and_verify_the_file(chain: Chain, tmp_path: Path) -> None:
    proof_file = tmp_path / "alice.proof"
    out = prove(chain, ALICE, 3, "--out", str(proof_file), home=tmp_path)
    assert field(out, "kind") == "inclusion"
    assert field(out, "value") == u64(900) == chain.balances[3][chain.key(ALICE)]
    assert field(out, "key") == chain.key(ALICE)
    assert field(out, "height") == "3"
    assert field(out, "state root") == header_root(chain, 3)
    encoded = proof_file.read_bytes()
    assert field(out, "proof") == encoded.hex()
    assert field(out, "proof size") == f"{len(encoded)} bytes"
    # The same proof for the raw store key.
    raw = ok("prove", chain.key(ALICE), "--hex", "--height", "3", "--store", chain.store,
             home=tmp_path)  # fmt: skip
    assert field(raw, "proof") == encoded.hex()

    # What a light client runs: the file and a root it trusts, no store.
    root = header_root(chain, 3)
    valid = supervm("verify", "--proof-file", str(proof_file), "--root", root, home=tmp_path)
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.splitlines()[-1] == f"valid: {chain.key(ALICE)} = {u64(900)} at height 3"
    assert "given with --root" in valid.stdout and valid.stderr == ""

    wrong = supervm("verify", "--proof-file", str(proof_file), "--root", header_root(chain, 4),
                    home=tmp_path)  # fmt: skip
    assert wrong.returncode == 1 and wrong.stdout.splitlines()[-1].startswith("invalid: ")

    # A byte flipped in the height, the root, the key, the value or the tree proof.
    key_at = 1 + 8 + 32 + 4
    value_at = key_at + len(bytes.fromhex(chain.key(ALICE))) + 1 + 4
    for position in (8, 20, key_at + 3, value_at, len(encoded) - 1):
        flipped = bytearray(encoded)
        flipped[position] ^= 0x01
        bad = tmp_path / "bad.proof"
        bad.write_bytes(bytes(flipped))
        # Height is not under the root: against the store's header the flip shows.
        trusted = ("--store", chain.store) if position == 8 else ("--root", root)
        out = supervm("verify", "--proof-file", str(bad), *trusted, home=tmp_path)
        assert out.returncode == 1, (position, out.stdout, out.stderr)
        assert "invalid: " in out.stdout or "malformed proof" in out.stderr, (position, out)
    truncated = tmp_path / "truncated.proof"
    truncated.write_bytes(encoded[:60])
    out = supervm("verify", "--proof-file", str(truncated), "--root", root, home=tmp_path)
    assert out.returncode == 1 and "truncated.proof: malformed proof: " in out.stderr

    # Against the store's own header at the proof's height.
    stored = supervm("verify", "--proof-file", str(proof_file), "--store", chain.store,
                     home=tmp_path)  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert "header of block 3 in " + chain.store in stored.stdout
    assert stored.stdout.splitlines()[-1].startswith("valid: ")
    # No root and no store (this home holds none): only self-consistency, said so.
    alone = supervm("verify", "--proof-file", str(proof_file), home=tmp_path)
    assert alone.returncode == 0 and "valid: " in alone.stdout
    assert "self-consistent" in alone.stderr and "the proof's own" in alone.stdout


def test_prove_exclusion_and_json_round_trip(chain: Chain, tmp_path: Path) -> None:
    out = prove(chain, CAROL, 3, home=tmp_path)
    assert field(out, "kind") == "exclusion" and field(out, "value") == "absent"
    checked = supervm("verify", "--proof", field(out, "proof"), "--root", header_root(chain, 3),
                      home=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1] == f"valid: {chain.key(CAROL)} absent at height 3"
    # Carol's balance at height 4 is not absent: the exclusion proof fails against that root.
    later = supervm("verify", "--proof", field(out, "proof"), "--root", header_root(chain, 4),
                    home=tmp_path)  # fmt: skip
    assert later.returncode == 1 and "invalid: " in later.stdout

    report = json.loads(prove(chain, CAROL, 4, "--json", home=tmp_path))
    assert report["kind"] == "inclusion" and report["height"] == 4
    assert report["value"] == u64(30) == chain.balances[4][chain.key(CAROL)]
    assert report["key"] == chain.key(CAROL) and report["state_root"] == header_root(chain, 4)
    assert set(report["proof"]) == {"format", "leaf", "siblings"}
    path = tmp_path / "carol.json"
    path.write_text(json.dumps(report))
    out = supervm("verify", "--json-file", str(path), "--root", header_root(chain, 4), "--json",
                  home=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["valid"] is True and verdict["reason"] is None
    assert verdict["root_source"] == "argument" and verdict["value"] == u64(30)
    # The JSON's encoded form decodes to the same proof.
    same = supervm("verify", "--proof", report["encoded"], "--store", chain.store, "--json",
                   home=tmp_path)  # fmt: skip
    assert json.loads(same.stdout)["valid"] is True and json.loads(same.stdout)["store"]

    # Another value in the JSON: invalid (without its now stale "encoded" and "kind").
    forged = {k: v for k, v in report.items() if k not in ("encoded", "kind")}
    path.write_text(json.dumps({**forged, "value": u64(31)}))
    out = supervm("verify", "--json-file", str(path), "--root", header_root(chain, 4), "--json",
                  home=tmp_path)  # fmt: skip
    assert out.returncode == 1 and json.loads(out.stdout)["valid"] is False
    path.write_text(json.dumps({**report, "value": u64(31)}))
    stale = supervm("verify", "--json-file", str(path), home=tmp_path)
    assert stale.returncode == 1 and "malformed proof" in stale.stderr
    path.write_text("{not json")
    broken = supervm("verify", "--json-file", str(path), home=tmp_path)
    assert broken.returncode == 1 and "carol.json: not valid JSON" in broken.stderr


def test_prove_and_verify_errors(chain: Chain, tmp_path: Path) -> None:
    meta = supervm("prove", "meta/height", "--store", chain.store, home=tmp_path)
    assert meta.returncode == 1 and "is chain metadata, not state" in meta.stderr
    short = supervm("prove", "k", "--contract", "0a0b", "--store", chain.store, home=tmp_path)
    assert short.returncode == 1 and "contract address '0a0b' is 2 bytes, not 20" in short.stderr
    above = supervm("prove", "k", "--height", "99", "--store", chain.store, home=tmp_path)
    assert above.returncode == 1 and "above the head" in above.stderr
    missing = supervm("prove", "k", "--store", f"lmdb://{tmp_path}/no", home=tmp_path)
    assert missing.returncode == 1 and not (tmp_path / "no").exists()
    usage = supervm("verify", "--root", "00" * 32, home=tmp_path)
    assert usage.returncode == 2 and "one of the arguments --proof-file" in usage.stderr
    bad_root = supervm("verify", "--proof", "00", "--root", "abcd", home=tmp_path)
    assert bad_root.returncode == 1 and "root 'abcd' is 2 bytes, not 32" in bad_root.stderr
    no_file = supervm("verify", "--proof-file", str(tmp_path / "nope"), home=tmp_path)
    assert no_file.returncode == 1 and "nope: no such file" in no_file.stderr
    # A proof above the store's head cannot be checked against it: said, not guessed.
    proof = field(prove(chain, ALICE, HEAD, home=tmp_path), "proof")
    lmdb = f"lmdb://{tmp_path}/empty"
    ok("kv", "set", "x", "y", "--store", lmdb, home=tmp_path)
    other = supervm("verify", "--proof", proof, "--store", lmdb, home=tmp_path)
    assert other.returncode == 1 and f"has no block at height {HEAD}" in other.stderr


# -- prune, revert, head ------------------------------------------------------------------------


def head(store: str, home: Path) -> dict[str, Any]:
    return json.loads(ok("head", "--store", store, "--json", home=home))  # type: ignore[no-any-return]


def test_prune_keeps_the_last_blocks(chain: Chain, tmp_path: Path) -> None:
    store = chain.copy(tmp_path)
    before = head(store, tmp_path)
    assert before == {**chain.heads[HEAD], "horizon": 0, "keep_blocks": None, "store": store}
    archive = ok("prune", "--store", store, home=tmp_path)
    assert "is an archive" in archive and "nothing pruned" in archive

    report = json.loads(ok("prune", "--keep-blocks", "2", "--store", store, "--json",
                           home=tmp_path))  # fmt: skip
    horizon = HEAD - 2
    assert report["horizon"] == horizon and report["keep_blocks"] == 2 and report["complete"]
    assert report["keys"] > 0 and report["bytes"] > 0
    assert report["change_sets"] > 0 and report["tree_nodes"] > 0
    after = head(store, tmp_path)
    assert after["horizon"] == horizon and after["keep_blocks"] == 2
    assert after["block_hash"] == before["block_hash"]

    alice = chain.key(ALICE)
    pruned = supervm("kv", "get", alice, "--hex", "--height", str(horizon - 1), "--store", store,
                     home=tmp_path)  # fmt: skip
    assert pruned.returncode == 1 and f"height {horizon - 1} is pruned" in pruned.stderr
    kept = ok("kv", "get", alice, "--hex", "--height", str(horizon), "--store", store,
              home=tmp_path)  # fmt: skip
    assert kept.strip() == chain.balances[horizon][alice]
    at_horizon = scan_balances(store, chain.token, tmp_path, "--height", str(horizon))
    assert at_horizon == chain.balances[horizon]
    no_proof = supervm("prove", alice, "--hex", "--height", str(horizon - 1), "--store", store,
                       home=tmp_path)  # fmt: skip
    assert no_proof.returncode == 1 and "pruned" in no_proof.stderr

    refused = supervm("revert", "--to", str(horizon - 1), "--store", store, home=tmp_path)
    assert refused.returncode == 1 and "is pruned" in refused.stderr
    assert head(store, tmp_path) == after, "a refused revert changes nothing"

    # Without --keep-blocks: the store's setting; nothing new to delete.
    again = ok("prune", "--store", store, home=tmp_path)
    assert "keep blocks: 2" in again and f"horizon:     {horizon}" in again
    assert "reclaimed:   0 keys, 0 bytes" in again
    negative = supervm("prune", "--keep-blocks", "-1", "--store", store, home=tmp_path)
    assert negative.returncode == 2 and "is not a number of blocks" in negative.stderr


def test_revert_restores_the_state_read_before(chain: Chain, tmp_path: Path) -> None:
    store = chain.copy(tmp_path)
    report = json.loads(ok("revert", "--to", "3", "--store", store, "--json", home=tmp_path))
    assert report["from_height"] == HEAD and report["to_height"] == 3
    assert report["keys_restored"] > 0 and report["operations"] > 0
    for name in ("height", "block_hash", "state_root"):
        assert report[name] == chain.heads[3][name], name
    assert scan_balances(store, chain.token, tmp_path) == chain.balances[3]
    now = head(store, tmp_path)
    assert now["height"] == 3 and now["block_hash"] == chain.heads[3]["block_hash"]

    above = supervm("revert", "--to", "4", "--store", store, home=tmp_path)
    assert above.returncode == 1 and "height 4 is above the head, 3" in above.stderr
    same = ok("revert", "--to", "3", "--store", store, home=tmp_path)
    assert "nothing to revert" in same and "head:          height 3" in same

    # The chain goes on from the reverted head: a new block 4 with another transfer.
    path = tmp_path / "next.jsonl"
    path.write_text(json.dumps({**call("transfer", ALICE, CAROL, 1), "contract": chain.token}))
    ok("run", str(path), "--store", store, home=tmp_path)
    assert head(store, tmp_path)["height"] == 4
    balances = scan_balances(store, chain.token, tmp_path)
    assert balances[chain.key(CAROL)] == u64(1) and balances[chain.key(ALICE)] == u64(899)

    human = ok("revert", "--to", "2", "--store", store, home=tmp_path)
    assert "from height:   4" in human and "to height:     2" in human
    assert f"block hash:    {chain.heads[2]['block_hash']}" in human
    assert f"state root:    {chain.heads[2]['state_root']}" in human
    assert "keys restored: " in human


def test_head_on_lmdb_built_with_the_python_api(tmp_path: Path) -> None:
    from supervm.chain import Block, Chain, Transaction
    from supervm.registry import open_storage

    url = f"lmdb://{tmp_path}/chain"
    storage = open_storage(url)
    try:
        python_chain = Chain(storage, threads=1, keep_blocks=5)
        token = python_chain.deploy(TOKEN_WASM.read_bytes())
        alice = bytes.fromhex(ALICE)
        mint = Transaction(token, "mint", alice + struct.pack("<Q", 7), sender=alice)
        python_chain.apply(Block(2, 0, (mint,)), mode="sequential")
        expected = python_chain.head()
        python_chain.close()
    finally:
        storage.close()

    report = head(url, tmp_path)
    assert report == {
        "store": url,
        "height": 2,
        "block_hash": expected.block_hash.hex(),
        "state_root": expected.state_root.hex(),
        "horizon": 0,
        "keep_blocks": 5,
    }
    human = ok("head", "--store", url, home=tmp_path)
    assert "height:      2" in human and "keep blocks: 5" in human
    assert "horizon:     0 (heights 0 to 2 can be read)" in human
    # The default store of a home that holds none: an error, and nothing is made.
    for args in (("head",), ("prune", "--keep-blocks", "1"), ("revert", "--to", "0")):
        missing = supervm(*args, home=tmp_path / "home")
        assert missing.returncode == 1 and "supervm: error:" in missing.stderr, args
    assert not (tmp_path / "home").exists()
