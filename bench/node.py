"""The node: signed transfers end to end over JSON-RPC, the block pipeline's threads,
and read latency, against py-evm's figure measured in the same run.

    python -m bench.node [--txs 8000] [--clients 4] [--repeats 3] [--blocks 20]
                         [--block-txs 1000] [--pipeline-repeats 5] [--reads 2000]
                         [--no-pyevm] [--json PATH]

Three parts (``--only``, all three by default), and a profile:

1. ``e2e``: signed token transfers per second through a real node. Each run
   starts ``supervm node`` in a child process on a fresh RocksDB store
   (``--block-time 100``, the node's other defaults: two pipeline threads,
   blocks of at most 2,000), waits for ``GET /health``, sends the workload's
   deployment and mints (``supervm_node.workload.Workload``, ``--senders``
   senders) and waits until they are included. Then ``--txs`` transfers,
   signed beforehand (untimed), are sent by C client threads, each holding its
   own senders and sending their transfers round-robin in JSON-RPC batches of
   100 (``Client.send_transactions``). The time runs from the first send
   (the threads start together) to the moment the node's head reaches the
   block including the last transfer of every sender: the main thread
   long-polls ``svm_waitForBlock`` and, after each new block, asks
   ``svm_getTransaction`` for those last transfers only (one batch of at most
   ``--senders`` lookups per block). Afterwards, untimed, every transfer is
   fetched once: the figure counts only those included with an ``ok``
   receipt (every one must be). Runs with C = ``--clients`` (4) and C = 1
   alternate (the order swapped every repeat), ``--repeats`` (3) each, a fresh
   node and store each run: median and range. py-evm's figure
   (``bench.pyevm.measure()``, its defaults: 2,000 transfers in blocks of 100,
   three runs, every block finalised) is measured in the same run; the ratio is
   SuperVM's median over py-evm's median, its range our min / py-evm's max to
   our max / py-evm's min. Goal: >= 20x.
2. ``pipeline``: ``supervm_node.pipeline.BlockPipeline`` in process with 2
   threads against 1, on a fresh RocksDB ``Chain(threads=T)`` each time, the
   token deployed and minted by ``Chain.apply`` (untimed); ``--blocks`` (20)
   blocks of ``--block-txs`` (1,000) transfers, freshly signed for each side
   (untimed; ``verified=None``: the pipeline checks every signature), submitted
   one after the other (the pipeline holds at most two waiting); the time runs
   from the first ``submit`` to ``drain()``. Both sides get the same
   transactions and ``timestamp=lambda: 0``, so their heads must have the same
   state root (checked). ``--pipeline-repeats`` (5) pairs, the side that runs
   first alternating; the figure is the median of t1 / t2 per pair with a 95%
   bootstrap interval (``harness.median_ci``, one group per pair), each side's
   transfers/s and its per-stage seconds (``pipeline.stats.seconds``: with
   two threads the stages overlap, so they add up to more than the wall time).
3. ``latency``: ``svm_getState`` of a sender's balance key (``"bal/" +
   address``, examples/contracts/token.c) from one client thread, one request
   at a time over a kept-alive connection, ``--reads`` (2,000) requests, each
   timed alone: p50 and p99 in ms, idle, then while 2 other threads send
   transfers continuously (batches of 100, as in part 1, keeping the mempool
   under 4,000). The load's throughput is the transfers included meanwhile
   (the chain's nonces of its senders, before and after) over the loaded
   window.

``--only profile`` (or ``--only e2e,profile``) makes one more run of part 1 with the
node profiled: by py-spy when it is on the PATH (every thread sampled at 250 Hz while
the transfers run; the share of each thread and function in the samples of running
threads), else under cProfile (the event loop thread only; the node stops on SIGTERM
and writes the profile).

Absolute rates are of this machine (2 cores shared with other work; the client
threads run on the same cores as the node); the py-evm ratio is measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import median_ci, say
from supervm import open_storage
from supervm.chain import Block, Chain, Transaction
from supervm.client import Client, RpcError
from supervm_node.pipeline import BlockPipeline
from supervm_node.workload import TOKEN, Workload

PARTS = ("e2e", "pipeline", "latency", "profile")
#: The parts run unless ``--only`` says otherwise.
DEFAULT_PARTS = ("e2e", "pipeline", "latency")
GOAL = 20.0
#: Transactions per JSON-RPC batch.
BATCH = 100
#: The load threads of part 3 wait while the mempool holds more than this.
LOAD_MEMPOOL = 4000
START_TIMEOUT = 60.0
INCLUDE_TIMEOUT = 300.0


# -- a node process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """``supervm node`` on a fresh RocksDB store at ``path``, on a free loopback port."""

    def __init__(self, path: Path, chain_id: int, profile: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = path.with_suffix(".log")
        prefix = [sys.executable]
        if profile is not None:
            prefix += ["-m", "cProfile", "-o", str(profile)]
        command = [
            *prefix, "-m", "supervm", "node", "--store", f"rocksdb://{path}",
            "--rpc", f"127.0.0.1:{self.port}", "--chain-id", str(chain_id),
            "--block-time", "100", "--log-level", "warning",
        ]  # fmt: skip
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if json.load(answer).get("ok"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the node did not become healthy:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def client(self) -> Client:
        return Client(self.url, timeout=60)

    def stop(self) -> None:
        """SIGTERM and a clean exit (kill -9 after 60 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._out.close()
        if self.proc.returncode not in (0, -signal.SIGTERM):
            say(f"the node exited with {self.proc.returncode}:\n{self.tail()}")


def send(client: Client, txs: Sequence[Transaction]) -> list[bytes]:
    """Send ``txs`` in batches of :data:`BATCH`; their hashes (every one must be taken)."""
    hashes: list[bytes] = []
    for at in range(0, len(txs), BATCH):
        for answer in client.send_transactions(txs[at : at + BATCH]):
            if isinstance(answer, RpcError):
                raise answer
            hashes.append(answer)
    return hashes


def wait_included(client: Client, hashes: Sequence[bytes], timeout: float) -> float:
    """Wait until every one of ``hashes`` is included: the ``perf_counter`` when the
    block that completed them was seen (``svm_waitForBlock`` returned)."""
    deadline = time.monotonic() + timeout
    pending = list(hashes)
    height = int(client.head()["height"])
    seen = time.perf_counter()
    while True:
        answers = client.batch([("svm_getTransaction", [h.hex()]) for h in pending])
        left = []
        for tx_hash, answer in zip(pending, answers, strict=True):
            if isinstance(answer, RpcError):
                raise answer
            if answer is None or answer["status"] != "included":
                left.append(tx_hash)
        pending = left
        if not pending:
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} transactions not included after {timeout:g} s")
        height = int(client.wait_for_block(height, timeout_ms=1000)["height"])
        seen = time.perf_counter()


def receipts_ok(client: Client, hashes: Sequence[bytes]) -> int:
    """How many of ``hashes`` are included with an ok receipt (fetched 500 at a time)."""
    ok = 0
    for at in range(0, len(hashes), 500):
        part = hashes[at : at + 500]
        for answer in client.batch([("svm_getTransaction", [h.hex()]) for h in part]):
            if isinstance(answer, RpcError):
                raise answer
            if answer and answer["status"] == "included" and answer["receipt"]["status"] == "ok":
                ok += 1
    return ok


def round_robin(per_sender: Sequence[Sequence[Transaction]], size: int) -> list[Transaction]:
    """The senders' transactions in turns of ``size`` each (each sender's in nonce order)."""
    out: list[Transaction] = []
    longest = max((len(txs) for txs in per_sender), default=0)
    for at in range(0, longest, size):
        for txs in per_sender:
            out += txs[at : at + size]
    return out


# -- 1. end to end -----------------------------------------------------------------------


def e2e_run(
    args: argparse.Namespace, tmp: Path, clients: int, run: int, profile: Path | None = None,
    started: Callable[[NodeProcess], None] | None = None,
    stopping: Callable[[NodeProcess], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One run on a fresh node and store: its transfers/s and what it checked.

    ``profile``: run the node under cProfile into that file; ``started`` and ``stopping``
    are called once the setup is included and before the node stops."""
    path = tmp / f"e2e-{run}"
    workload = Workload(args.senders, chain_id=args.chain_id, seed=run % 200 + 1)
    node = NodeProcess(path, args.chain_id, profile)
    try:
        client = node.client()
        setup = send(client, workload.setup())
        wait_included(client, setup[-1:], INCLUDE_TIMEOUT)
        if started is not None:
            started(node)
        each, extra = divmod(args.txs, args.senders)
        signed = [
            workload.transfers(key, each + (seed < extra), seed)
            for seed, key in enumerate(workload.senders)
            if each + (seed < extra)
        ]
        lasts = [txs[-1].hash for txs in signed]
        # Each client thread sends its own senders' transfers.
        shares = [round_robin(signed[c::clients], BATCH) for c in range(clients)]
        hashes: list[list[bytes]] = [[] for _ in range(clients)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(clients + 1)

        def sender(index: int) -> None:
            mine = node.client()
            try:
                barrier.wait()
                hashes[index] = send(mine, shares[index])
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                mine.close()

        threads = [threading.Thread(target=sender, args=(c,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        end = wait_included(client, lasts, INCLUDE_TIMEOUT)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        sent = [h for part in hashes for h in part]
        ok = receipts_ok(client, sent)
        total = sum(len(txs) for txs in signed)
        if len(sent) != total or ok != total:
            raise AssertionError(f"{ok} ok receipts of {len(sent)} sent, {total} signed")
        head = int(client.head()["height"])
        client.close()
    finally:
        if stopping is not None:
            stopping(node)
        node.stop()
    shutil.rmtree(path, ignore_errors=True)
    seconds = end - start
    return {"clients": clients, "transfers": ok, "seconds": seconds, "tx_per_s": ok / seconds,
            "blocks": head - 1}  # fmt: skip


def e2e_figures(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    counts = [args.clients] + ([1] if args.clients != 1 else [])
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    number = 0
    for rep in range(args.repeats):
        order = counts if rep % 2 == 0 else counts[::-1]
        for clients in order:
            number += 1
            result = e2e_run(args, tmp, clients, number)
            runs[clients].append(result)
            say(f"  e2e rep {rep + 1}, {clients} client thread(s): {result['transfers']} "
                f"transfers in {result['seconds']:.2f} s = {result['tx_per_s']:.0f}/s "
                f"({result['blocks']} blocks)")  # fmt: skip
    out: dict[str, Any] = {"runs": {str(c): r for c, r in runs.items()}, "by_clients": {}}
    for clients, results in runs.items():
        out["by_clients"][str(clients)] = spread([r["tx_per_s"] for r in results])
    return out


def pyevm_ratio(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float]:
    return {
        "median": ours["median"] / peer["tx_per_s"],
        "min": ours["min"] / peer["max"],
        "max": ours["max"] / peer["min"],
    }


# -- 2. the block pipeline -----------------------------------------------------------------


def pipeline_side(args: argparse.Namespace, tmp: Path, threads: int, name: str) -> dict[str, Any]:
    """One side: a fresh chain, fresh transactions, the blocks through the pipeline."""
    path = tmp / name
    workload = Workload(args.pipeline_senders, chain_id=args.chain_id, seed=7)
    store = open_storage(f"rocksdb://{path}")
    try:
        chain = Chain(store, threads=threads)
        chain.apply(Block(1, 0, tuple(workload.setup())), mode="sequential")
        total = args.blocks * args.block_txs
        per_sender = -(-total // args.pipeline_senders)
        signed = [
            workload.transfers(key, per_sender, seed) for seed, key in enumerate(workload.senders)
        ]
        txs = round_robin(signed, 1)[:total]
        blocks = [txs[at : at + args.block_txs] for at in range(0, total, args.block_txs)]
        pipeline = BlockPipeline(chain, threads=threads, timestamp=lambda: 0)
        try:
            start = time.perf_counter()
            for block in blocks:
                pipeline.submit(block)
            if not pipeline.drain():
                raise RuntimeError("the pipeline stopped") from pipeline.error
            seconds = time.perf_counter() - start
        finally:
            pipeline.close()
        stats = pipeline.stats
        head = chain.head()
        if stats.refused or stats.transactions != total or head.height != len(blocks) + 1:
            raise AssertionError(f"{stats.transactions} of {total} transactions committed, "
                                 f"{stats.refused} refused, head {head.height}")  # fmt: skip
        receipts = [chain.receipts(h) for h in range(2, head.height + 1)]
        if not all(r is not None and all(x.ok for x in r) for r in receipts):
            raise AssertionError("a transfer failed")
        chain.close()
    finally:
        store.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"threads": threads, "seconds": seconds, "tx_per_s": total / seconds,
            "stages": dict(stats.seconds), "root": head.state_root.hex()}  # fmt: skip


def pipeline_figures(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sides: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    ratios = []
    for rep in range(args.pipeline_repeats):
        order = (1, 2) if rep % 2 == 0 else (2, 1)
        got = {t: pipeline_side(args, tmp, t, f"pipeline-{rep}-{t}") for t in order}
        if got[1]["root"] != got[2]["root"]:
            raise AssertionError(f"state roots differ: {got[1]['root']} / {got[2]['root']}")
        for t in (1, 2):
            sides[t].append(got[t])
        ratios.append(got[1]["seconds"] / got[2]["seconds"])
        say(f"  pipeline rep {rep + 1}: 1 thread {got[1]['seconds']:.2f} s, 2 threads "
            f"{got[2]['seconds']:.2f} s, ratio {ratios[-1]:.2f}")  # fmt: skip
    out: dict[str, Any] = {"ratio": spread(ratios, groups=list(range(len(ratios))))}
    for t, results in sides.items():
        out[f"threads_{t}"] = {
            "tx_per_s": spread([r["tx_per_s"] for r in results]),
            "seconds": spread([r["seconds"] for r in results]),
            "stages": {s: spread([r["stages"][s] for r in results])
                       for s in results[0]["stages"]},
            "runs": results,
        }  # fmt: skip
    return out


# -- 3. read latency -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_reads(client: Client, keys: Sequence[bytes], count: int,
               expect: int | None) -> list[float]:  # fmt: skip
    """``count`` single ``svm_getState`` requests, round-robin over ``keys``: each one's ms."""
    times = []
    for i in range(count):
        key = keys[i % len(keys)]
        start = time.perf_counter_ns()
        answer = client.get_state(TOKEN, key)
        times.append((time.perf_counter_ns() - start) / 1e6)
        if (
            expect is not None
            and int.from_bytes(bytes.fromhex(answer["value"]), "little") != expect
        ):
            raise AssertionError(f"balance {answer['value']} read, {expect} minted")
    return times


def latency_figures(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    path = tmp / "latency"
    workload = Workload(args.senders, chain_id=args.chain_id, seed=99)
    node = NodeProcess(path, args.chain_id)
    try:
        client = node.client()
        setup = send(client, workload.setup())
        wait_included(client, setup[-1:], INCLUDE_TIMEOUT)
        keys = [b"bal/" + key.address for key in workload.senders]
        time_reads(client, keys, 50, workload.mint)  # warm-up
        idle = time_reads(client, keys, args.reads, workload.mint)
        say(f"  idle: p50 {percentile(idle, 0.5):.3f} ms, p99 {percentile(idle, 0.99):.3f} ms")
        stop = threading.Event()
        lock = threading.Lock()
        errors: list[BaseException] = []
        loaders = [workload.senders[i::2] for i in range(2)]

        def load(keys_of: list[Any]) -> None:
            mine = node.client()
            seed = 0
            try:
                while not stop.is_set():
                    for key in keys_of:
                        with lock:  # the workload's bookkeeping is not thread-safe
                            txs = workload.transfers(key, BATCH, seed)
                        seed += 1
                        for answer in mine.send_transactions(txs):
                            if isinstance(answer, RpcError):
                                raise answer
                        while int(mine.mempool()["count"]) > LOAD_MEMPOOL and not stop.is_set():
                            time.sleep(0.02)
                        if stop.is_set():
                            break
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                mine.close()

        def included() -> int:
            nonces = client.batch([("svm_getNonce", [k.address.hex()]) for k in workload.senders])
            return sum(int(n["nonce"]) for n in nonces)

        threads = [threading.Thread(target=load, args=(part,)) for part in loaders]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the load reaches its pace
        before, start = included(), time.perf_counter()
        loaded = time_reads(client, keys, args.reads, None)
        after, window = included(), time.perf_counter() - start
        stop.set()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        client.close()
    finally:
        node.stop()
    shutil.rmtree(path, ignore_errors=True)
    out = {
        "reads": args.reads,
        "idle": {"p50_ms": percentile(idle, 0.5), "p99_ms": percentile(idle, 0.99),
                 "mean_ms": statistics.fmean(idle)},
        "loaded": {"p50_ms": percentile(loaded, 0.5), "p99_ms": percentile(loaded, 0.99),
                   "mean_ms": statistics.fmean(loaded)},
        "load_tx_per_s": (after - before) / window, "load_included": after - before,
        "load_window_s": window,
    }  # fmt: skip
    say(f"  loaded: p50 {out['loaded']['p50_ms']:.3f} ms, p99 {out['loaded']['p99_ms']:.3f} ms, "
        f"load {out['load_tx_per_s']:.0f} transfers/s")  # fmt: skip
    return out


# -- profile ----------------------------------------------------------------------------

#: Innermost frames of a thread that waits (py-spy samples those too).
IDLE_FRAMES = ("Condition.wait", "EpollSelector.select", "_worker", "Event.wait", "sleep")


def py_spy_profile(path: str, top: int) -> dict[str, Any]:
    """Samples of the node's threads from py-spy's raw output, the waiting ones left out:
    the share of each thread, of each innermost function and of each function with
    what it calls (of the samples in which some thread ran)."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2 or frames[-1].split(" (")[0] in IDLE_FRAMES:
            continue
        n = int(count)
        total += n
        thread = frames[0].split(": ", 1)[-1].rstrip("_0123456789")
        threads[thread] = threads.get(thread, 0) + n
        leaf = frames[-1].split(" (")[0]
        own[leaf] = own.get(leaf, 0) + n
        for name in {f.split(" (")[0] for f in frames[1:]}:
            inclusive[name] = inclusive.get(name, 0) + n

    def shares(counts: dict[str, int]) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [{"function": k, "samples": v, "share": v / max(total, 1)} for k, v in ordered]

    return {"tool": "py-spy", "samples": total, "threads": shares(threads),
            "by_own": shares(own), "by_cumulative": shares(inclusive)}  # fmt: skip


def c_profile(path: str, top: int) -> dict[str, Any]:
    """cProfile's top functions (the node's main thread only: the event loop)."""
    raw: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    total = max(sum(v[2] for v in raw.values()), 1e-9)
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in raw.items():
        where = f"{Path(filename).name}:{line}({function})" if line else function
        rows.append({"function": where, "calls": calls, "own_s": own, "cum_s": cumulative,
                     "share": own / total})  # fmt: skip
    return {
        "tool": "cProfile", "seconds": total,
        "by_own": sorted(rows, key=lambda r: -r["own_s"])[:top],
        "by_cumulative": sorted(rows, key=lambda r: -r["cum_s"])[:top],
    }  # fmt: skip


def profile_figures(args: argparse.Namespace, tmp: Path, top: int = 30) -> dict[str, Any]:
    """One end-to-end run with the node profiled: by py-spy (every thread, sampled at
    250 Hz while the transfers run) when it is installed, else by cProfile."""
    spy = shutil.which("py-spy")
    file = tmp / ("node.spy" if spy else "node.prof")
    recorder: list[subprocess.Popen[bytes]] = []

    def started(node: NodeProcess) -> None:
        if spy:
            recorder.append(subprocess.Popen(
                [spy, "record", "--pid", str(node.proc.pid), "--rate", "250", "--threads",
                 "--format", "raw", "--output", str(file)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            time.sleep(1.0)  # py-spy attaches

    def stopping(node: NodeProcess) -> None:
        for proc in recorder:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    result = e2e_run(args, tmp, args.clients, 10_000, profile=None if spy else file,
                     started=started, stopping=stopping)  # fmt: skip
    out = py_spy_profile(str(file), top) if spy else c_profile(str(file), top)
    out["run"] = result
    return out


# -- figures and the report ---------------------------------------------------------------


def spread(values: list[float], groups: list[int] | None = None) -> dict[str, Any]:
    """Median, 95% bootstrap interval, range of ``values``."""
    low, high = median_ci(values, groups if groups is not None else [0] * len(values))
    return {"median": statistics.median(values), "ci_low": low, "ci_high": high,
            "min": min(values), "max": max(values), "n": len(values), "values": values}  # fmt: skip


def _range(s: dict[str, Any], digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| comparison | ratio | spread | runs | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    e2e, peer, pipe = figures.get("e2e"), figures.get("pyevm"), figures.get("pipeline")
    if e2e and peer:
        for clients, s in e2e["by_clients"].items():
            r = pyevm_ratio(s, peer)
            met = "yes" if r["median"] >= GOAL else "no"
            lines.append(f"| node e2e transfers/s, {clients} client thread(s) / py-evm | "
                         f"{r['median']:.1f}x | {r['min']:.1f}-{r['max']:.1f} (range) | "
                         f"{s['n']} / {len(peer['runs'])} | >= {GOAL:g}x | {met} |")  # fmt: skip
    if pipe:
        s = pipe["ratio"]
        lines.append(f"| block pipeline, 2 threads / 1 thread (speed-up) | {s['median']:.2f}x | "
                     f"[{s['ci_low']:.2f}-{s['ci_high']:.2f}] 95% CI, {s['min']:.2f}-"
                     f"{s['max']:.2f} range | {s['n']} pairs | - | - |")  # fmt: skip
    if e2e:
        lines += ["\nEnd to end: signed transfers included per second (a node process on RocksDB, "
                  f"{args.txs:,} transfers per run from {args.senders} senders, "
                  "JSON-RPC batches of 100)\n",
                  "| client threads | transfers/s median (min-max) | 95% CI | runs |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for clients, s in e2e["by_clients"].items():
            lines.append(f"| {clients} | {_range(s)} | {s['ci_low']:,.0f}-{s['ci_high']:,.0f} | "
                         f"{', '.join(f'{v:,.0f}' for v in s['values'])} |")  # fmt: skip
    if peer:
        lines.append(f"\npy-evm {peer['py_evm']} ({peer['fork']}, {peer['ecc']}): "
                     f"{peer['tx_per_s']:,.0f} transfers/s ({peer['min']:,.0f}-{peer['max']:,.0f}, "
                     f"{len(peer['runs'])} runs of {peer['txs']:,} in blocks of "
                     f"{peer['block_size']})")  # fmt: skip
    elif "e2e" in figures:
        lines.append("\npy-evm: not measured")
    if pipe:
        stages = list(pipe["threads_1"]["stages"]) + [
            s for s in pipe["threads_2"]["stages"] if s not in pipe["threads_1"]["stages"]
        ]
        lines += [f"\nBlock pipeline in process: {args.blocks} blocks of {args.block_txs:,} "
                  "fresh signed transfers on a fresh RocksDB chain, first submit to drain()\n",
                  "| threads | transfers/s median (min-max) | seconds | "
                  + " | ".join(f"{s} s" for s in stages) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in stages) + " |"]  # fmt: skip
        for t in (1, 2):
            side = pipe[f"threads_{t}"]
            cells = [_range(side["stages"][s], 2) if s in side["stages"] else "-" for s in stages]
            lines.append(f"| {t} | {_range(side['tx_per_s'])} | {_range(side['seconds'], 2)} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines.append("(the head's state root is the same on both sides in every pair)")
    lat = figures.get("latency")
    if lat:
        lines += [f"\nsvm_getState of a balance, one request at a time, {lat['reads']:,} requests "
                  "(ms)\n", "| | p50 | p99 | mean |", "| --- | --- | --- | --- |"]  # fmt: skip
        for name in ("idle", "loaded"):
            x = lat[name]
            lines.append(f"| {name} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | "
                         f"{x['mean_ms']:.3f} |")  # fmt: skip
        lines.append(f"load: 2 threads sending transfers, {lat['load_tx_per_s']:,.0f} included/s "
                     f"({lat['load_included']:,} in {lat['load_window_s']:.1f} s)")  # fmt: skip
    prof = figures.get("profile")
    if prof:
        run = prof["run"]
        if prof["tool"] == "py-spy":
            lines += [f"\nWhere the node's time goes: py-spy, every thread, one run of part 1 "
                      f"({run['transfers']:,} transfers, {run['tx_per_s']:,.0f}/s while sampled), "
                      f"{prof['samples']:,} samples of running threads\n"]  # fmt: skip
            for title, key in (("thread", "threads"), ("innermost function", "by_own"),
                               ("function, with what it calls", "by_cumulative")):  # fmt: skip
                lines += [f"| {title} | share of samples |", "| --- | --- |"]
                lines += [f"| {r['function']} | {r['share']:.1%} |" for r in prof[key]]
                lines.append("")
        else:
            lines += [f"\nThe node's event loop thread under cProfile ({run['tx_per_s']:,.0f} "
                      f"transfers/s so profiled; {prof['seconds']:.1f} s)\n",
                      "| function (by own time) | calls | own s | share |",
                      "| --- | --- | --- | --- |"]  # fmt: skip
            for row in prof["by_own"]:
                lines.append(f"| {row['function']} | {row['calls']:,} | {row['own_s']:.2f} | "
                             f"{row['share']:.0%} |")  # fmt: skip
            lines += ["\n| function (by cumulative time) | calls | cumulative s |",
                      "| --- | --- | --- |"]  # fmt: skip
            for row in prof["by_cumulative"]:
                lines.append(f"| {row['function']} | {row['calls']:,} | {row['cum_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(DEFAULT_PARTS),
        help=f"parts, of {','.join(PARTS)} (default {','.join(DEFAULT_PARTS)})",
    )  # fmt: skip
    parser.add_argument("--txs", type=int, default=8000, help="transfers per end-to-end run")
    parser.add_argument("--senders", type=int, default=32, help="senders (end to end, latency)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (also 1)")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per thread count")
    parser.add_argument("--chain-id", type=int, default=77)
    parser.add_argument("--blocks", type=int, default=20, help="pipeline blocks per side")
    parser.add_argument("--block-txs", type=int, default=1000, help="transfers per pipeline block")
    parser.add_argument("--pipeline-senders", type=int, default=100)
    parser.add_argument("--pipeline-repeats", type=int, default=5, help="pipeline pairs")
    parser.add_argument("--reads", type=int, default=2000, help="svm_getState requests per state")
    parser.add_argument("--no-pyevm", action="store_true", help="skip py-evm's figure")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args, _ = parser.parse_known_args(argv)  # the harness's options are accepted and ignored
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    started = time.time()
    figures: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[Path], Any]]] = []
    if "e2e" in parts:
        steps.append(("e2e", lambda tmp: e2e_figures(args, tmp)))
        if not args.no_pyevm:
            from bench.pyevm import measure

            steps.append(("pyevm", lambda tmp: measure()))
    if "pipeline" in parts:
        steps.append(("pipeline", lambda tmp: pipeline_figures(args, tmp)))
    if "latency" in parts:
        steps.append(("latency", lambda tmp: latency_figures(args, tmp)))
    if "profile" in parts:
        steps.append(("profile", lambda tmp: profile_figures(args, tmp)))
    with tempfile.TemporaryDirectory(prefix="supervm-bench-node-") as name:
        for part, step in steps:
            say(f"{part} ...")
            began = time.perf_counter()
            figures[part] = step(Path(name))
            say(f"{part}: {time.perf_counter() - began:.1f} s")
    print(report(figures, args))
    if args.json:
        document = {
            "bench": "node", "settings": vars(args), "started": started,
            "seconds": round(time.time() - started, 1), "python": platform.python_version(),
            "machine": {"cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]},
            "results": [], "figures": figures,  # no harness pairs (bench.compare reads none)
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(document) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
