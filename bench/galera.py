"""Galera: block commits on a 3-node cluster vs the single server, reads on another node, failover.

    python -m bench.galera [--keys 20000] [--failovers 3] [--json PATH]

Starts a 3-node cluster of its own with ``scripts/galera_cluster.py`` (stopped,
its directory removed, at the end) beside the single MariaDB server of
``--mariadb-url`` (``SUPERVM_TEST_MARIADB_URL``), and measures, through
SuperVM's MariaDB back end, in interleaved pairs (bench/harness.py):

- a block commit of ``--keys`` keys (one ``write_batch``, as ``Chain.commit``
  writes a block: every key a new value): through node 1 of the cluster vs the
  single server (the ratio is the cluster's commit latency over the server's);
- point gets and 256-key prefix scans of the committed keys on node 2, with
  and without causal reads, vs the same on node 1 (the writer);

then the failover time, ``--failovers`` times: a chain commits token blocks
through a store whose URL names all three nodes, node 1 (the one it is
talking to) is killed with SIGKILL, and the time from the kill to the next
committed block is taken; node 1 is restarted between rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import supervm
from supervm.chain import Block, Chain, workload
from supervm.storage import RangeScanStorage, Storage

from .harness import Pair, Session, Side, add_arguments, say

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import galera_cluster  # noqa: E402  (a script, not an installed package)

MARIADB_DEFAULT = "mariadb+pymysql://root@127.0.0.1:3306/test"
VALUE = 64
SCAN_KEYS = 256
BLOCK_TXS = 200


def keys_for(count: int) -> list[bytes]:
    """Keys shaped like contract state keys (``c/`` + 20-byte contract + 32-byte slot)."""
    rng = random.Random(7)
    contract = bytes(rng.randrange(256) for _ in range(20))
    return sorted(b"c/" + contract + rng.randbytes(32) for _ in range(count))


def commit_side(label: str, store: Storage, keys: list[bytes]) -> Side:
    version = [0]

    def prepare(n: int) -> Callable[[], object]:
        batches = []
        for _ in range(n):
            version[0] += 1
            value = version[0].to_bytes(8, "big") * (VALUE // 8)
            batches.append([(key, value) for key in keys])

        def body() -> object:
            for ops in batches:
                store.write_batch(ops)
            return None

        return body

    return Side(label, prepare)


def get_side(label: str, store: Storage, keys: list[bytes]) -> Side:
    rng = random.Random(label)

    def prepare(n: int) -> Callable[[], object]:
        sample = [rng.choice(keys) for _ in range(n)]
        get = store.get

        def body() -> object:
            for key in sample:
                get(key)
            return None

        return body

    return Side(label, prepare)


def scan_side(label: str, store: RangeScanStorage, ranges: list[tuple[bytes, bytes]]) -> Side:
    rng = random.Random(label)

    def prepare(n: int) -> Callable[[], object]:
        chosen = [rng.choice(ranges) for _ in range(n)]

        def body() -> object:
            return [sum(1 for _ in store.scan_range(start, end)) for start, end in chosen]

        return body

    def check(counts: list[int]) -> None:
        if any(count != SCAN_KEYS for count in counts):
            raise AssertionError(f"{label}: a scan saw other than {SCAN_KEYS} keys: {counts}")

    return Side(label, prepare, check)


def node_url(cluster: galera_cluster.Cluster, number: int, table: str, **options: str) -> str:
    node = cluster.node(number)
    query = "&".join(f"{k}={v}" for k, v in {"table": table, **options}.items())
    return f"mariadb+pymysql://root@{node.host}:{node.port}/test?{query}"


def failover_times(cluster: galera_cluster.Cluster, rounds: int) -> list[float]:
    """Seconds from killing the serving node to the next committed block, ``rounds`` times."""
    hosts = ",".join(f"{n.host}:{n.port}" for n in cluster.nodes[1:])
    url = node_url(cluster, 1, "failover", hosts=hosts)
    times = []
    for round_ in range(rounds):
        cluster.heal()
        times.append(one_failover(cluster, url, round_))
        say(f"failover {round_ + 1}/{rounds}: {times[-1]:.2f} s")
    cluster.heal()
    return times


def one_failover(cluster: galera_cluster.Cluster, url: str, seed: int) -> float:
    """Commit blocks through node 1 in a thread, kill node 1, time the next committed block."""
    store = supervm.open_storage(url)
    chain = Chain(store, threads=1)
    committed: list[float] = []
    stop = threading.Event()
    failure: list[BaseException] = []
    try:
        token = chain.deploy(workload.token_code())
        users = workload.accounts(64)
        workload.setup(chain, token, users)

        def commit_blocks() -> None:
            try:
                n = 0
                while not stop.is_set():
                    height = chain.head().height
                    txs = workload.transfers(token, users, BLOCK_TXS, seed * 100_000 + n)
                    chain.apply(Block(height + 1, height + 1, tuple(txs)), mode="sequential")
                    committed.append(time.perf_counter())
                    n += 1
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=commit_blocks)
        thread.start()
        try:
            while len(committed) < 5 and thread.is_alive():
                time.sleep(0.01)
            time.sleep(random.uniform(0, 0.05))  # anywhere in a block's execution or commit
            killed = time.perf_counter()
            cluster.kill(1)
            deadline = time.monotonic() + 120
            while not any(t > killed for t in committed) and thread.is_alive():
                if time.monotonic() > deadline:
                    raise RuntimeError("no block committed within 120 s of the kill")
                time.sleep(0.005)
        finally:
            stop.set()
            thread.join()
        if failure:
            raise failure[0]
        return min(t for t in committed if t > killed) - killed
    finally:
        chain.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000, help="keys per block (20000)")
    parser.add_argument("--failovers", type=int, default=3, help="kills of the serving node (3)")
    parser.add_argument(
        "--mariadb-url", default=os.environ.get("SUPERVM_TEST_MARIADB_URL", MARIADB_DEFAULT)
    )
    add_arguments(parser, rounds=20, rep_ms=1.0, budget=30.0, processes=1)
    args = parser.parse_args(argv)
    if args.processes != 1:
        parser.error("bench.galera runs in one process (it starts one cluster)")
    missing = galera_cluster.missing_prerequisites()
    if missing:
        parser.error(f"MariaDB Galera is not installed: missing {', '.join(missing)}")
    session = Session("galera", "bench.galera", args, "Galera cluster: SuperVM MariaDB store")
    keys = keys_for(args.keys)
    step = max(1, (len(keys) - SCAN_KEYS) // 64)
    ranges = [(keys[i], keys[i + SCAN_KEYS]) for i in range(0, len(keys) - SCAN_KEYS, step)]
    table = f"bench_{os.getpid()}"
    failovers: list[float] = []
    base = galera_cluster.make_base_dir()
    say("starting a 3-node Galera cluster")
    started = time.perf_counter()
    with (
        galera_cluster.Cluster.start(3, base, owner_pid=os.getpid()) as cluster,
        ExitStack() as stack,
    ):
        say(f"cluster up in {time.perf_counter() - started:.1f} s")
        stores: dict[str, Any] = {}
        for name, url in {
            "single": f"{args.mariadb_url}{'&' if '?' in args.mariadb_url else '?'}table={table}",
            "node1": node_url(cluster, 1, table),
            "node2": node_url(cluster, 2, table),
            "node2 causal": node_url(cluster, 2, table, causal_reads="true"),
        }.items():
            store = supervm.open_storage(url)
            stack.callback(store.close)
            stores[name] = store
        stack.callback(stores["single"].drop)
        stack.callback(stores["node1"].drop)
        for name in ("single", "node1"):
            say(f"filling {name} with {len(keys):,} keys")
            stores[name].write_batch([(key, b"\0" * VALUE) for key in keys])
        pairs = [
            Pair(
                f"block commit of {len(keys):,} keys", commit_side("3-node Galera, node 1",
                stores["node1"], keys), commit_side("single server", stores["single"], keys),
                kind="time", units=1, ops_per_unit=len(keys), op="key", warmup=1,
            ),
            Pair(
                "get on node 2, causal", get_side("node 2 causal", stores["node2 causal"], keys),
                get_side("node 1 (writer)", stores["node1"], keys), op="get",
            ),
            Pair(
                "get on node 2", get_side("node 2", stores["node2"], keys),
                get_side("node 1 (writer)", stores["node1"], keys), op="get",
            ),
            Pair(
                f"{SCAN_KEYS}-key scan on node 2, causal",
                scan_side("node 2 causal", stores["node2 causal"], ranges),
                scan_side("node 1 (writer)", stores["node1"], ranges),
                ops_per_unit=SCAN_KEYS, op="key",
            ),
        ]  # fmt: skip
        session.run(pairs)
        stack.close()
        if args.failovers:
            failovers = failover_times(cluster, args.failovers)
    session.finish()
    commit = session.results[0]
    galera_ms, single_ms = (ns * len(keys) / 1e6 for ns in (commit.ours_ns_per_op,
                                                            commit.raw_ns_per_op))  # fmt: skip
    print()
    print(
        f"block commit of {len(keys):,} keys: 3-node Galera {galera_ms:.0f} ms "
        f"({1e9 / commit.ours_ns_per_op:,.0f} keys/s), single server {single_ms:.0f} ms "
        f"({1e9 / commit.raw_ns_per_op:,.0f} keys/s); ratio {commit.median:.2f} [{commit.spread}]"
    )
    for r in session.results[1:]:
        print(
            f"{r.name}: {1e9 / r.ours_ns_per_op:,.0f} {r.op}s/s vs node 1 "
            f"{1e9 / r.raw_ns_per_op:,.0f} {r.op}s/s (time ratio {r.median:.2f} [{r.spread}])"
        )
    if failovers:
        print(
            f"failover (kill of the serving node to the next committed block), "
            f"{len(failovers)} kills: median {statistics.median(failovers):.2f} s, "
            f"range {min(failovers):.2f}-{max(failovers):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
