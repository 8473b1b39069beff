"""Followers and tiers: a follower's catch-up, re-executing against applying write sets, and
the edge node's reads with and without its cache.

    python -m bench.followers [--blocks 200] [--txs 200] [--repeats 3] [--reads 1000]
                              [--json PATH]

One chain, built in process (untimed) on a fresh RocksDB store: the workload's deployment
and mints (``supervm_node.workload.Workload``, ``--txs`` senders) in block 1, then
``--blocks`` blocks of ``--txs`` signed transfers each, one per sender (``Chain.apply``).
Then ``supervm node`` serves it on loopback from a child process (``bench.node.NodeProcess``,
``--block-time 100``); it produces nothing until transfers arrive.

1. ``catch_up``: a follower process (``supervm node --follow``) on a fresh RocksDB store,
   ``--sync reexecute`` and ``--sync apply`` alternating, ``--repeats`` each. Two times:
   from starting the process to the follower's ``svm_head`` at the producer's head
   (``wall``, the process's start-up included), and from its first ``svm_syncStatus``
   answer to the head (``sync``, over the blocks it still had to fetch then). Blocks/s and
   transactions/s over ``sync``; the ratio apply / reexecute of the medians (its range:
   the slowest apply over the fastest reexecute to the fastest over the slowest).
2. ``edge``: two edge followers (``--profile edge``) of the producer, one with the default
   256 MiB cache (``hit``: the balance keys ``"bal/" + address`` of the senders the load
   leaves alone (all but the first 50) read round-robin, every key read once before
   measuring, so each read is answered from the cache) and one
   with ``--cache 1`` (``miss``: nothing fits, every get reads the store). ``--reads``
   ``svm_getState`` requests one at a time over a kept-alive connection, per node, the
   nodes alternating, ``--repeats`` times; idle, then under a load (a client thread sending
   batches of 200 transfers among the first 50 senders to the producer every 50 ms, while
   the followers apply them). The hit rate is the node's (``supervm_cache_hits_total`` and
   ``_misses_total`` over the reads): under load it counts the gets of block application
   too. p50 and p99
   in ms, median (min-max) over the repeats; the target: p99 < 10 ms on loopback under load
   with the cache.

The cache in isolation (a cached get / the store's own get) is bench/cache.py's figure.
All processes share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.node import NodeProcess, free_port
from supervm import open_storage
from supervm.chain import Block, Chain
from supervm.client import Client, RpcError
from supervm_node.workload import TOKEN, Workload, u64

START_TIMEOUT = 60.0
SYNC_TIMEOUT = 300.0
TARGET_P99_MS = 10.0
#: The load's senders: the first 50, sending to one another; the reads are of the others'
#: balances, which the load leaves alone.
LOAD_SENDERS = 50


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def build_chain(path: Path, blocks: int, txs: int, chain_id: int) -> Workload:
    """The workload's setup in block 1, then ``blocks`` blocks of ``txs`` transfers."""
    workload = Workload(txs, chain_id=chain_id, seed=11)
    store = open_storage(f"rocksdb://{path}")
    try:
        chain = Chain(store)
        chain.apply(Block(1, 1, tuple(workload.setup())), mode="sequential")
        for height in range(2, blocks + 2):
            block = tuple(
                tx for i, key in enumerate(workload.senders)
                for tx in workload.transfers(key, 1, height + i)
            )  # fmt: skip
            result = chain.apply(Block(height, height, block))
            if not all(r.ok for r in result.receipts):
                raise AssertionError(f"a transfer failed in block {height}")
        chain.close()
    finally:
        store.close()
    return workload


class Follower:
    """``supervm node --follow`` on a fresh RocksDB store, on a free loopback port."""

    def __init__(self, path: Path, chain_id: int, peer: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = path.with_suffix(".log")
        command = [
            sys.executable, "-m", "supervm", "node", "--store", f"rocksdb://{path}",
            "--rpc", f"127.0.0.1:{self.port}", "--chain-id", str(chain_id),
            "--follow", peer, "--log-level", "warning", *extra,
        ]  # fmt: skip
        self._out = self.log.open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)

    def first_status(self) -> tuple[float, dict[str, Any]]:
        """Wait for the first ``svm_syncStatus`` answer: when, and the answer."""
        deadline = time.monotonic() + START_TIMEOUT
        with Client(self.url, timeout=10) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the follower exited:\n{self.log.read_text()[-2000:]}")
                try:
                    status: dict[str, Any] = client.call("svm_syncStatus")
                    return time.perf_counter(), status
                except (ConnectionError, RpcError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the follower never answered:\n{self.log.read_text()}")
                time.sleep(0.01)

    def wait_height(self, height: int) -> float:
        """Poll ``svm_head`` until it is at ``height``; when."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        with Client(self.url, timeout=30) as client:
            while True:
                if client.head()["height"] >= height:
                    return time.perf_counter()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the follower never reached {height}")
                time.sleep(0.005)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._out.close()


def catch_up_figures(
    tmp: Path, producer: NodeProcess, chain_id: int, txs: int, repeats: int
) -> dict[str, Any]:
    head = producer.client().head()["height"]
    runs: dict[str, list[dict[str, float]]] = {"reexecute": [], "apply": []}
    for repeat in range(repeats):
        order = ("reexecute", "apply") if repeat % 2 == 0 else ("apply", "reexecute")
        for mode in order:
            path = tmp / f"follower-{mode}-{repeat}"
            follower = Follower(path, chain_id, producer.url, "--sync", mode)
            try:
                answered, status = follower.first_status()
                done = follower.wait_height(head)
            finally:
                follower.stop()
            shutil.rmtree(path, ignore_errors=True)
            blocks = head - int(status["height"])
            seconds = done - answered
            # Block 1 holds the setup; every other block ``txs`` transfers.
            run = {
                "wall_s": done - follower.started,
                "sync_s": seconds,
                "blocks": blocks,
                "blocks_per_s": blocks / seconds,
                "txs_per_s": blocks * txs / seconds,
            }
            runs[mode].append(run)
            say(
                f"  {mode}: {run['blocks_per_s']:.1f} blocks/s, {run['txs_per_s']:,.0f} tx/s "
                f"({blocks} blocks in {seconds:.2f} s; {run['wall_s']:.2f} s from start)"
            )
    figures: dict[str, Any] = {"head": head, "txs_per_block": txs}
    for mode, found in runs.items():
        figures[mode] = {
            name: spread([run[name] for run in found])
            for name in ("wall_s", "sync_s", "blocks_per_s", "txs_per_s")
        }
    re, ap = figures["reexecute"]["txs_per_s"], figures["apply"]["txs_per_s"]
    figures["ratio"] = {
        "median": ap["median"] / re["median"],
        "min": ap["min"] / re["max"],
        "max": ap["max"] / re["min"],
    }
    return figures


class Load:
    """Batches of 200 signed transfers among the first ``LOAD_SENDERS`` senders to the
    producer from a thread, every 50 ms, until stopped."""

    def __init__(self, url: str, workload: Workload) -> None:
        self.url = url
        self.workload = workload
        self.sent = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with Client(self.url, timeout=60) as client:
                senders = self.workload.senders[:LOAD_SENDERS]
                round_ = 0
                while not self._stop.is_set():
                    txs = []
                    for i, key in enumerate(senders):
                        for j in range(200 // len(senders)):
                            to = senders[(round_ + i + j + 1) % len(senders)]
                            data = to.address + u64(1)
                            txs.append(self.workload.sign(key, TOKEN, "transfer", data))
                    for answer in client.send_transactions(txs):
                        if isinstance(answer, RpcError):
                            raise answer
                    self.sent += len(txs)
                    round_ += 1
                    self._stop.wait(0.05)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.errors:
            raise RuntimeError(f"the load failed: {self.errors[0]!r}")


def read_latencies(url: str, keys: list[bytes], reads: int) -> list[float]:
    latencies = []
    with Client(url, timeout=30) as client:
        for i in range(reads):
            key = keys[i % len(keys)]
            start = time.perf_counter()
            answer = client.get_state(TOKEN, key)
            latencies.append(time.perf_counter() - start)
            if answer["value"] is None:
                raise AssertionError(f"no balance at {key.hex()}")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def edge_figures(
    tmp: Path, producer: NodeProcess, chain_id: int, workload: Workload, reads: int, repeats: int
) -> dict[str, Any]:
    head = producer.client().head()["height"]
    nodes = {
        "hit": Follower(tmp / "edge-hit", chain_id, producer.url, "--profile", "edge"),
        "miss": Follower(
            tmp / "edge-miss", chain_id, producer.url, "--profile", "edge", "--cache", "1"
        ),
    }
    keys = [b"bal/" + key.address for key in workload.senders[LOAD_SENDERS:]]
    figures: dict[str, Any] = {}
    try:
        for node in nodes.values():
            node.first_status()
            node.wait_height(head)
            read_latencies(node.url, keys, len(keys))  # every key once: the hit side is hot
        for condition in ("idle", "load"):
            samples: dict[str, dict[str, list[float]]] = {
                side: {"p50": [], "p99": [], "hit_rate": []} for side in nodes
            }
            loaded = Load(producer.url, workload) if condition == "load" else None
            began = time.perf_counter()
            height0 = producer.client().head()["height"]
            included0 = metric(producer.url, "supervm_transactions_total")
            if loaded is not None:
                loaded.__enter__()
                time.sleep(1.0)  # the load under way
            try:
                for repeat in range(repeats):
                    order = ("hit", "miss") if repeat % 2 == 0 else ("miss", "hit")
                    for side in order:
                        url = nodes[side].url
                        hits0 = metric(url, "supervm_cache_hits_total")
                        misses0 = metric(url, "supervm_cache_misses_total")
                        latencies = read_latencies(url, keys, reads)
                        hits = metric(url, "supervm_cache_hits_total") - hits0
                        misses = metric(url, "supervm_cache_misses_total") - misses0
                        samples[side]["p50"].append(statistics.median(latencies) * 1e3)
                        samples[side]["p99"].append(percentile(latencies, 0.99) * 1e3)
                        samples[side]["hit_rate"].append(
                            hits / (hits + misses) if hits + misses else 0.0
                        )
            finally:
                if loaded is not None:
                    loaded.__exit__()
            seconds = time.perf_counter() - began
            blocks = producer.client().head()["height"] - height0
            figures[condition] = {
                side: {name: spread(values) for name, values in found.items()}
                for side, found in samples.items()
            }
            if loaded is not None:
                figures[condition]["sent_per_s"] = loaded.sent / seconds
                figures[condition]["blocks"] = blocks
                included = metric(producer.url, "supervm_transactions_total") - included0
                figures[condition]["included_per_s"] = included / seconds
            say(
                f"  {condition}: "
                + ", ".join(
                    f"{side} p50 {found['p50']['median']:.2f} ms p99 "
                    f"{found['p99']['median']:.2f} ms (hit rate "
                    f"{found['hit_rate']['median']:.0%})"
                    for side, found in figures[condition].items()
                    if isinstance(found, dict) and "p50" in found
                )
            )
    finally:
        for node in nodes.values():
            node.stop()
    p99 = figures["load"]["hit"]["p99"]["median"]
    figures["target"] = {"p99_ms": TARGET_P99_MS, "load_hit_p99_ms": p99, "met": p99 < 10.0}
    return figures


def _fmt(s: dict[str, float], unit: str, digits: int = 0) -> str:
    unit = f" {unit}" if unit else ""
    return f"{s['median']:,.{digits}f}{unit} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    catch = figures["catch_up"]
    lines = [
        f"followers ({args.blocks} blocks of {args.txs} transfers, head {catch['head']}, "
        f"{args.repeats} runs each, median (min-max)):",
    ]
    for mode in ("reexecute", "apply"):
        found = catch[mode]
        lines.append(
            f"  catch-up {mode:<9}: {_fmt(found['blocks_per_s'], 'blocks/s', 1)}, "
            f"{_fmt(found['txs_per_s'], 'tx/s')}; sync {_fmt(found['sync_s'], 's', 2)}, "
            f"from start {_fmt(found['wall_s'], 's', 2)}"
        )
    ratio = catch["ratio"]
    lines.append(
        f"  apply / reexecute: {ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"
    )
    edge = figures["edge"]
    for condition in ("idle", "load"):
        extra = ""
        if condition == "load":
            load = edge["load"]
            extra = (
                f" ({load['sent_per_s']:,.0f} transfers/s sent, "
                f"{load['included_per_s']:,.0f}/s included, {load['blocks']} blocks)"
            )
        lines.append(f"  edge svm_getState, {condition}{extra}, ms:")
        for side in ("hit", "miss"):
            found = edge[condition][side]
            lines.append(
                f"    {side:<4}: p50 {_fmt(found['p50'], '', 2)}, p99 {_fmt(found['p99'], '', 2)}"
                f", hit rate {found['hit_rate']['median']:.0%}"
            )
    target = edge["target"]
    lines.append(
        f"  target p99 < {target['p99_ms']:.0f} ms under load (cache hit): "
        f"{target['load_hit_p99_ms']:.2f} ms, {'met' if target['met'] else 'not met'}"
    )
    lines.append("  a cached get / the store's own get: see python -m bench.cache")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=200, help="blocks of --txs transfers")
    parser.add_argument("--txs", type=int, default=200, help="transfers a block (1 to 255)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each figure")
    parser.add_argument("--reads", type=int, default=1000, help="reads per repeat and node")
    parser.add_argument("--chain-id", type=int, default=79)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args, _ = parser.parse_known_args(argv)  # the harness's options are accepted and ignored
    started = time.time()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="supervm-bench-followers-") as name:
        tmp = Path(name)
        began = time.perf_counter()
        workload = build_chain(tmp / "chain", args.blocks, args.txs, args.chain_id)
        say(f"chain of {args.blocks + 1} blocks: {time.perf_counter() - began:.1f} s")
        producer = NodeProcess(tmp / "chain", args.chain_id)
        try:
            began = time.perf_counter()
            figures["catch_up"] = catch_up_figures(
                tmp, producer, args.chain_id, args.txs, args.repeats
            )
            say(f"catch-up: {time.perf_counter() - began:.1f} s")
            began = time.perf_counter()
            figures["edge"] = edge_figures(
                tmp, producer, args.chain_id, workload, args.reads, args.repeats
            )
            say(f"edge: {time.perf_counter() - began:.1f} s")
        finally:
            producer.stop()
    print(report(figures, args))
    if args.json:
        document = {
            "bench": "followers", "settings": vars(args), "started": started,
            "seconds": round(time.time() - started, 1), "python": platform.python_version(),
            "machine": {"cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]},
            "results": [], "figures": figures,  # no harness pairs (bench.compare reads none)
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(document) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
