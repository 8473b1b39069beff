"""The light client: header sync over JSON-RPC, and proven reads against its own headers.

    python -m bench.light [--blocks 5000] [--senders 200] [--repeats 7] [--reads 1000]
                          [--json PATH]

One chain, built in process (untimed) on a fresh RocksDB store: the workload's deployment
and mints (``supervm_node.workload.Workload``, ``--senders`` senders) in block 1, then
``--blocks`` blocks of one signed transfer each (``Chain.apply``). Then ``supervm node``
serves it on loopback from a child process (``bench.node.NodeProcess``); it produces
nothing meanwhile.

1. ``sync``: a fresh light client (``supervm_node.light.LightClient``) on a fresh SQLite
   file syncs every header, in JSON-RPC batches of 256 and of 64 ``svm_getBlock``
   requests (the sizes alternate in order every repeat). The time runs from ``sync()``
   to its return: the node's answers, the checks of every header (hash, height, parent)
   and one atomic SQLite write per batch. Headers per second, ``--repeats`` each.
2. ``proofs``: a light client synced to the head reads ``--reads`` values one request at
   a time over a kept-alive connection (``get_state``: ``svm_getState`` with ``proof``,
   decoded and verified against its own header's state root), round-robin over the
   senders' balance keys (``"bal/" + address``) and as many absent keys. Proofs verified
   per second. Then the same answers, fetched beforehand (untimed), verified locally
   (``verify_state``: decoding, the checks, the tree proof against the stored header):
   the pure verification rate.

Figures: median and range (min to max) over the repeats. The node and the light client
share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.node import NodeProcess
from supervm import open_storage
from supervm.chain import Block, Chain
from supervm.client import Client
from supervm_node.light import LightClient
from supervm_node.workload import TOKEN, Workload

SYNC_BATCHES = (256, 64)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def build_chain(path: Path, blocks: int, senders: int, chain_id: int) -> Workload:
    """The workload's setup in block 1, then ``blocks`` blocks of one transfer each."""
    workload = Workload(senders, chain_id=chain_id, seed=9)
    store = open_storage(f"rocksdb://{path}")
    try:
        chain = Chain(store, threads=1)
        chain.apply(Block(1, 0, tuple(workload.setup())), mode="sequential")
        per_sender = -(-blocks // senders)
        transfers = [
            workload.transfers(key, per_sender, i) for i, key in enumerate(workload.senders)
        ]
        order = [tx for round_ in zip(*transfers, strict=True) for tx in round_][:blocks]
        for height, tx in enumerate(order, start=2):
            result = chain.apply(Block(height, height, (tx,)), mode="sequential")
            if not all(r.ok for r in result.receipts):
                raise AssertionError(f"a transfer failed in block {height}")
        chain.close()
    finally:
        store.close()
    return workload


def sync_once(url: str, db: Path, batch: int) -> tuple[float, int]:
    """Seconds to sync every header into a fresh SQLite file, and how many."""
    db.unlink(missing_ok=True)
    with LightClient(open_storage(f"sqlite:///{db}"), url, batch=batch) as light:
        started = time.perf_counter()
        count = light.sync()
        return time.perf_counter() - started, count


def sync_figures(url: str, tmp: Path, repeats: int) -> dict[str, Any]:
    rates: dict[int, list[float]] = {batch: [] for batch in SYNC_BATCHES}
    headers = 0
    for rep in range(repeats):
        for batch in SYNC_BATCHES if rep % 2 == 0 else SYNC_BATCHES[::-1]:
            seconds, headers = sync_once(url, tmp / "light-sync.db", batch)
            rates[batch].append(headers / seconds)
    return {"headers": headers, "by_batch": {str(b): spread(r) for b, r in rates.items()}}


def proof_figures(
    url: str, tmp: Path, workload: Workload, reads: int, repeats: int
) -> dict[str, Any]:
    db = tmp / "light-proofs.db"
    db.unlink(missing_ok=True)
    keys = [b"bal/" + key.address for key in workload.senders]
    keys += [b"bal/" + os.urandom(20) for _ in workload.senders]  # absent
    picks = [keys[i % len(keys)] for i in range(reads)]
    remote: list[float] = []
    local: list[float] = []
    with LightClient(open_storage(f"sqlite:///{db}"), url) as light, Client(url) as client:
        light.sync()
        height = light.height
        for key in keys[:2]:  # a warm connection and a warm node
            light.get_state(TOKEN, key)
        answers = [client.get_state(TOKEN, key, height, proof=True) for key in picks]
        sizes = [len(a["proof"]) // 2 for a in answers]
        for _ in range(repeats):
            started = time.perf_counter()
            for key in picks:
                light.get_state(TOKEN, key)
            remote.append(reads / (time.perf_counter() - started))
            started = time.perf_counter()
            for key, answer in zip(picks, answers, strict=True):
                light.verify_state(answer, TOKEN, key, height)
            local.append(reads / (time.perf_counter() - started))
        verified, refused = light.verify_count, light.stats.proofs_refused
    expected = 2 + 2 * reads * repeats
    if verified != expected or refused:
        raise AssertionError(f"{verified} of {expected} proofs verified, {refused} refused")
    return {
        "reads": reads,
        "keys": len(keys),
        "proof_bytes": spread([float(s) for s in sizes]),
        "remote_per_s": spread(remote),
        "local_per_s": spread(local),
    }


def _fmt(s: dict[str, float], unit: str) -> str:
    return f"{s['median']:,.0f} {unit} (range {s['min']:,.0f} to {s['max']:,.0f})"


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    sync, proofs = figures["sync"], figures["proofs"]
    lines = [
        f"light client: {sync['headers']:,} headers, {args.repeats} repeats, "
        f"state of {args.senders} senders",
    ]
    for batch, s in sync["by_batch"].items():
        lines.append(f"  header sync, batches of {batch:>3}: {_fmt(s, 'headers/s')}")
    lines.append(
        f"  proven reads over loopback ({proofs['keys']} keys, half absent, "
        f"proofs {proofs['proof_bytes']['min']:.0f}-{proofs['proof_bytes']['max']:.0f} B): "
        f"{_fmt(proofs['remote_per_s'], 'proofs/s')}"
    )
    lines.append(
        f"  local verification of fetched proofs: {_fmt(proofs['local_per_s'], 'proofs/s')}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5000, help="blocks of one transfer")
    parser.add_argument("--senders", type=int, default=200, help="senders (1 to 255)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of each figure")
    parser.add_argument("--reads", type=int, default=1000, help="proven reads per repeat")
    parser.add_argument("--chain-id", type=int, default=78)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args, _ = parser.parse_known_args(argv)  # the harness's options are accepted and ignored
    started = time.time()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="supervm-bench-light-") as name:
        tmp = Path(name)
        began = time.perf_counter()
        workload = build_chain(tmp / "chain", args.blocks, args.senders, args.chain_id)
        say(f"chain of {args.blocks + 1} blocks: {time.perf_counter() - began:.1f} s")
        node = NodeProcess(tmp / "chain", args.chain_id)
        try:
            began = time.perf_counter()
            figures["sync"] = sync_figures(node.url, tmp, args.repeats)
            say(f"sync: {time.perf_counter() - began:.1f} s")
            began = time.perf_counter()
            figures["proofs"] = proof_figures(node.url, tmp, workload, args.reads, args.repeats)
            say(f"proofs: {time.perf_counter() - began:.1f} s")
        finally:
            node.stop()
        shutil.rmtree(tmp / "chain", ignore_errors=True)
    print(report(figures, args))
    if args.json:
        document = {
            "bench": "light", "settings": vars(args), "started": started,
            "seconds": round(time.time() - started, 1), "python": platform.python_version(),
            "machine": {"cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]},
            "results": [], "figures": figures,  # no harness pairs (bench.compare reads none)
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(document) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
