"""Chain benchmark: parallel against sequential block execution, and block commits.

    python -m bench.chain [--threads 2] [--rounds 120] [--processes 3] [--json chain.json]

1. A compute-heavy block with no conflicts: ``--hash-calls`` (40; it was 150,
   which made one sequential block a 120 ms repetition) calls of
   examples/contracts/hasher.wasm's ``hash`` from distinct senders, each running
   ``--hash-rounds`` rounds of hashing (about a millisecond of wasm). Block-STM
   (forced: ``executor.min_parallel_gas = 0``) against sequential execution, and
   the executor left to its own choice against sequential.
2. A block of ``--hot-transfers`` token transfers among ``--hot-accounts`` hot
   accounts (``supervm.chain.workload``: its accounts, mint and transfers, none
   oversized): nearly every transaction conflicts with the one before. Against
   sequential execution: the executor's own choice once it has seen such
   transfers (it then runs them sequentially), the first block a new executor
   sees (it has no gas figures, so it starts with Block-STM), and Block-STM
   forced.
3. Token transfers through ``Chain.execute(mode="sequential")`` on the memory
   store against the bare unchecked loop of ``bench.vm``: the same workload
   transfers among ``--accounts`` accounts, cycled through in the same order on
   both sides; a repetition is one block of at least ``--min-block`` transfers.
4. Committing a block that writes ``--commit-keys`` distinct keys to RocksDB:
   ``Chain.commit`` on a fresh store against one rocksdict ``WriteBatch`` of the
   same entries on a fresh database opened with the options RocksDBStorage uses
   (raw mode, lz4).

Measured with bench/harness.py in ``--processes`` worker processes:
repetitions (here: blocks) of each side interleaved in pairs, the figure the
median of the per-pair ratios with its 95% confidence interval. ``--rounds`` is
the most pairs per comparison over all processes (it used to be the number of
best-of rounds); comparisons whose blocks take long get fewer, within
``--budget`` seconds each (twice that for the hot-account comparisons 2, whose
ratios are the noisiest) and never fewer than ``--min-pairs``. The parallel
comparisons (1, and Block-STM forced in 2) take their figure from the pairs
during which other processes left both cores free, when there are enough of
them ("quiet"; "busy" in the table when not). Every result is checked:
parallel and sequential executions of a block must give the same bytes.
Figures are speed-ups: sequential time / parallel time, bare-loop time /
Chain.execute time, WriteBatch time / Chain.commit time.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from itertools import count
from pathlib import Path
from typing import Any

import supervm
from bench.harness import Cycle, Pair, Session, Side, add_arguments, say
from bench.vm import Transfers, bare_side
from supervm.chain import Block, BlockResult, Chain, Transaction, workload
from supervm.chain.block import encode_transactions, receipts_root, transactions_root
from supervm.chain.header import ZERO_HASH, BlockHeader
from supervm.chain.history import History
from supervm.layout import HEIGHT_KEY, block_key, hash_key, header_key
from supervm.memory import MemoryStorage
from supervm.tree import JellyfishTree

ROOT = Path(__file__).resolve().parent.parent
HASHER = (ROOT / "examples" / "contracts" / "hasher.wasm").read_bytes()


def block_side(
    label: str, chain: Chain, block: Block, mode: str, expected: bytes, *, forced: bool = False,
    last: list[BlockResult] | None = None,
) -> Side:  # fmt: skip
    """Executions of ``block`` (not committed), each checked against ``expected``.

    ``last``, if given, holds the latest result (for its stats).
    """
    executor = chain.executor

    def prepare(n: int) -> Callable[[], object]:
        def body() -> object:
            result = None
            for _ in range(n):
                result = chain.execute(block, mode=mode)
            return result

        if not forced:
            return body

        def forced_body() -> object:
            default = executor.min_parallel_gas
            executor.min_parallel_gas = 0
            try:
                return body()
            finally:
                executor.min_parallel_gas = default

        return forced_body

    def check(result: Any) -> None:
        if result.encode() != expected:
            raise AssertionError(f"{label}: the block gave a different result")
        if last is not None:
            last[:] = [result]

    return Side(label, prepare, check)


def block_pair(name: str, ours: Side, sequential: Side, txs: int, **options: Any) -> Pair:
    """Parallel against sequential, a block per repetition."""
    return Pair(name, ours, sequential, kind="speed", units=1, ops_per_unit=txs, op="tx",
                **options)  # fmt: skip


def how(result: BlockResult) -> str:
    stats = result.stats
    return stats.fallback_reason or stats.mode


# -- 1. compute-heavy, no conflicts ----------------------------------------------------


def compute_heavy(threads: int, txs: int, hash_rounds: int, stack: ExitStack) -> list[Pair]:
    chain = Chain(MemoryStorage(), threads=threads)
    stack.callback(chain.close)
    hasher = chain.deploy(HASHER)
    height = chain.head().height + 1  # after the deploy block
    block = Block(height, height, tuple(
        Transaction(hasher, "hash", struct.pack("<I", hash_rounds) + i.to_bytes(4, "big"),
                    sender=i.to_bytes(4, "big") * 5, gas_limit=10**9)
        for i in range(txs)
    ))  # fmt: skip
    reference = chain.execute(block, mode="sequential")
    assert all(r.ok for r in reference.receipts), "hash calls failed"
    expected = reference.encode()
    own = chain.execute(block, mode="parallel")
    gas = reference.receipts[0].gas_used
    name = f"compute-heavy block ({txs} hash calls, {gas:,} gas each)"

    def sequential() -> Side:
        return block_side("sequential", chain, block, "sequential", expected)

    return [
        block_pair(f"{name}: parallel / sequential, Block-STM forced",
                   block_side("Block-STM forced", chain, block, "parallel", expected, forced=True),
                   sequential(), txs, target=">= 1.6x", quiet=True),
        block_pair(f"{name}: parallel / sequential, executor's own choice",
                   block_side("executor's own choice", chain, block, "parallel", expected),
                   sequential(), txs, quiet=True, note=f"the executor ran it: {how(own)}"),
    ]  # fmt: skip


# -- 2. hot accounts ------------------------------------------------------------------


def hot_accounts(threads: int, txs: int, hot: int, stack: ExitStack) -> list[Pair]:
    chain = Chain(MemoryStorage(), threads=threads)
    stack.callback(chain.close)
    token = chain.deploy(workload.token_code())
    users = workload.accounts(hot)
    workload.setup(chain, token, users)
    height = chain.head().height
    transfers = workload.transfers(token, users, txs, 1, oversized=0.0)
    block = Block(height + 1, height + 1, tuple(transfers))
    reference = chain.execute(block, mode="sequential")
    assert all(r.ok for r in reference.receipts), "transfers failed"
    expected = reference.encode()
    own = chain.execute(block, mode="parallel")  # the executor now knows these transfers
    forced: list[BlockResult] = []

    firsts: list[BlockResult] = []

    def first_prepare(n: int) -> Callable[[], object]:
        # New executors (same store and runtime) know nothing of these transfers yet.
        fresh = [Chain(chain.storage, threads=threads, runtime=chain.runtime) for _ in range(n)]

        def body() -> object:
            result = None
            for each in fresh:
                result = each.execute(block, mode="parallel")
            return result, fresh

        return body

    def first_check(out: Any) -> None:
        result, fresh = out
        for each in fresh:
            each.close()
        if result.encode() != expected:
            raise AssertionError("first sight: the block gave a different result")
        firsts[:] = [result]

    first = Side("new executor, first sight", first_prepare, first_check)
    first_check(first_prepare(1)())
    name = f"hot accounts ({txs:,} transfers over {hot} accounts): parallel / sequential"

    def sequential() -> Side:
        return block_side("sequential", chain, block, "sequential", expected)

    return [
        block_pair(f"{name}, executor's own choice once it knows the transfers",
                   block_side("executor's own choice", chain, block, "parallel", expected),
                   sequential(), txs, target=">= 0.9x", warmup=1, budget_scale=2.0,
                   note=f"the executor ran it: {how(own)}"),
        block_pair(f"{name}, first sight (no gas history)", first, sequential(), txs, warmup=1,
                   budget_scale=2.0, note=f"the executor ran it: {how(firsts[0])}, "
                   f"{firsts[0].stats.executions:,} executions"),
        block_pair(f"{name}, Block-STM forced",
                   block_side("Block-STM forced", chain, block, "parallel", expected, forced=True,
                              last=forced),
                   sequential(), txs, warmup=0, quiet=True,
                   note=lambda: f"{how(forced[0])}, {forced[0].stats.executions:,} executions"),
    ]  # fmt: skip


# -- 3. sequential transfers against the bare loop ----------------------------------------


def sequential_transfers(count: int, accounts: int, min_block: int, stack: ExitStack) -> Pair:
    chain = Chain(MemoryStorage(), threads=1)
    stack.callback(chain.close)
    token = chain.deploy(workload.token_code())
    work = Transfers.make(count, accounts, token)
    workload.setup(chain, token, work.users)
    height = chain.head().height
    cycle = Cycle(work.txs)

    def prepare(n: int) -> Callable[[], object]:
        block = Block(height + 1, height + 1, tuple(
            Transaction(token, "transfer", data, sender=sender, gas_limit=gas)
            for sender, data, gas in cycle.take(n)
        ))  # fmt: skip

        def body() -> object:
            return chain.execute(block, mode="sequential")

        return body

    def check(result: Any) -> None:
        assert all(r.ok for r in result.receipts), "transfers failed"

    ours = Side("Chain.execute(mode='sequential'), memory store", prepare, check)
    return Pair(
        "sequential transfers: Chain.execute / bare unchecked loop (throughput)", ours,
        bare_side(work), kind="speed", target=">= 0.5x", min_units=min_block, op="tx",
    )  # fmt: skip


# -- 4. block commit on RocksDB ----------------------------------------------------------


def synthetic_result(keys: int) -> BlockResult:
    """A block result writing ``keys`` distinct balance-like keys."""
    contract = b"\x42" * 20
    writes = tuple(
        (b"c" + contract + b"bal/" + i.to_bytes(4, "big") * 5, struct.pack("<Q", i * 7919))
        for i in range(keys)
    )
    tree = JellyfishTree(MemoryStorage()).update(1, writes, base_version=None)
    header = BlockHeader(
        height=1, parent_hash=ZERO_HASH, timestamp=1, transactions_root=transactions_root(()),
        state_root=tree.root_hash, receipts_root=receipts_root(()),
    )  # fmt: skip
    return BlockResult(header, (), writes, tree, ())


class _Fresh:
    """One fresh database per repetition: the previous one is closed and removed first."""

    def __init__(self, workdir: Path, side: str, stack: ExitStack) -> None:
        self.workdir, self.side = workdir, side
        self.numbers = count()
        self.open: list[tuple[Path, Callable[[], object]]] = []
        stack.callback(self.clear)

    def path(self) -> Path:
        self.clear()
        return self.workdir / f"{self.side}-{next(self.numbers)}"

    def keep(self, path: Path, close: Callable[[], object]) -> None:
        self.open.append((path, close))

    def clear(self) -> None:
        for path, close in self.open:
            close()
            shutil.rmtree(path, ignore_errors=True)
        self.open.clear()


def rocksdb_commit(keys: int, workdir: Path, stack: ExitStack) -> Pair:
    from rocksdict import DBCompressionType, Options, Rdict, WriteBatch

    result = synthetic_result(keys)
    probe_key, probe_value = result.write_set[keys // 2]
    # What Chain.commit adds for the block's history on a fresh store (every key new).
    history = History(MemoryStorage()).block_ops(1, result.write_set)
    ours_dbs, raw_dbs = _Fresh(workdir, "ours", stack), _Fresh(workdir, "raw", stack)

    def ours_prepare(n: int) -> Callable[[], object]:
        assert n == 1
        path = ours_dbs.path()
        store = supervm.open_storage(f"rocksdb://{path}")
        chain = Chain(store, threads=1)

        def close() -> None:
            chain.close()
            store.close()

        ours_dbs.keep(path, close)

        def body() -> object:
            chain.commit(result)
            return chain

        return body

    def ours_check(chain: Any) -> None:
        assert chain.head() == (1, result.block_hash, result.state_root)
        assert chain.storage.get(probe_key) == probe_value

    def raw_prepare(n: int) -> Callable[[], object]:
        assert n == 1
        path = raw_dbs.path()
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_compression_type(DBCompressionType.lz4())
        db = Rdict(str(path), options=options, column_families={"default": options})
        raw_dbs.keep(path, db.close)

        def body() -> object:
            # The same entries Chain.commit writes: the write set, its history (the old
            # values Chain.commit reads are all absent here), the tree's nodes (computed
            # before, as execution does) and the block's records.
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            for key, value in result.write_set:
                put(key, value)
            for key, value in history:
                put(key, value)
            for key, value in result.tree.writes:
                put(key, value)
            put(header_key(1), result.header.encode())
            put(block_key(1), encode_transactions(()))
            put(hash_key(result.block_hash), struct.pack(">Q", 1))
            put(HEIGHT_KEY, struct.pack(">Q", 1))
            db.write(wb)
            return db

        return body

    def raw_check(db: Any) -> None:
        assert db.get(probe_key) == probe_value

    return Pair(
        f"RocksDB block commit of {keys:,} keys: Chain.commit / raw WriteBatch (throughput)",
        Side("Chain.commit on a fresh RocksDB store", ours_prepare, ours_check),
        Side("rocksdict WriteBatch on a fresh database", raw_prepare, raw_check),
        kind="speed", target=">= 0.8x", units=1, ops_per_unit=keys, op="key",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hash-calls", type=int, default=40)
    parser.add_argument("--hash-rounds", type=int, default=3000)
    parser.add_argument("--hot-accounts", type=int, default=4)
    parser.add_argument("--hot-transfers", type=int, default=5000)
    parser.add_argument("--transfers", type=int, default=20000, help="distinct transfers")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--min-block", type=int, default=2000, help="least transfers per block")
    parser.add_argument("--commit-keys", type=int, default=20000)
    add_arguments(parser, rounds=120, rep_ms=20.0, budget=20.0, processes=3)
    args = parser.parse_args(argv)
    session = Session("chain", "bench.chain", args, f"Chain, {args.threads} threads")
    if not session.spawn(argv):
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="supervm-bench-")))
            say("setting up blocks")
            pairs = compute_heavy(args.threads, args.hash_calls, args.hash_rounds, stack)
            pairs += hot_accounts(args.threads, args.hot_transfers, args.hot_accounts, stack)
            pairs.append(sequential_transfers(args.transfers, args.accounts, args.min_block, stack))
            pairs.append(rocksdb_commit(args.commit_keys, tmp, stack))
            session.run(pairs)
    session.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
