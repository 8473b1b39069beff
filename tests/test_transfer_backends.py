"""Snapshots and block files move a chain between every pair of a ring of back ends.

The ring memory -> rocksdb -> leveldb -> lmdb -> sqlite -> postgresql -> mariadb
-> memory makes each back end the source once and the target once. On each
source a deterministic token chain (deploy, mint, transfers that revert and
delete drained balances) is built to height ``HEAD`` and

- a snapshot at the head and one at the past height ``PAST`` are imported into
  fresh target stores: each copy has the source's head, identity, headers,
  state pairs, ``chain.at(H)`` reads and proofs that verify under the source's
  roots, and nothing below its height;
- blocks ``PAST + 1 .. HEAD`` are exported to a block file and applied to the
  past copy by write sets, and to a target that executed blocks ``1 .. PAST``
  itself with ``reexecute``; both end equal to the source, with its history; a
  file that leaves a gap and a store on a fork are refused, changing nothing;
- every copy then executes the chain's next blocks and gets the source's headers.

Where both stores can be opened by URL (every pair but those with memory), the
transfers go through ``supervm.cli.main`` with ``--json`` and the JSON is
checked; one more round trip runs ``python -m supervm`` in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import supervm
from supervm.chain import Chain, Head, PrunedHeightError
from supervm.cli import main as cli_main
from supervm.snapshot import export_snapshot, import_snapshot
from supervm.sync import SyncError, apply_blocks, export_blocks, read_block_manifest

from .transfer_support import (
    TOKEN_NAMESPACE,
    Site,
    extend_token,
    owners_of,
    state_of,
    token_block,
)

ROOT = Path(__file__).resolve().parent.parent
RING = ["memory", "rocksdb", "leveldb", "lmdb", "sqlite", "postgresql", "mariadb"]
PAIRS = [(RING[i], RING[(i + 1) % len(RING)]) for i in range(len(RING))]
#: A seed whose chain drains (deletes) a balance before ``PAST`` that stays gone.
SEED = 5
#: Another seed: its block ``PAST`` forks the chain.
FORK_SEED = 8
PAST, HEAD, NEXT = 5, 8, 10
CHUNK = 1024


@pytest.fixture(scope="module")
def reference() -> Iterator[Chain]:
    """The chain built on a memory store in this process (an archive: every height kept)."""
    chain = Chain(supervm.open_storage("memory://"), threads=1)
    extend_token(chain, SEED, NEXT)
    yield chain
    chain.close()
    chain.storage.close()


@pytest.fixture(scope="module")
def probe_keys(reference: Chain) -> list[bytes]:
    """Every state key the chain ever held (some deleted by later blocks), and one absent."""
    keys: set[bytes] = set()
    for height in range(1, NEXT + 1):
        keys.update(k for k, _ in reference.at(height).scan())
    deleted = keys - {k for k, _ in reference.at(HEAD).scan()}
    assert deleted, "the chain must delete a key: its proofs of absence are checked"
    return [*sorted(keys), TOKEN_NAMESPACE + b"\x00never-written"]


def check_copy(
    copy: Chain, ref: Chain, probes: list[bytes], height: int, horizon: int | None
) -> None:
    """``copy`` stands at ``height`` of ``ref``'s chain with its state, reads and proofs.

    ``horizon``: the copy's lowest readable height (a snapshot's height), or ``None``
    for a copy that keeps every height it executed.
    """
    header = ref.header(height)
    assert header is not None
    assert copy.head() == (height, header.hash, header.state_root)
    assert copy.identity() == ref.identity()
    assert copy.header(height + 1) is None
    for h in range(1, height + 1):
        assert copy.header(h) == ref.header(h), h
        assert copy.height_of(ref.header(h).hash) == h  # type: ignore[union-attr]
    state = state_of(copy.storage)
    assert state == dict(ref.at(height).scan())
    assert copy.tree.check(height) == len(state)
    assert owners_of(copy.storage) == owners_of(ref.storage)
    low = height if horizon is None else horizon
    if horizon is not None:
        assert copy.horizon() == horizon
        if horizon > 1:
            with pytest.raises(PrunedHeightError):
                copy.at(horizon - 1)
    for h in range(low, height + 1):
        view, want = copy.at(h), ref.at(h)
        assert dict(view.scan()) == dict(want.scan()), h
        assert dict(view.scan(TOKEN_NAMESPACE)) == dict(want.scan(TOKEN_NAMESPACE)), h
        for key in probes:
            assert view.get(key) == want.get(key), (h, key)
    wrong_root = ref.header(height - 1).state_root  # type: ignore[union-attr]
    for key in probes:
        proof = copy.prove(key)
        assert proof.value == ref.at(height).get(key), key
        assert proof.height == height and proof.state_root == header.state_root
        assert proof.verify(header.state_root), key
        if proof.value is not None:
            tampered = replace(proof, value=proof.value + b"\x01")
            assert not tampered.verify(header.state_root)
    changed = [k for k in probes if ref.at(height).get(k) != ref.at(height - 1).get(k)]
    if changed:
        assert not copy.prove(changed[0]).verify(wrong_root)


class Transfers:
    """Snapshot and sync commands run through the CLI (``--json``) or the API, same results.

    Every method returns what ``supervm ... --json`` prints; on the API path the
    fields the tests look at are built from the API's reports.
    """

    def __init__(self, capsys: pytest.CaptureFixture[str], use_cli: bool) -> None:
        self.capsys = capsys
        self.use_cli = use_cli

    def cli(self, *argv: str) -> dict[str, Any]:
        self.capsys.readouterr()
        status = cli_main([*argv, "--json"])
        captured = self.capsys.readouterr()
        assert status == 0, captured.err
        lines = captured.out.strip().splitlines()
        assert len(lines) == 1, captured.out
        result: dict[str, Any] = json.loads(lines[0])
        return result

    def cli_fails(self, *argv: str) -> str:
        self.capsys.readouterr()
        status = cli_main([*argv, "--json"])
        captured = self.capsys.readouterr()
        assert status == 1 and captured.out == "", captured
        return captured.err

    def snapshot_export(self, site: Site, out: Path, height: int | None = None) -> dict[str, Any]:
        if self.use_cli:
            at = [] if height is None else ["--height", str(height)]
            args = ["--store", site.url, *at, "--out", str(out), "--chunk-size", str(CHUNK)]
            info = self.cli("snapshot", "export", *args)
            assert info["store"] == site.url and info["file"] == str(out)
            assert info["seconds"] >= 0 and info["keys_per_second"] >= 0
            return info
        with site.open() as storage:
            return export_snapshot(storage, out, height=height, chunk_bytes=CHUNK).describe()

    def snapshot_import(self, path: Path, site: Site, chain: bytes) -> dict[str, Any]:
        if self.use_cli:
            info = self.cli("snapshot", "import", str(path), "--store", site.url,
                            "--expect-chain", chain.hex())  # fmt: skip
            assert info["store"] == site.url and info["file"] == str(path)
            return info
        with site.open() as storage:
            report = import_snapshot(path, storage, expect_chain=chain)
        return {**report.manifest.describe(), "resumed_chunks": report.resumed_chunks,
                "height": report.head.height, "block_hash": report.head.block_hash.hex(),
                "state_root": report.head.state_root.hex()}  # fmt: skip

    def sync_export(self, site: Site, out: Path, first: int, last: int) -> dict[str, Any]:
        if self.use_cli:
            args = ["--store", site.url, "--from", str(first), "--to", str(last)]
            info = self.cli("sync", "export", *args, "--out", str(out))
            assert info["store"] == site.url and info["file"] == str(out)
            return info
        with site.open() as storage:
            return export_blocks(storage, out, from_height=first, to_height=last).describe()

    def sync_apply(self, path: Path, site: Site, reexecute: bool = False) -> dict[str, Any]:
        if self.use_cli:
            flag = ["--reexecute"] if reexecute else []
            info = self.cli("sync", "apply", str(path), "--store", site.url, *flag)
            assert info["store"] == site.url and info["file"] == str(path)
            return info
        with site.open() as storage:
            report = apply_blocks(path, storage, reexecute=reexecute, mode="sequential")
        return {"applied": report.applied, "skipped": report.skipped, "keys": report.keys,
                "reexecuted": report.reexecuted, "height": report.head.height,
                "block_hash": report.head.block_hash.hex(),
                "state_root": report.head.state_root.hex()}  # fmt: skip

    def sync_refused(self, path: Path, site: Site, why: str) -> None:
        if self.use_cli:
            err = self.cli_fails("sync", "apply", str(path), "--store", site.url)
            assert why in err
            return
        with site.open() as storage, pytest.raises(SyncError, match=why):
            apply_blocks(path, storage)


def head_at(chain: Chain, height: int) -> Head:
    header = chain.header(height)
    assert header is not None
    return Head(height, header.hash, header.state_root)


def head_fields(chain: Chain, height: int) -> dict[str, Any]:
    header = chain.header(height)
    assert header is not None
    return {"height": height, "block_hash": header.hash.hex(),
            "state_root": header.state_root.hex()}  # fmt: skip


@pytest.mark.parametrize(
    ("source_backend", "target_backend"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS]
)
def test_round_trip(
    source_backend: str,
    target_backend: str,
    tmp_path: Path,
    reference: Chain,
    probe_keys: list[bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sites: list[Site] = []

    def site(backend: str, name: str) -> Site:
        made = Site(backend, tmp_path / name)
        sites.append(made)
        return made

    try:
        source = site(source_backend, "source")
        with source.chain() as chain:
            extend_token(chain, SEED, HEAD)
            assert chain.head() == head_at(reference, HEAD)
            assert state_of(chain.storage) == dict(reference.at(HEAD).scan())
            assert chain.header(HEAD) == reference.header(HEAD)
        ident = reference.identity()
        head_copy, past_copy = site(target_backend, "head"), site(target_backend, "past")
        replayed, forked = site(target_backend, "replay"), site(target_backend, "fork")
        run = Transfers(capsys, use_cli=source.cli and head_copy.cli)
        keys_at = {h: len(dict(reference.at(h).scan())) for h in range(1, NEXT + 1)}

        # Snapshots at the head and at a past height.
        snaps = {}
        for height, name in ((HEAD, "head"), (PAST, "past"), (PAST - 1, "fork")):
            out = tmp_path / f"{name}.snap"
            info = run.snapshot_export(source, out, None if height == HEAD else height)
            assert {k: info[k] for k in head_fields(reference, height)} == head_fields(
                reference, height
            )
            assert info["chain"] == ident.hex() and info["keys"] == keys_at[height]
            assert info["headers"] == height and info["chunks"] > 3
            snaps[name] = (out, info)
        for copy, name, height in ((head_copy, "head", HEAD), (past_copy, "past", PAST)):
            out, exported = snaps[name]
            info = run.snapshot_import(out, copy, ident)
            assert info["resumed_chunks"] == 0 and info["snapshot"] == exported["snapshot"]
            assert {k: info[k] for k in ("height", "block_hash", "state_root")} == head_fields(
                reference, height
            )
            with copy.chain() as chain:
                check_copy(chain, reference, probe_keys, height, horizon=height)

        # Blocks PAST+1..HEAD: by write sets onto the past copy.
        blocks = tmp_path / "blocks"
        info = run.sync_export(source, blocks, PAST, HEAD)
        assert (info["from"], info["to"], info["blocks"]) == (PAST, HEAD, HEAD - PAST)
        assert info["chain"] == ident.hex()
        assert info["digest"] == read_block_manifest(blocks).digest.hex()
        assert info["from_hash"] == reference.header(PAST).hash.hex()  # type: ignore[union-attr]
        assert info["to_hash"] == reference.header(HEAD).hash.hex()  # type: ignore[union-attr]
        gap = tmp_path / "gap-blocks"
        run.sync_export(source, gap, PAST + 1, HEAD)
        run.sync_refused(gap, past_copy, "gap")
        with past_copy.chain() as chain:
            assert chain.head() == head_at(reference, PAST)
        info = run.sync_apply(blocks, past_copy)
        assert (info["applied"], info["skipped"], info["reexecuted"]) == (HEAD - PAST, 0, False)
        assert info["keys"] > 0
        assert {k: info[k] for k in ("height", "block_hash", "state_root")} == head_fields(
            reference, HEAD
        )
        with past_copy.chain() as chain:
            check_copy(chain, reference, probe_keys, HEAD, horizon=PAST)
            for h in range(PAST + 1, HEAD + 1):
                assert chain.block(h) == reference.block(h)
        again = run.sync_apply(blocks, past_copy)
        assert (again["applied"], again["skipped"]) == (0, HEAD - PAST)

        # ... and re-executed by a target that executed blocks 1..PAST itself.
        with replayed.chain() as chain:
            extend_token(chain, SEED, PAST)
        info = run.sync_apply(blocks, replayed, reexecute=True)
        assert (info["applied"], info["skipped"], info["reexecuted"]) == (HEAD - PAST, 0, True)
        with replayed.chain() as chain:
            check_copy(chain, reference, probe_keys, HEAD, horizon=None)
            for h in range(1, HEAD + 1):
                assert chain.block(h) == reference.block(h)
                assert dict(chain.at(h).scan()) == dict(reference.at(h).scan())

        # A store whose block PAST is another: the file's first parent is not its block.
        run.snapshot_import(snaps["fork"][0], forked, ident)
        with forked.chain() as chain:
            chain.apply(token_block(FORK_SEED, PAST), mode="sequential")
            fork_head = chain.head()
            assert fork_head.height == PAST
            assert fork_head.block_hash != reference.header(PAST).hash  # type: ignore[union-attr]
            fork_state = state_of(chain.storage)
        run.sync_refused(blocks, forked, "fork")
        with forked.chain() as chain:
            assert chain.head() == fork_head and state_of(chain.storage) == fork_state

        # Every copy continues the chain as the source does.
        with source.chain() as chain:
            extend_token(chain, SEED, NEXT)
            source_next = [chain.header(h) for h in range(HEAD + 1, NEXT + 1)]
        assert source_next == [reference.header(h) for h in range(HEAD + 1, NEXT + 1)]
        for copy in (head_copy, past_copy, replayed):
            with copy.chain() as chain:
                extend_token(chain, SEED, NEXT)
                assert [chain.header(h) for h in range(HEAD + 1, NEXT + 1)] == source_next
                assert state_of(chain.storage) == dict(reference.at(NEXT).scan())
                assert chain.tree.check(NEXT) == keys_at[NEXT]
    finally:
        for made in reversed(sites):
            made.drop()


def test_python_m_supervm_round_trip(tmp_path: Path, reference: Chain) -> None:
    """``python -m supervm`` snapshot export/import and sync export/apply, in subprocesses."""
    source, target = Site("sqlite", tmp_path / "source"), Site("lmdb", tmp_path / "target")
    with source.chain() as chain:
        extend_token(chain, SEED, HEAD)
    env = {k: v for k, v in os.environ.items() if k != "SUPERVM_STORE"}
    env["SUPERVM_HOME"] = str(tmp_path / "home")

    def supervm_json(*args: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "supervm", *args, "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    snap, blocks = tmp_path / "past.snap", tmp_path / "blocks"
    exported = supervm_json("snapshot", "export", "--store", source.url, "--height", str(PAST),
                            "--out", str(snap), "--chunk-size", "1024")  # fmt: skip
    assert exported["height"] == PAST and exported["keys"] == len(dict(reference.at(PAST).scan()))
    imported = supervm_json("snapshot", "import", str(snap), "--store", target.url)
    assert imported["snapshot"] == exported["snapshot"] and imported["resumed_chunks"] == 0
    assert imported["height"] == PAST
    assert imported["state_root"] == reference.header(PAST).state_root.hex()  # type: ignore[union-attr]
    info = supervm_json("sync", "export", "--store", source.url, "--from", str(PAST),
                        "--out", str(blocks))  # fmt: skip
    assert (info["from"], info["to"], info["blocks"]) == (PAST, HEAD, HEAD - PAST)
    applied = supervm_json("sync", "apply", str(blocks), "--store", target.url, "--reexecute")
    assert (applied["applied"], applied["skipped"], applied["reexecuted"]) == (3, 0, True)
    assert applied["block_hash"] == reference.header(HEAD).hash.hex()  # type: ignore[union-attr]
    head = supervm_json("head", "--store", target.url)
    assert (head["height"], head["horizon"]) == (HEAD, PAST)
    with target.chain() as chain:
        check_copy(chain, reference, [], HEAD, horizon=PAST)
