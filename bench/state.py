"""State benchmark: what the state tree, the history and pruning cost.

    python -m bench.state [--processes 2] [--json state.json] [--only blocks,reads,proofs,prune]

1. Tree cost in a block (harness ratio, time; target <= 1.3). A block of
   ``--block-txs`` (5,000) token transfers among ``--accounts`` (2,000) accounts
   (``supervm.chain.workload``: its accounts, its mint block, its transfers,
   none oversized), run sequentially on a chain whose head is the mint block.
   Ours: ``Chain.apply(block, mode="sequential")``, i.e. execute, tree update,
   header, then one atomic commit of the write set, the history entries, the
   tree's nodes and the block's records. Raw, "as before the tree": what
   ``Chain.apply`` did before the state tree (603d6bb): two reads of the head,
   ``chain.executor.execute(block, storage, mode="sequential")``, the old
   chained state digest (SHA-256 over the parent digest, the height and the
   sorted write set), then one ``storage.write_batch`` of the write set and
   the old block records (head height, state digest, block record); no tree,
   no history, no header or body. Each side has a chain on a store of its own,
   set up the same way; a repetition executes the same block at the same
   height, and the store is put back between repetitions, untimed
   (``Chain.revert_to`` for ours; for raw, one batch restoring what the block
   wrote). On the memory store and on RocksDB. Beside the ratio (in the
   parent process, outside the harness): median times of each part of
   ``Chain.apply`` over ``--breakdown-reps`` repetitions, the tree update
   (``chain.tree.update`` for the block's write set) among them, and the top
   functions of a cProfile of that tree update.
2. Proofs (absolute rates, not harness ratios). A tree of ``--tree-keys``
   (10^5, then 10^6) keys shaped like token balances, 8-byte values, built by
   ``JellyfishTree.update`` over a MemoryStorage in batches of ``--tree-batch``
   (50,000) keys, without contracts; only the newest version is kept (each
   batch's stale nodes are deleted and no stale records written, as pruning
   would). The build time is that of the updates and their batch writes
   (making the keys excluded), from the empty tree to that size. At
   each size, ``--proof-reps`` (7) repetitions of ``--proofs`` (1,000) random
   present keys: ``JellyfishTree.prove`` per second, ``supervm.tree.verify``
   of the ``Proof`` per second, and ``verify`` of the encoded proof (decode
   included) per second; median and range over the repetitions. Proof size:
   mean and max of ``Proof.encode()`` over the first repetition's keys.
3. Reads, on RocksDB with ``--read-keys`` (10^5) token balances (minted
   through the chain in blocks of 20,000) and then ``--history-blocks``
   (1,000) blocks of ``--block-keys // 2`` (50) transfers each (about 100
   balances changed a block). Harness ratios (time): ``chain.latest().get``
   over ``storage.get`` (target <= 1.1), and ``chain.at(h).get`` over
   ``chain.latest().get``: the same 20,000 random keys on both sides (at
   random heights of the history for the first side of the second), cycled
   through half a cycle apart so that neither side reads what the other has
   just fetched (the same keys back to back made whichever side ran second
   10-30% faster); the views made beforehand (``chain.latest()`` once,
   ``chain.at(h)`` once per height); each repetition's reads done once
   untimed first, so both sides read warm data. In the parent
   process: ``--reads`` (20,000) single reads of each kind, each timed alone
   (``perf_counter_ns``; the timer's own cost is given), every kind its own
   random keys at random heights, the kinds taking turns: ``storage.get``,
   ``chain.latest().get``, a read through the height's view, and
   ``chain.at(h).get(key)`` with the view made for the read; median, p90 and
   p99, and the ratios of the medians.
4. Pruning on RocksDB, after item 3's history, in the parent process: one
   ``chain.prune(keep_blocks=--keep-blocks)`` (100), timed: history
   entries and tree nodes ("versions") reclaimed per second, keys and bytes
   deleted, entries under each history and tree prefix before and after, and
   the store's size on disk before and after: the sum of the files in the
   RocksDB directory after closing the store, and again after a full manual
   compaction (``compact_range`` through rocksdict, on the closed store
   reopened with the store's options: supervm-rocksdb has no compact method,
   and RocksDB only reclaims deleted keys' space when it compacts). The
   pruning runs on the store reopened after that compaction.

Ratios (1, 3) are measured with bench/harness.py in ``--processes`` worker
processes (each builds its own chains and history), the figure the median of
the per-pair ratios with its 95% confidence interval. The absolute figures
(2, 3's per-read times, 4, the breakdown of 1) are measured once in the
parent process after the workers are done (with ``--processes 1``, in the one
process); they are rates and times of this machine, with their spread over
repetitions, not ratios. Every result is checked: state roots, read values,
proofs verified. With the defaults a run takes about 3 minutes on 2 cores
(three builds of item 3's history, one per process, take 80 s of it).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import supervm
from bench.harness import Cycle, Pair, Session, Side, add_arguments, format_time, no_gc, say
from supervm.chain import Block, Chain, PrunedHeightError, workload
from supervm.chain.block import Execution, encode_transactions, transactions_root
from supervm.layout import (
    BLOCK_PREFIX,
    CHANGE_PREFIX,
    HEIGHT_KEY,
    HISTORY_PREFIX,
    TREE_NODE_PREFIX,
    TREE_ROOT_PREFIX,
    TREE_STALE_PREFIX,
    in_state_tree,
    state_key,
)
from supervm.memory import MemoryStorage
from supervm.storage import BatchOp, Storage
from supervm.tree import JellyfishTree, node_storage_key, value_hash, verify

PARTS = ("blocks", "reads", "proofs", "prune")
#: The key the old chain kept its chained state digest under (layout version 1).
OLD_DIGEST_KEY = b"meta/digest"
#: Mints per block when filling the read store.
MINT_BLOCK = 20_000
_BE8 = struct.Struct(">Q")


# -- helpers ------------------------------------------------------------------------------


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e9


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of ``values``."""
    ordered = sorted(values)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0],
        "max": ordered[-1], "n": len(ordered),
    }  # fmt: skip


def percentile(ordered: Sequence[float], share: float) -> float:
    """The ``share`` quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def open_rocksdb(path: Path) -> Storage:
    return supervm.open_storage(f"rocksdb://{path}")


def disk_size(path: Path) -> dict[str, int]:
    """Bytes of every file in a RocksDB directory, and of its SST files alone."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return {
        "total": sum(f.stat().st_size for f in files),
        "sst": sum(f.stat().st_size for f in files if f.suffix == ".sst"),
    }


def compact(path: Path) -> None:
    """A full manual compaction of the closed RocksDB database at ``path``.

    Opened with the options RocksDBStorage opens it with (raw mode, lz4, the
    same for the default column family).
    """
    from rocksdict import DBCompressionType, Options, Rdict

    options = Options(raw_mode=True)
    options.create_if_missing(False)
    options.set_compression_type(DBCompressionType.lz4())
    db = Rdict(str(path), options=options, column_families={"default": options})
    try:
        db.flush()
        db.compact_range(None, None)
    finally:
        db.close()


def count_prefix(storage: Storage, prefix: bytes) -> int:
    return sum(1 for _ in storage.scan(prefix))


# -- 1. tree cost in a block ---------------------------------------------------------------


@dataclass
class BlockSetup:
    """A chain whose head is the mint block, and the transfer block to run on it."""

    chain: Chain
    block: Block
    base: int
    users: list[bytes]
    token: bytes


def block_setup(storage: Storage, accounts: int, txs: int, stack: ExitStack) -> BlockSetup:
    chain = Chain(storage, threads=1)
    stack.callback(chain.close)
    token = chain.deploy(workload.token_code())
    users = workload.accounts(accounts)
    workload.setup(chain, token, users)
    base = chain.head().height
    transfers = workload.transfers(token, users, txs, 1, oversized=0.0)
    return BlockSetup(chain, Block(base + 1, base + 1, tuple(transfers)), base, users, token)


def old_digest(parent: bytes, height: int, run: Execution) -> bytes:
    """The chained state digest the chain computed before the tree (603d6bb)."""
    digest = hashlib.sha256()
    digest.update(b"supervm/state/v1")
    digest.update(parent)
    digest.update(_BE8.pack(height))
    frame = struct.Struct(">I").pack
    for key, value in run.write_set:
        tail = b"\0" if value is None else b"\1" + frame(len(value)) + value
        digest.update(frame(len(key)) + key + tail)
    return digest.digest()


def old_commit_ops(height: int, digest: bytes, run: Execution) -> list[BatchOp]:
    """What the old ``Chain.commit`` wrote: the write set and three records."""
    ops: list[BatchOp] = list(run.write_set)
    ops.append((HEIGHT_KEY, _BE8.pack(height)))
    ops.append((OLD_DIGEST_KEY, digest))
    ops.append((BLOCK_PREFIX + _BE8.pack(height), digest + run.receipts_root))
    return ops


def old_apply(setup: BlockSetup) -> Callable[[], Execution]:
    """The block executed and committed as before the tree, on ``setup``'s store."""
    storage, executor, block = setup.chain.storage, setup.chain.executor, setup.block
    get = storage.get

    def apply() -> Execution:
        get(HEIGHT_KEY)  # the old Chain.head(): height and digest
        parent = get(OLD_DIGEST_KEY) or bytes(32)
        run = executor.execute(block, storage, mode="sequential")
        digest = old_digest(parent, block.height, run)
        storage.write_batch(old_commit_ops(block.height, digest, run))
        return run

    return apply


def old_undo(setup: BlockSetup) -> list[BatchOp]:
    """A batch putting back what one old-path commit of the block changes."""
    storage = setup.chain.storage
    run = setup.chain.executor.execute(setup.block, storage, mode="sequential")
    ops = old_commit_ops(setup.block.height, bytes(32), run)
    return [(key, storage.get(key)) for key, _ in ops]


def block_pair(
    label: str, ours_store: Storage, raw_store: Storage, accounts: int, txs: int,
    stack: ExitStack,
) -> Pair:  # fmt: skip
    ours = block_setup(ours_store, accounts, txs, stack)
    raw = block_setup(raw_store, accounts, txs, stack)
    reference = ours.chain.execute(ours.block, mode="sequential")
    assert all(r.ok for r in reference.receipts), "transfers failed"
    expected_root = reference.state_root
    probe_key, probe_value = reference.write_set[len(reference.write_set) // 2]
    chain, block, base = ours.chain, ours.block, ours.base

    def ours_prepare(n: int) -> Callable[[], object]:
        assert n == 1
        if chain.head().height != base:
            chain.revert_to(base)

        def body() -> object:
            return chain.apply(block, mode="sequential")

        return body

    def ours_check(result: Any) -> None:
        assert result.state_root == expected_root, "the block gave another state root"
        assert chain.storage.get(probe_key) == probe_value

    undo = old_undo(raw)
    apply = old_apply(raw)
    dirty = [False]

    def raw_prepare(n: int) -> Callable[[], object]:
        assert n == 1
        if dirty[0]:
            raw.chain.storage.write_batch(undo)
        dirty[0] = True
        return apply

    def raw_check(run: Any) -> None:
        assert all(r.ok for r in run.receipts), "transfers failed"
        assert raw.chain.storage.get(probe_key) == probe_value

    return Pair(
        f"block of {txs:,} transfers, {label}: Chain.apply (execute + tree + history + commit) "
        "/ execute + commit as before the tree",
        Side("Chain.apply, sequential", ours_prepare, ours_check),
        Side("executor.execute + old digest + one write_batch", raw_prepare, raw_check),
        kind="time", target="<= 1.3", units=1, ops_per_unit=txs, op="tx", warmup=1,
        note=f"{len(reference.write_set):,} keys written, "
        f"{reference.tree.nodes_written:,} tree nodes",
    )  # fmt: skip


def block_pairs(args: argparse.Namespace, tmp: Path, stack: ExitStack) -> list[Pair]:
    say(f"setting up blocks of {args.block_txs:,} transfers ({args.accounts:,} accounts)")
    pairs = [block_pair("memory store", MemoryStorage(), MemoryStorage(), args.accounts,
                        args.block_txs, stack)]  # fmt: skip
    stores = []
    for side in ("ours", "raw"):
        store = open_rocksdb(tmp / f"block-{side}")
        stack.callback(store.close)
        stores.append(store)
    pairs.append(block_pair("RocksDB", *stores, args.accounts, args.block_txs, stack))
    return pairs


def breakdown(label: str, storage: Storage, args: argparse.Namespace, stack: ExitStack) -> dict:
    """Median time of each part of ``Chain.apply`` for the block, and the old path's."""
    setup = block_setup(storage, args.accounts, args.block_txs, stack)
    chain, block, base = setup.chain, setup.block, setup.base
    executor, txs = chain.executor, block.transactions
    apply_old = old_apply(setup)
    undo = old_undo(setup)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any], *fn_args: Any, **options: Any) -> Any:
        with no_gc():
            start = time.perf_counter_ns()
            out = fn(*fn_args, **options)
            times.setdefault(name, []).append(time.perf_counter_ns() - start)
        return out

    for _ in range(args.breakdown_reps):
        run = timed("executor.execute", executor.execute, block, storage, mode="sequential")
        changes = [(key, value) for key, value in run.write_set if in_state_tree(key)]
        tree = timed("tree update", chain.tree.update, block.height, changes, base_version=base)
        timed("transactions root", transactions_root, txs)
        timed("history entries", chain.history.block_ops, block.height, run.write_set)
        timed("block body encoding", encode_transactions, txs)
        timed("Chain.commit", chain.commit, chain.execute(block, mode="sequential"))
        chain.revert_to(base)
        timed("Chain.apply", chain.apply, block, mode="sequential")
        chain.revert_to(base)
        timed("before the tree: execute + commit", apply_old)
        storage.write_batch(undo)
        run = executor.execute(block, storage, mode="sequential")
        ops = old_commit_ops(block.height, bytes(32), run)
        timed("before the tree: the write_batch alone", storage.write_batch, ops)
        storage.write_batch(undo)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "store": label, "keys_changed": len(changes), "tree_nodes_written": tree.nodes_written,
        "median_ns": medians, "tree_update_ns": summary(times["tree update"]),
    }  # fmt: skip


def tree_profile(args: argparse.Namespace, stack: ExitStack, top: int = 15) -> list[dict]:
    """The top functions (own time) of a cProfile of the block's tree update, memory store."""
    setup = block_setup(MemoryStorage(), args.accounts, args.block_txs, stack)
    chain, block = setup.chain, setup.block
    run = chain.executor.execute(block, chain.storage, mode="sequential")
    changes = [(key, value) for key, value in run.write_set if in_state_tree(key)]
    chain.tree.update(block.height, changes, base_version=setup.base)  # warm the node cache
    profile = cProfile.Profile()
    reps = 5
    with no_gc():
        profile.enable()
        for _ in range(reps):
            chain.tree.update(block.height, changes, base_version=setup.base)
        profile.disable()
    stats = pstats.Stats(profile)
    total = stats.total_tt
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        where = f"{Path(filename).name}:{line}({name})" if line else name
        rows.append({
            "function": where, "calls_per_update": calls / reps, "own_ms": own / reps * 1e3,
            "cumulative_ms": cumulative / reps * 1e3, "own_share": own / total,
        })  # fmt: skip
    rows.sort(key=lambda row: -row["own_ms"])
    return rows[:top]


# -- 2. proofs -------------------------------------------------------------------------------

#: The contract the synthetic tree's keys belong to.
TREE_CONTRACT = hashlib.sha256(b"bench/state/token").digest()[:20]


def tree_key(i: int) -> bytes:
    """A key shaped like a token balance: ``c`` + contract + ``bal/`` + a 20-byte account."""
    return state_key(TREE_CONTRACT, b"bal/" + i.to_bytes(20, "big"))


def tree_value(i: int) -> bytes:
    return struct.pack("<Q", (i * 7919 + 1) % (1 << 64))


def proof_figures(args: argparse.Namespace) -> list[dict]:
    sizes = sorted(int(s) for s in args.tree_keys.split(","))
    storage = MemoryStorage()
    tree = JellyfishTree(storage)
    version = present = 0
    build_s = 0.0
    rng = random.Random(args.seed)
    figures = []
    for size in sizes:
        say(f"building a tree of {size:,} keys in batches of {args.tree_batch:,}")
        while present < size:
            upto = min(size, present + args.tree_batch)
            changes = [(tree_key(i), tree_value(i)) for i in range(present, upto)]
            with no_gc():
                start = time.perf_counter_ns()
                update = tree.update(version + 1, changes, base_version=version or None)
                ops = [op for op in update.writes if not op[0].startswith(TREE_STALE_PREFIX)]
                ops += [(node_storage_key(key), None) for key in update.stale]
                storage.write_batch(ops)
                build_s += (time.perf_counter_ns() - start) / 1e9
            version += 1
            present = upto
        root = tree.root_hash(version)
        say(f"  built in {build_s:.1f} s; measuring proofs")
        generate, check, check_encoded = [], [], []
        sizes_bytes: list[int] = []
        for rep in range(args.proof_reps):
            chosen = rng.sample(range(present), args.proofs)
            keys = [tree_key(i) for i in chosen]
            values = [tree_value(i) for i in chosen]
            prove = tree.prove
            with no_gc():
                start = time.perf_counter_ns()
                proofs = [prove(key, version) for key in keys]
                generate.append(args.proofs / ((time.perf_counter_ns() - start) / 1e9))
                start = time.perf_counter_ns()
                ok = [verify(root, k, v, p) for k, v, p in zip(keys, values, proofs, strict=True)]
                check.append(args.proofs / ((time.perf_counter_ns() - start) / 1e9))
                encoded = [proof.encode() for proof in proofs]
                start = time.perf_counter_ns()
                ok += [verify(root, k, v, e) for k, v, e in zip(keys, values, encoded, strict=True)]
                check_encoded.append(args.proofs / ((time.perf_counter_ns() - start) / 1e9))
            assert all(ok), "a proof did not verify"
            assert not verify(root, keys[0], b"x" + values[0], proofs[0]), "a wrong value verified"
            if rep == 0:
                sizes_bytes = [len(e) for e in encoded]
        figures.append({
            "keys": present, "build_s": build_s, "build_keys_per_s": present / build_s,
            "batches": version, "nodes_stored": len(storage),
            "prove_per_s": summary(generate), "verify_per_s": summary(check),
            "verify_encoded_per_s": summary(check_encoded),
            "proof_bytes_mean": statistics.fmean(sizes_bytes), "proof_bytes_max": max(sizes_bytes),
            "proof_bytes_min": min(sizes_bytes), "proofs_per_rep": args.proofs,
        })  # fmt: skip
    return figures


# -- 3. reads and 4. pruning: a RocksDB chain with history ----------------------------------


@dataclass
class History:
    chain: Chain
    storage: Storage
    path: Path
    keys: list[bytes]
    #: Heights of the history blocks' bases: the first is the head after the mints.
    first: int
    head: int


def build_history(args: argparse.Namespace, path: Path, stack: ExitStack) -> History:
    say(f"building a RocksDB chain: {args.read_keys:,} balances, then "
        f"{args.history_blocks:,} blocks of {args.block_keys // 2} transfers")  # fmt: skip
    started = time.perf_counter()
    storage = open_rocksdb(path)
    chain = Chain(storage, threads=1)
    token = chain.deploy(workload.token_code())
    users = workload.accounts(args.read_keys)
    for i in range(0, len(users), MINT_BLOCK):
        height = chain.head().height + 1
        result = chain.apply(workload.mint_block(height, token, users[i : i + MINT_BLOCK]),
                             mode="sequential")  # fmt: skip
        assert all(r.ok for r in result.receipts), "mint failed"
    first = chain.head().height
    stamp = int(time.time())
    for b in range(args.history_blocks):
        txs = workload.transfers(token, users, args.block_keys // 2, 1000 + b, oversized=0.0)
        height = chain.head().height + 1
        result = chain.apply(Block(height, stamp, tuple(txs)), mode="sequential")
        assert all(r.ok for r in result.receipts), "transfers failed"
    keys = [key for key, _ in storage.scan(state_key(token, b"bal/"))]
    assert len(keys) == args.read_keys, f"{len(keys)} balances"
    say(f"  built in {time.perf_counter() - started:.1f} s")
    history = History(chain, storage, path, keys, first, chain.head().height)
    stack.callback(lambda: close_history(history))
    return history


def close_history(history: History) -> None:
    history.chain.close()
    history.storage.close()


def read_side(
    label: str, reads: Sequence[tuple[Callable[[bytes], Any], bytes]], start: int = 0
) -> Side:
    """Reads ``(get, key)`` in turn from ``start``, a run of them a repetition, after an
    untimed pass over that run.

    The two sides of a comparison read the same keys, half a cycle apart, so
    that neither reads what the other has just fetched (which would make
    whichever side runs second faster); the untimed pass puts the keys each
    side reads in the same warm state on both sides.
    """
    cycle = Cycle(reads)
    cycle.position = start % len(reads)

    def prepare(n: int) -> Callable[[], object]:
        chosen = cycle.take(n)

        def body() -> object:
            value = None
            for get, key in chosen:
                value = get(key)
            return value

        body()
        return body

    return Side(label, prepare, _present)


def read_pairs(history: History, args: argparse.Namespace) -> list[Pair]:
    rng = random.Random(args.seed)
    chain, storage = history.chain, history.storage
    keys = [rng.choice(history.keys) for _ in range(20_000)]
    half = len(keys) // 2
    views = {h: chain.at(h) for h in range(history.first, history.head)}
    latest = chain.latest().get
    at = [(views[rng.randrange(history.first, history.head)].get, key) for key in keys]
    history_note = (f"{args.read_keys:,} balances, {history.head - history.first:,} blocks of "
                    "history")  # fmt: skip
    return [
        Pair(f"RocksDB latest read: chain.latest().get / storage.get ({history_note})",
             read_side("chain.latest().get", [(latest, key) for key in keys]),
             read_side("storage.get", [(storage.get, key) for key in keys], half), kind="time",
             target="<= 1.1", op="get"),
        Pair(f"RocksDB read at a random past height: chain.at(h).get / chain.latest().get "
             f"({history_note})",
             read_side("chain.at(h).get, the height's view made beforehand", at),
             read_side("chain.latest().get", [(latest, key) for key in keys], half),
             kind="time", op="get"),
    ]  # fmt: skip


def _present(value: Any) -> None:
    assert value is not None, "a balance read gave None"


def read_figures(history: History, args: argparse.Namespace) -> dict:
    """Single reads timed alone: plain, latest, through a height's view, through chain.at.

    Each kind reads its own random keys at its own random heights, the kinds
    taking turns in a rotating order, so that none reads what another has
    just fetched.
    """
    rng = random.Random(args.seed + 1)
    chain = history.chain
    views = {h: chain.at(h) for h in range(history.first, history.head)}
    latest = chain.latest()
    kinds = ("storage", "latest", "view", "at")
    get = history.storage.get

    def draw() -> tuple[int, bytes]:
        return rng.randrange(history.first, history.head), rng.choice(history.keys)

    reads = {kind: [draw() for _ in range(args.reads)] for kind in kinds}
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {kind: [] for kind in ("timer", *kinds)}
    with no_gc():
        for i in range(args.reads):
            for turn in range(4):
                kind = kinds[(i + turn) % 4]
                height, key = reads[kind][i]
                if kind == "storage":
                    start = clock()
                    get(key)
                elif kind == "latest":
                    start = clock()
                    latest.get(key)
                elif kind == "view":
                    view = views[height]
                    start = clock()
                    view.get(key)
                else:
                    start = clock()
                    chain.at(height).get(key)
                samples[kind].append(clock() - start)
            start = clock()
            samples["timer"].append(clock() - start)
    # The values read at a height are those the tree holds at that version.
    for height, key in reads["view"][:200]:
        value = views[height].get(key)
        assert value is not None
        assert chain.tree.get_value_hash(key, height) == value_hash(value), "a wrong past value"
    out: dict[str, Any] = {"reads": args.reads, "blocks": history.head - history.first}
    for name, values in samples.items():
        ordered = sorted(values)
        out[name] = {"median_ns": statistics.median(ordered), "p90_ns": percentile(ordered, 0.9),
                     "p99_ns": percentile(ordered, 0.99)}  # fmt: skip
    out["latest_over_storage"] = out["latest"]["median_ns"] / out["storage"]["median_ns"]
    out["view_over_latest"] = out["view"]["median_ns"] / out["latest"]["median_ns"]
    out["at_over_latest"] = out["at"]["median_ns"] / out["latest"]["median_ns"]
    return out


PRUNE_PREFIXES = {
    "change records (h/c/)": CHANGE_PREFIX,
    "history entries (h/i/)": HISTORY_PREFIX,
    "tree nodes (t/n/)": TREE_NODE_PREFIX,
    "stale records (t/s/)": TREE_STALE_PREFIX,
    "root records (t/r/)": TREE_ROOT_PREFIX,
}


def prune_figures(history: History, args: argparse.Namespace) -> dict:
    """Close, measure, compact, measure; reopen and prune, timed; close, measure, compact."""
    path = history.path
    counts_before = {name: count_prefix(history.storage, p) for name, p in PRUNE_PREFIXES.items()}
    close_history(history)
    before = {"closed": disk_size(path)}
    compact(path)
    before["compacted"] = disk_size(path)
    storage = open_rocksdb(path)
    chain = Chain(storage, threads=1)
    head = chain.head().height
    say(f"pruning to keep {args.keep_blocks} blocks")
    with no_gc():
        start = time.perf_counter_ns()
        report = chain.prune(keep_blocks=args.keep_blocks)
        elapsed = (time.perf_counter_ns() - start) / 1e9
    assert report.complete
    horizon = chain.horizon()
    assert horizon == head - args.keep_blocks
    key = history.keys[0]
    assert chain.at(horizon).get(key) is not None
    try:
        chain.at(horizon - 1).get(key)
    except PrunedHeightError:
        pass
    else:
        raise AssertionError("a read below the horizon did not raise")
    counts_after = {name: count_prefix(storage, p) for name, p in PRUNE_PREFIXES.items()}
    chain.close()
    storage.close()
    after = {"closed": disk_size(path)}
    compact(path)
    after["compacted"] = disk_size(path)
    versions = report.history_entries + report.tree_nodes
    return {
        "keep_blocks": args.keep_blocks, "head": head, "horizon": horizon, "seconds": elapsed,
        "report": asdict(report), "versions": versions, "versions_per_s": versions / elapsed,
        "keys_per_s": report.keys / elapsed, "bytes_per_s": report.bytes / elapsed,
        "entries_before": counts_before, "entries_after": counts_after,
        "disk_before": before, "disk_after": after,
    }  # fmt: skip


# -- report ----------------------------------------------------------------------------------


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def _rate(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def report(figures: dict) -> str:
    lines: list[str] = []
    for part in figures.get("breakdown", []):
        m = part["median_ns"]
        lines += [
            f"\nParts of one block, {part['store']} ({part['keys_changed']:,} keys changed, "
            f"{part['tree_nodes_written']:,} tree nodes written): median of "
            f"{part['tree_update_ns']['n']} repetitions\n",
            "| part | time |", "| --- | --- |",
        ]  # fmt: skip
        lines += [f"| {name} | {_ms(ns)} |" for name, ns in m.items()]
        t = part["tree_update_ns"]
        lines.append(
            f"\ntree update alone: {_ms(t['median'])} (IQR {_ms(t['q1'])}-{_ms(t['q3'])}), "
            f"{t['median'] / 1e3 / max(1, part['keys_changed']):.1f} µs a key changed; "
            f"Chain.apply / before: {m['Chain.apply'] / m['before the tree: execute + commit']:.2f}"
        )
    if figures.get("tree_profile"):
        lines += ["\nTree update of that block, cProfile, top functions by own time (per update)\n",
                  "| function | calls | own | cumulative | share of own time |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in figures["tree_profile"]:
            lines.append(
                f"| {row['function']} | {row['calls_per_update']:,.0f} | {row['own_ms']:.2f} ms "
                f"| {row['cumulative_ms']:.2f} ms | {row['own_share']:.0%} |"
            )
    if figures.get("proofs"):
        lines += ["\nProofs (absolute rates per second: median (min-max) over repetitions)\n",
                  "| keys | build (from empty) | prove / s | verify / s | verify encoded / s "
                  "| proof bytes mean / max |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for p in figures["proofs"]:
            lines.append(
                f"| {p['keys']:,} | {p['build_s']:.1f} s ({p['build_keys_per_s']:,.0f} keys/s) "
                f"| {_rate(p['prove_per_s'])} | {_rate(p['verify_per_s'])} "
                f"| {_rate(p['verify_encoded_per_s'])} "
                f"| {p['proof_bytes_mean']:.0f} / {p['proof_bytes_max']} |"
            )
    if figures.get("reads"):
        r = figures["reads"]
        lines += [f"\nReads, each timed alone ({r['reads']:,} reads, random keys, random heights "
                  f"of {r['blocks']:,} blocks)\n", "| read | median | p90 | p99 |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        names = {
            "storage": "storage.get",
            "latest": "chain.latest().get",
            "view": "chain.at(h).get, view made before",
            "at": "chain.at(h).get(key), view made per read",
            "timer": "the timer alone",
        }
        for key, name in names.items():
            lines.append(
                f"| {name} | {format_time(r[key]['median_ns'])} | "
                f"{format_time(r[key]['p90_ns'])} | {format_time(r[key]['p99_ns'])} |"
            )
        lines.append(f"\nlatest / storage.get (medians): {r['latest_over_storage']:.2f}; "
                     f"past / latest: {r['view_over_latest']:.2f} (view made before), "
                     f"{r['at_over_latest']:.2f} (chain.at per read)")  # fmt: skip
    if figures.get("prune"):
        p = figures["prune"]
        rep = p["report"]
        lines += [
            f"\nPruning, RocksDB: keep {p['keep_blocks']} of {p['head']:,} blocks (horizon "
            f"{p['horizon']:,}) in {p['seconds']:.2f} s: {p['versions']:,} versions "
            f"({rep['history_entries']:,} history entries + {rep['tree_nodes']:,} tree nodes), "
            f"{p['versions_per_s']:,.0f} versions/s; {rep['keys']:,} keys "
            f"({p['keys_per_s']:,.0f}/s), {_mb(rep['bytes'])} deleted\n",
            "| entries | before | after |", "| --- | --- | --- |",
        ]  # fmt: skip
        for name, count in p["entries_before"].items():
            lines.append(f"| {name} | {count:,} | {p['entries_after'][name]:,} |")
        lines += ["\n| store on disk | before | after |", "| --- | --- | --- |"]
        for state in ("closed", "compacted"):
            b, a = p["disk_before"][state], p["disk_after"][state]
            lines.append(f"| {state}: all files (SST) | {_mb(b['total'])} ({_mb(b['sst'])}) | "
                         f"{_mb(a['total'])} ({_mb(a['sst'])}) |")  # fmt: skip
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def absolute(args: argparse.Namespace, parts: set[str], tmp: Path, stack: ExitStack,
             history: History | None) -> dict:  # fmt: skip
    """The figures measured outside the harness, in this process."""
    figures: dict[str, Any] = {}
    if "blocks" in parts:
        say("timing the parts of a block")
        store = open_rocksdb(tmp / "breakdown")
        stack.callback(store.close)
        figures["breakdown"] = [breakdown("memory store", MemoryStorage(), args, stack),
                                breakdown("RocksDB", store, args, stack)]  # fmt: skip
        figures["tree_profile"] = tree_profile(args, stack)
    if parts & {"reads", "prune"}:
        if history is None:
            history = build_history(args, tmp / "history", stack)
        if "reads" in parts:
            say("timing single reads")
            figures["reads"] = read_figures(history, args)
        if "prune" in parts:
            figures["prune"] = prune_figures(history, args)
    if "proofs" in parts:
        figures["proofs"] = proof_figures(args)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"parts to run, of {','.join(PARTS)} (all)")  # fmt: skip
    parser.add_argument("--accounts", type=int, default=2000, help="accounts of the block (2000)")
    parser.add_argument("--block-txs", type=int, default=5000, help="transfers a block (5000)")
    parser.add_argument("--breakdown-reps", type=int, default=7)
    parser.add_argument("--tree-keys", default="100000,1000000", help="tree sizes for proofs")
    parser.add_argument("--tree-batch", type=int, default=50_000, help="keys per tree update")
    parser.add_argument("--proofs", type=int, default=1000, help="proofs per repetition")
    parser.add_argument("--proof-reps", type=int, default=7)
    parser.add_argument("--read-keys", type=int, default=100_000, help="balances (100000)")
    parser.add_argument("--history-blocks", type=int, default=1000)
    parser.add_argument("--block-keys", type=int, default=100, help="keys changed a block (100)")
    parser.add_argument("--reads", type=int, default=20_000, help="single reads timed")
    parser.add_argument("--keep-blocks", type=int, default=100)
    add_arguments(parser, rounds=300, rep_ms=2.0, budget=16.0, processes=2)
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    session = Session("state", "bench.state", args, "State tree and history")
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="supervm-bench-")))
        history = None
        if not session.spawn(argv):
            pairs = block_pairs(args, tmp, stack) if "blocks" in parts else []
            if "reads" in parts:
                history = build_history(args, tmp / "history", stack)
                pairs += read_pairs(history, args)
            if pairs:
                session.run(pairs)
        if not session.worker:
            figures = absolute(args, parts, tmp, stack, history)
    if not session.finish():
        return 0
    print(report(figures))
    if args.json:
        document = json.loads(Path(args.json).read_text())
        document["figures"] = figures
        Path(args.json).write_text(json.dumps(document) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
