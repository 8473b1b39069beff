"""MVMemory benchmark: the hot-key case of parallel block execution.

    python -m bench.mvmemory [--txs 5000] [--rounds 5] [--before SECONDS]

Every transaction of a block writes the same key (``MVMemory.record``), then
every transaction reads that key at its own index (``MVMemory.read``), as
Block-STM does when all transactions of a block touch one hot key, e.g. a
counter or a fee account. A lookup has to find the highest writer below the
reader among all the key's writers, so its cost depends on how versions are
kept; the same work at a tenth of the size shows how the time grows.

Prints the median of ``--rounds`` rounds for ``--txs`` transactions and for a
tenth of them, and their ratio (linear growth gives about 10, quadratic about
100). With ``--before`` (a median measured earlier, e.g. on the code before a
change) it also prints before / now.

The pure-Python work here holds the GIL, so the figures do not depend on the
number of cores, only on the speed of one.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from supervm.chain.mvmemory import MVMemory
from supervm.memory import MemoryStorage
from supervm.state import StorageView

KEY = b"hot/counter"


def hot_key(txs: int) -> float:
    """Seconds for ``txs`` writes of one key, then ``txs`` reads of it at each index."""
    memory = MVMemory(StorageView(MemoryStorage()))
    values = [index.to_bytes(8, "little") for index in range(txs)]
    gc.collect()
    start = time.perf_counter()
    for index in range(txs):
        memory.record(index, 0, [(KEY, values[index])])
    for index in range(txs):
        version, value = memory.read(KEY, index)
        expected = None if index == 0 else values[index - 1]
        if value != expected or (version is not None and version[0] != index - 1):
            raise AssertionError(f"read at {index} saw {version}, {value!r}")
    return time.perf_counter() - start


def median(txs: int, rounds: int) -> float:
    return statistics.median(hot_key(txs) for _ in range(rounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=float, help="an earlier median, in seconds")
    args = parser.parse_args(argv)
    small_txs = max(1, args.txs // 10)
    big = median(args.txs, args.rounds)
    small = median(small_txs, args.rounds)
    print(
        f"hot key, {args.txs:,} writes + {args.txs:,} reads: {big:.4f} s (median of {args.rounds})"
    )
    print(f"hot key, {small_txs:,} writes + {small_txs:,} reads: {small:.4f} s")
    print(f"growth for 10x the transactions: {big / small:.1f}x (linear ~10, quadratic ~100)")
    if args.before is not None:
        print(f"before / now: {args.before:.4f} s / {big:.4f} s = {args.before / big:.1f}x")


if __name__ == "__main__":
    main()
