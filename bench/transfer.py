"""Moving state between stores: snapshots and block files against a raw copy loop.

    python -m bench.transfer [--keys 200000] [--pairs rocksdb:lmdb,lmdb:rocksdb,sqlite:rocksdb]
                             [--memory-keys 1000000,250000] [--rounds 5] [--json transfer.json]

Four parts (``--only``, all by default):

1. ``rates``: for each source:target pair of back ends, a source store holding
   ``--keys`` (200,000) state pairs (made by importing a synthetic snapshot of
   them, bench/synthetic.py: 45-byte keys shaped like contract state,
   ``state_key(contract, b"bal/" + account)``, 100-byte incompressible values;
   the chain stands at block 1). Each repetition (``--rounds``, 5) times, in
   a random order (the raw copy first or last):
   - *raw copy*: the source's state pairs scanned in key order through the
     Storage API as the export reads them (``layout.state_pairs``:
     ``scan_range`` over ``state_ranges()``, or ``scan`` filtered by
     ``in_state_tree`` on a store without range scans) and written to a fresh, empty target store in
     ``write_batch`` batches of ``--batch`` (10,000) pairs: no tree, no
     hashing, no file;
   - *export*: ``export_snapshot(source, file)`` with its defaults (4 MiB
     chunks; since d58106e ``verify=False``: the export does not rebuild the
     root, the import always does);
   - *import*: ``import_snapshot(file, target)`` into a fresh, empty target
     store of the target back end.
   Opening and closing the stores, and deleting them, are not timed. Each
   repetition's figures are ratios of its own times: export rate / raw copy
   rate (raw time / export time), import rate / raw rate, and end to end, raw
   time / (export + import time). The figure is the median over repetitions,
   with a 95% bootstrap interval (``harness.median_ci``), the quartiles and
   the range. Every import is checked: its root and key count are the
   source's, and the raw copy's key count too.
2. ``memory`` (run first, while this process is small): for each of
   ``--memory-keys`` (1,000,000 and 250,000), a synthetic snapshot file is
   written (in a child process), then imported into a fresh RocksDB store in
   a child process, and that store exported to a file in another child
   process (``--chunk-bytes``, 1 MiB; run_bytes the default, four chunks).
   Each child reports its own ``ru_maxrss`` after its imports and opening the
   store, and again after the operation (the growth is what the operation
   added to the peak; Linux carries the parent's peak over fork and exec into
   ``ru_maxrss``, hence the small parent), and the highest RSS a thread
   sampling ``/proc/self/statm`` every 5 ms saw during the operation over the
   RSS just before it. For ``--tracemalloc-keys`` (100,000) the same two
   children run again with ``tracemalloc`` started after opening the store:
   the peak of the Python heap during the operation (tracemalloc slows it
   about sevenfold, hence the smaller state).
3. ``sync``: a RocksDB chain with the token deployed and ``--sync-accounts``
   (2,000) accounts minted, then ``--sync-blocks`` (50) blocks of
   ``--sync-txs`` (500) transfers; ``export_blocks`` of those blocks, and a
   snapshot at their base. Each repetition imports that snapshot into two
   fresh RocksDB stores (untimed) and times ``apply_blocks`` on each: with the
   file's write sets, and with ``reexecute=True, mode="sequential"``, in a
   random order. Blocks/s and keys/s (the write sets' keys), median and range.
4. ``profile``: cProfile of one export and one import of the first pair (only
   when a rate ratio is under the 0.5 target, or with ``--only profile``): the
   top functions by own time and their share.

Absolute rates are of this machine (2 shared cores); only the ratios, measured
in the same run, compare across machines.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import supervm
from bench import synthetic
from bench.harness import median_ci, no_gc, say
from supervm.chain import Block, Chain, workload
from supervm.layout import state_pairs
from supervm.snapshot import export_snapshot, import_snapshot
from supervm.storage import Storage
from supervm.sync import apply_blocks, export_blocks

PARTS = ("rates", "memory", "sync", "profile")
TARGET = 0.5


# -- helpers ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    with no_gc():
        start = time.perf_counter_ns()
        out = fn()
        return (time.perf_counter_ns() - start) / 1e9, out


def spread(values: list[float]) -> dict[str, Any]:
    """Median, 95% bootstrap interval, quartiles and range of ``values``."""
    ordered = sorted(values)
    low, high = median_ci(ordered, [0] * len(ordered))
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered), "ci_low": low, "ci_high": high, "q1": q1,
        "q3": q3, "min": ordered[0], "max": ordered[-1], "n": len(ordered), "values": values,
    }  # fmt: skip


def url(backend: str, path: Path) -> str:
    """The URL of a store at the absolute ``path`` (SQLite's takes one more slash)."""
    return f"sqlite:///{path}" if backend == "sqlite" else f"{backend}://{path}"


def open_store(backend: str, path: Path) -> Storage:
    return supervm.open_storage(url(backend, path))


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        for p in path.parent.glob(path.name + "*"):  # sqlite's -wal and -shm too
            p.unlink()


def raw_copy(source: Storage, target: Storage, batch: int) -> int:
    """The bare loop: scan the state pairs, write them in batches of ``batch``."""
    ops: list[tuple[bytes, bytes]] = []
    append = ops.append
    write = target.write_batch
    count = 0
    for pair in state_pairs(source):
        append(pair)
        if len(ops) >= batch:
            write(ops)
            count += len(ops)
            ops = []
            append = ops.append
    if ops:
        write(ops)
        count += len(ops)
    return count


def make_source(backend: str, path: Path, keys: int, tmp: Path) -> synthetic.Synthetic:
    """A store of ``backend`` at ``path`` holding ``keys`` synthetic pairs at block 1."""
    file = tmp / f"synthetic-{keys}.snap"
    made = synthetic.write_snapshot(file, keys)
    store = open_store(backend, path)
    try:
        report = import_snapshot(file, store)
        assert report.head.state_root == made.state_root
    finally:
        store.close()
    file.unlink()
    return made


# -- 1. rates -----------------------------------------------------------------------------


def rate_raw(source: Storage, dst: str, tmp: Path, args: argparse.Namespace) -> float:
    """One raw copy into a fresh ``dst`` store; its seconds."""
    path = tmp / f"raw-{dst}"
    target = open_store(dst, path)
    seconds, count = timed(lambda: raw_copy(source, target, args.batch))
    target.close()
    remove(path)
    assert count == args.keys, f"raw copy wrote {count} pairs"
    return seconds


def rate_transfer(
    source: Storage, made: synthetic.Synthetic, dst: str, tmp: Path, args: argparse.Namespace,
    times: dict[str, list[float]], sizes: list[int],
) -> None:  # fmt: skip
    """One export of ``source`` and one import of the file into a fresh ``dst`` store."""
    file = tmp / "out.snap"
    seconds, manifest = timed(lambda: export_snapshot(source, file))
    assert manifest.state_root == made.state_root
    assert manifest.keys == args.keys
    times["export"].append(seconds)
    sizes.append(manifest.file_size)
    path = tmp / f"import-{dst}"
    target = open_store(dst, path)
    seconds, report = timed(lambda: import_snapshot(file, target))
    target.close()
    remove(path)
    file.unlink()
    assert report.head.state_root == made.state_root
    assert report.keys == args.keys
    times["import"].append(seconds)


def rate_figures(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    rng = random.Random(args.seed)
    sources: dict[str, tuple[Storage, synthetic.Synthetic]] = {}
    out = []
    with ExitStack() as stack:
        for src, _ in pairs:
            if src not in sources:
                say(f"making a {src} source of {args.keys:,} keys")
                made = make_source(src, tmp / f"source-{src}", args.keys, tmp)
                store = open_store(src, tmp / f"source-{src}")
                stack.callback(store.close)
                sources[src] = (store, made)
        for src, dst in pairs:
            source, made = sources[src]
            say(f"{src} -> {dst}: {args.rounds} repetitions")
            times: dict[str, list[float]] = {"raw": [], "export": [], "import": []}
            sizes: list[int] = []
            for rep in range(args.rounds):
                steps: list[Callable[[], None]] = [
                    lambda: times["raw"].append(rate_raw(source, dst, tmp, args)),  # noqa: B023
                    lambda: rate_transfer(source, made, dst, tmp, args, times, sizes),  # noqa: B023
                ]
                rng.shuffle(steps)
                for step in steps:
                    step()
                say(f"  rep {rep + 1}: raw {times['raw'][-1]:.2f} s, export "
                    f"{times['export'][-1]:.2f} s, import {times['import'][-1]:.2f} s")  # fmt: skip
            raw_t, exp_t, imp_t = times["raw"], times["export"], times["import"]
            keys, nbytes = args.keys, made.state_bytes
            rates = {}
            for name, values in times.items():
                rates[name] = {
                    "keys_per_s": spread([keys / t for t in values]),
                    "mb_per_s": spread([nbytes / 1e6 / t for t in values]),
                    "seconds": spread(values),
                }
            out.append({
                "source": src, "target": dst, "keys": keys, "state_bytes": nbytes,
                "file_bytes": statistics.median(sizes), "rates": rates,
                "export_ratio": spread([r / e for r, e in zip(raw_t, exp_t, strict=True)]),
                "import_ratio": spread([r / i for r, i in zip(raw_t, imp_t, strict=True)]),
                "end_to_end_ratio": spread(
                    [r / (e + i) for r, e, i in zip(raw_t, exp_t, imp_t, strict=True)]
                ),
            })  # fmt: skip
    return out


# -- 2. memory (child processes) ------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """In a child process: one export or import, with its own memory figures, as JSON."""
    import tracemalloc

    if args.child == "synth":
        made = synthetic.write_snapshot(args.file, args.keys, chunk_bytes=args.chunk_bytes)
        print(json.dumps({"keys": made.keys, "root": made.state_root.hex(),
                          "state_bytes": made.state_bytes}))  # fmt: skip
        return 0
    store = supervm.open_storage(args.store)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current = _current_rss()
    if args.tracemalloc:
        tracemalloc.start()
    sampler = _Sampler()
    start = time.perf_counter()
    if args.child == "export":
        manifest = export_snapshot(store, args.file, chunk_bytes=args.chunk_bytes)
        keys, root = manifest.keys, manifest.state_root
    else:
        report = import_snapshot(args.file, store)
        keys, root = report.keys, report.head.state_root
    seconds = time.perf_counter() - start
    sampled = sampler.stop()
    heap = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    if args.tracemalloc:
        tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.close()
    print(json.dumps({
        "operation": args.child, "keys": keys, "root": root.hex(), "seconds": seconds,
        "maxrss_before_kb": before, "maxrss_after_kb": after, "rss_before_kb": current,
        "growth_kb": after - before, "sampled_peak_kb": sampled,
        "sampled_growth_kb": sampled - current, "tracemalloc_peak_bytes": heap,
    }))  # fmt: skip
    return 0


class _Sampler:
    """The highest current RSS seen, read every 5 ms by a thread, while the operation runs.

    ``ru_maxrss`` is the process's peak so far, which opening a store may already
    have set higher than anything the operation reaches (RocksDB recovering its
    log on open): the sampled peak shows the operation's own.
    """

    def __init__(self) -> None:
        self.peak = _current_rss()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _current_rss())

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return max(self.peak, _current_rss())


def _current_rss() -> int:
    """Resident set size now, in KiB (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def run_child(operation: str, store: str, file: Path, chunk_bytes: int,
              trace: bool = False, keys: int = 0) -> dict[str, Any]:  # fmt: skip
    command = [sys.executable, "-m", "bench.transfer", "--child", operation, "--store", store,
               "--file", str(file), "--chunk-bytes", str(chunk_bytes),
               "--keys", str(keys)]  # fmt: skip
    if trace:
        command.append("--tracemalloc")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_figures(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    runs = [(int(n), False) for n in args.memory_keys.split(",") if n]
    runs += [(int(n), True) for n in args.tracemalloc_keys.split(",") if n]
    out = []
    for keys, trace in runs:
        say(f"memory: {keys:,} keys, chunks of {args.chunk_bytes:,} bytes"
            f"{', tracemalloc' if trace else ''}")  # fmt: skip
        file = tmp / f"mem-{keys}.snap"
        # Written in a child too: this process's peak RSS stays that of its imports, and
        # the children, which inherit it as their ru_maxrss (Linux keeps it across
        # fork and exec), start from their own.
        made = run_child("synth", "", file, args.chunk_bytes, keys=keys)
        store = url("rocksdb", tmp / f"mem-{keys}")
        imported = run_child("import", store, file, args.chunk_bytes, trace)
        file.unlink()
        exported = run_child("export", store, tmp / "mem-out.snap", args.chunk_bytes, trace)
        for figures in (imported, exported):
            assert figures["keys"] == keys and figures["root"] == made["root"]
        remove(tmp / f"mem-{keys}")
        (tmp / "mem-out.snap").unlink()
        out.append({"keys": keys, "state_bytes": made["state_bytes"], "tracemalloc": trace,
                    "chunk_bytes": args.chunk_bytes, "import": imported,
                    "export": exported})  # fmt: skip
        say(f"  {'tracemalloc' if trace else 'rss'}: import +{imported['growth_kb'] / 1024:.1f}"
            f" MiB, export +{exported['growth_kb'] / 1024:.1f} MiB")  # fmt: skip
    return out


# -- 3. incremental sync ------------------------------------------------------------------


def sync_figures(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    say(f"sync: {args.sync_blocks} blocks of {args.sync_txs} transfers, "
        f"{args.sync_accounts:,} accounts")  # fmt: skip
    storage = open_store("rocksdb", tmp / "sync-source")
    chain = Chain(storage, threads=1)
    token = chain.deploy(workload.token_code())
    users = workload.accounts(args.sync_accounts)
    workload.setup(chain, token, users)
    base = chain.head().height
    stamp = 1_700_000_000
    for b in range(args.sync_blocks):
        txs = workload.transfers(token, users, args.sync_txs, 1000 + b, oversized=0.0)
        height = chain.head().height + 1
        result = chain.apply(Block(height, stamp + b, tuple(txs)), mode="sequential")
        assert all(r.ok for r in result.receipts), "transfers failed"
    head = chain.head()
    chain.close()
    blocks_file, snap = tmp / "sync.blocks", tmp / "sync-base.snap"
    manifest = export_blocks(storage, blocks_file, from_height=base)
    export_snapshot(storage, snap, height=base)
    storage.close()
    rng = random.Random(args.seed)
    times: dict[str, list[float]] = {"write sets": [], "reexecute": []}
    for rep in range(args.rounds):
        order = list(times)
        rng.shuffle(order)
        for name in order:
            path = tmp / f"sync-{rep}-{name.replace(' ', '-')}"
            target = open_store("rocksdb", path)
            import_snapshot(snap, target)
            reexecute = name == "reexecute"
            seconds, report = timed(lambda: apply_blocks(
                blocks_file, target, reexecute=reexecute, mode="sequential"  # noqa: B023
            ))  # fmt: skip
            assert report.head.block_hash == head.block_hash and report.applied == args.sync_blocks
            target.close()
            remove(path)
            times[name].append(seconds)
        say(f"  rep {rep + 1}: write sets {times['write sets'][-1]:.2f} s, reexecute "
            f"{times['reexecute'][-1]:.2f} s")  # fmt: skip
    blocks, keys = manifest.blocks, manifest.keys
    out: dict[str, Any] = {
        "blocks": blocks, "keys": keys, "txs_per_block": args.sync_txs,
        "accounts": args.sync_accounts, "file_bytes": manifest.file_size,
    }  # fmt: skip
    for name, values in times.items():
        out[name] = {
            "seconds": spread(values), "blocks_per_s": spread([blocks / t for t in values]),
            "keys_per_s": spread([keys / t for t in values]),
        }  # fmt: skip
    out["speedup"] = spread([r / w for w, r in zip(times["write sets"], times["reexecute"],
                                                    strict=True)])  # fmt: skip
    return out


# -- 4. profile ---------------------------------------------------------------------------


def profile_figures(args: argparse.Namespace, tmp: Path, top: int = 15) -> dict[str, Any]:
    src, dst = args.pairs.split(",")[0].split(":")
    say(f"profiling export and import, {src} -> {dst}, {args.keys:,} keys")
    make_source(src, tmp / "prof-source", args.keys, tmp)
    source = open_store(src, tmp / "prof-source")
    file = tmp / "prof.snap"
    out: dict[str, Any] = {"source": src, "target": dst, "keys": args.keys}
    for name in ("export", "import"):
        target = open_store(dst, tmp / "prof-target") if name == "import" else None
        profile = cProfile.Profile()
        with no_gc():
            profile.enable()
            if target is None:
                export_snapshot(source, file)
            else:
                import_snapshot(file, target)
            profile.disable()
        if target is not None:
            target.close()
        stats = pstats.Stats(profile)
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (filename, line, func), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
            where = f"{Path(filename).name}:{line}({func})" if line else func
            rows.append({"function": where, "calls": calls, "own_s": own,
                         "cumulative_s": cumulative, "own_share": own / total,
                         "cumulative_share": cumulative / total})  # fmt: skip
        rows.sort(key=lambda row: -row["own_s"])
        out[name] = {"total_s": total, "top": rows[:top]}
    source.close()
    return out


# -- report -------------------------------------------------------------------------------


def _ratio(s: dict[str, Any]) -> str:
    return (f"{s['median']:.2f} | {s['ci_low']:.2f}-{s['ci_high']:.2f} | "
            f"{s['q1']:.2f}-{s['q3']:.2f} | {s['min']:.2f}-{s['max']:.2f} | {s['n']}")  # fmt: skip


def _rate(s: dict[str, Any], digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def _rss(m: dict[str, Any]) -> str:
    mib = 1024
    return (f"+{m['growth_kb'] / mib:.1f} MiB ({m['maxrss_before_kb'] / mib:.0f} -> "
            f"{m['maxrss_after_kb'] / mib:.0f}); +{m['sampled_growth_kb'] / mib:.1f} MiB "
            f"({m['rss_before_kb'] / mib:.0f} -> {m['sampled_peak_kb'] / mib:.0f})")  # fmt: skip


def report(figures: dict[str, Any]) -> str:
    lines: list[str] = []
    if figures.get("rates"):
        lines += [
            "Transfer rates over a raw scan-and-write_batch copy between the same back ends "
            "(throughput ratios: raw time / ours time, higher is better; per repetition)\n",
            "| comparison | ratio | 95% CI | IQR | min-max | reps | target | met |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for f in figures["rates"]:
            for name, label in (("export_ratio", "export"), ("import_ratio", "import"),
                                ("end_to_end_ratio", "export + import")):  # fmt: skip
                s = f[name]
                met = "yes" if s["median"] >= TARGET else "no"
                lines.append(f"| {f['source']} -> {f['target']}, {f['keys']:,} keys: {label} / raw "
                             f"copy | {_ratio(s)} | >= {TARGET} | {met} |")  # fmt: skip
        lines += ["\n| pair | step | keys/s median (min-max) | MB/s | seconds |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for f in figures["rates"]:
            for step in ("raw", "export", "import"):
                r = f["rates"][step]
                lines.append(f"| {f['source']} -> {f['target']} | {step} | "
                             f"{_rate(r['keys_per_s'])} | {_rate(r['mb_per_s'], 1)} | "
                             f"{_rate(r['seconds'], 2)} |")  # fmt: skip
        f = figures["rates"][0]
        lines.append(f"\nstate {f['state_bytes'] / 1e6:.1f} MB of keys and values; snapshot "
                     f"file {f['file_bytes'] / 1e6:.1f} MB")  # fmt: skip
    if figures.get("memory"):
        lines += ["\nPeak memory of one export / import, each in a fresh child process "
                  "(RocksDB; growth of ru_maxrss over the operation; tracemalloc: Python heap "
                  "peak)\n",
                  "| keys | state | measure | import | export | import s | export s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for m in figures["memory"]:
            i, e = m["import"], m["export"]
            if m["tracemalloc"]:
                measure = "tracemalloc peak"
                a = f"{i['tracemalloc_peak_bytes'] / 2**20:.1f} MiB"
                b = f"{e['tracemalloc_peak_bytes'] / 2**20:.1f} MiB"
            else:
                measure = "ru_maxrss growth (before -> after); sampled RSS peak - RSS before"
                a, b = _rss(i), _rss(e)
            lines.append(f"| {m['keys']:,} | {m['state_bytes'] / 1e6:.0f} MB | {measure} | {a} | "
                         f"{b} | {i['seconds']:.1f} | {e['seconds']:.1f} |")  # fmt: skip
    if figures.get("sync"):
        s = figures["sync"]
        lines += [f"\nIncremental sync, RocksDB: apply_blocks of {s['blocks']} blocks of "
                  f"{s['txs_per_block']} transfers ({s['keys']:,} write-set keys)\n",
                  "| apply | blocks/s median (min-max) | keys/s | seconds |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for name in ("write sets", "reexecute"):
            r = s[name]
            lines.append(f"| {name} | {_rate(r['blocks_per_s'], 1)} | {_rate(r['keys_per_s'])} "
                         f"| {_rate(r['seconds'], 2)} |")  # fmt: skip
        sp = s["speedup"]
        lines.append(f"\nwrite sets / reexecute (speed): {sp['median']:.2f}x "
                     f"[{sp['ci_low']:.2f}-{sp['ci_high']:.2f}], range {sp['min']:.2f}-"
                     f"{sp['max']:.2f}")  # fmt: skip
    if figures.get("profile"):
        p = figures["profile"]
        for name in ("export", "import"):
            q = p[name]
            lines += [f"\ncProfile of one {name}, {p['source']} -> {p['target']}, {p['keys']:,} "
                      f"keys ({q['total_s']:.2f} s under the profiler): top by own time\n",
                      "| function | calls | own | share | cumulative |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for row in q["top"]:
                lines.append(
                    f"| {row['function']} | {row['calls']:,} | {row['own_s']:.2f} s | "
                    f"{row['own_share']:.0%} | {row['cumulative_share']:.0%} |"
                )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="rates,memory,sync",
                        help=f"parts, of {','.join(PARTS)} (rates,memory,sync; profile runs "
                        "when a rate ratio misses the target)")  # fmt: skip
    parser.add_argument("--keys", type=int, default=200_000, help="state pairs for the rates")
    parser.add_argument("--pairs", default="rocksdb:lmdb,lmdb:rocksdb,sqlite:rocksdb",
                        help="source:target back ends")  # fmt: skip
    parser.add_argument("--batch", type=int, default=10_000, help="raw copy's batch size")
    parser.add_argument("--memory-keys", default="1000000,250000")
    parser.add_argument("--tracemalloc-keys", default="100000",
                        help="sizes measured with tracemalloc (it slows Python ~7x)")  # fmt: skip
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20, help="memory part's chunks")
    parser.add_argument("--sync-blocks", type=int, default=50)
    parser.add_argument("--sync-txs", type=int, default=500)
    parser.add_argument("--sync-accounts", type=int, default=2000)
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", choices=("export", "import", "synth"), help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # the harness's options are accepted and ignored
    if args.child:
        return child(args)
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    started = time.time()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="supervm-bench-") as name:
        tmp = Path(name)
        if "memory" in parts:  # first, while this process's peak RSS is small
            figures["memory"] = memory_figures(args, tmp)
        if "rates" in parts:
            figures["rates"] = rate_figures(args, tmp)
        if "sync" in parts:
            figures["sync"] = sync_figures(args, tmp)
        missed = any(
            f[k]["median"] < TARGET for f in figures.get("rates", [])
            for k in ("export_ratio", "import_ratio", "end_to_end_ratio")
        )  # fmt: skip
        if "profile" in parts or (missed and not args.no_profile):
            figures["profile"] = profile_figures(args, tmp)
    print(report(figures))
    if args.json:
        document = {
            "bench": "transfer", "settings": {k: v for k, v in vars(args).items()
                                              if k not in ("child", "store", "file")},
            "started": started, "seconds": round(time.time() - started, 1),
            "python": platform.python_version(),
            "machine": {"cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]},
            "results": [], "figures": figures,  # no harness pairs (bench.compare reads none)
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(document) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
