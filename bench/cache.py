"""Cache benchmark: a get through CachedStorage versus the same get from the store itself.

    python -m bench.cache [--backends rocksdb,memory] [--keys 20000] [--rounds 300]
                          [--processes 4] [--rep-ms 1] [--json cache.json]

In each of ``--processes`` worker processes, a store of each back end (RocksDB
through ``rocksdb://``, the memory store) is filled with ``--keys`` keys (4-byte
big-endian counters behind ``k``, 100-byte values; RocksDB is then reopened,
which writes them to a table file, so its gets are reads of a table file through
the block cache rather than of the memtable). Then, per back end, three
comparisons of point gets of those keys, in key order, cycling (see
bench/harness.py for the method: interleaved pairs of ~``--rep-ms`` ms
repetitions, median of the per-pair ratios, 95% bootstrap interval):

* hit: a ``CachedStorage`` holding every key (read once before measuring), so
  every get is answered from the cache;
* miss: a ``CachedStorage`` with room for a tenth of the keys, so every get of
  the cycle misses, reads the store, caches the value and evicts the least
  recently used entry;
* no cache: a ``CachedStorage`` of ``max_bytes=0`` (the wrapper alone).

Each against the same gets of the store itself (``store.get``). Figures are
cached time / store time: below 1.00 the cache is faster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import supervm
from bench.harness import Cycle, Pair, Session, Side, add_arguments, say
from supervm.cache import ENTRY_OVERHEAD, CachedStorage
from supervm.storage import Storage

BACKENDS = ("rocksdb", "memory")
VALUE = b"v" * 100


def get_side(label: str, get: Callable[[bytes], object], keys: list[bytes]) -> Side:
    """Gets of ``keys`` in order, cycling; the body returns how many came back as values."""
    cycle = Cycle(keys)

    def prepare(n: int) -> Callable[[], object]:
        batch = cycle.take(n)

        def body() -> int:
            found = 0
            for key in batch:
                if get(key) is not None:
                    found += 1
            return found

        return body

    def check(found: int) -> None:
        if found == 0:
            raise AssertionError(f"{label}: no key came back")

    return Side(label, prepare, check)


def open_store(name: str, workdir: Path, keys: list[bytes]) -> Storage:
    """A filled store; RocksDB is reopened, so that its gets read table files, not the memtable."""
    url = "memory://" if name == "memory" else f"rocksdb://{workdir}/{name}"
    store = supervm.open_storage(url)
    for i in range(0, len(keys), 1000):
        store.write_batch([(key, VALUE) for key in keys[i : i + 1000]])
    if name == "rocksdb":
        store.close()
        store = supervm.open_storage(url)
    return store


def hit_share(cache: CachedStorage, expect_hits: bool) -> Callable[[], str]:
    """A note giving the share of the cache's gets from now on that were hits, checked."""
    before = cache.stats()

    def note() -> str:
        stats = cache.stats()
        hits, misses = stats.hits - before.hits, stats.misses - before.misses
        share = hits / max(1, hits + misses)
        if (share > 0.99) != expect_hits:
            raise AssertionError(f"hits were {share:.1%} of gets")
        return f"{share:.1%} of the cache's gets were hits"

    return note


def pairs_for(name: str, store: Storage, keys: list[bytes]) -> list[Pair]:
    entry = len(keys[0]) + len(VALUE) + ENTRY_OVERHEAD
    hit = CachedStorage(store, entry * len(keys) * 2)
    for key in keys:
        hit.get(key)
    miss = CachedStorage(store, entry * max(1, len(keys) // 10))
    bare = CachedStorage(store, 0)
    raw = get_side("store.get", store.get, keys)
    return [
        Pair(
            f"{name} get, hit", get_side("cached get", hit.get, keys), raw, op="get",
            target="< 1", note=hit_share(hit, True),
        ),
        Pair(
            f"{name} get, miss", get_side("cached get", miss.get, keys), raw, op="get",
            note=hit_share(miss, False),
        ),
        Pair(f"{name} get, no cache", get_side("cache=0 get", bare.get, keys), raw, op="get"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--keys", type=int, default=20000)
    add_arguments(parser, rounds=300, rep_ms=1.0, budget=4.0, processes=4)
    args = parser.parse_args(argv)
    session = Session("cache", "bench.cache", args, "Cache: CachedStorage get / store get")
    if not session.spawn(argv):
        keys = [b"k" + i.to_bytes(4, "big") for i in range(args.keys)]
        pairs: list[Pair] = []
        with tempfile.TemporaryDirectory(prefix="supervm-bench-") as tmp, ExitStack() as stack:
            for name in args.backends.split(","):
                if name not in BACKENDS:
                    parser.error(f"unknown back end {name!r}; choose from {', '.join(BACKENDS)}")
                say(f"opening and filling {name} ({len(keys):,} keys)")
                store = open_store(name, Path(tmp), keys)
                stack.callback(store.close)
                pairs += pairs_for(name, store, keys)
            session.run(pairs)
    session.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
