"""Revert, re-apply and prune a chain over and over, until killed.

Usage: ``python churn_worker.py URL SEED TOP``

Opens the store at ``URL`` and extends its chain to height ``TOP`` with the
blocks of :func:`crash_worker.build_block` (a function of ``(SEED, height)``
alone). Then, forever, round ``i``: revert the chain by 1 to 3 blocks (not
below the pruning horizon), re-apply the same blocks up to ``TOP``, and prune
to keep the last 4 to 10 blocks, in batches of a few hundred keys. So after a
kill at any moment the head is between ``TOP - 3`` and ``TOP`` and holds
exactly the state of the chain at that height.

Protocol on stdout, one flushed line per event: ``READY <head>``, then for each
step ``BEGIN <step> <arg>`` and ``DONE <step> <head> <horizon>`` with step one
of ``revert``, ``apply``, ``prune``.
"""

from __future__ import annotations

import random
import sys

import supervm
from supervm.chain import Chain

try:
    from .crash_worker import TOKEN, build_block, say
except ImportError:  # run as a script
    from crash_worker import TOKEN, build_block, say  # type: ignore[no-redef]


def extend(chain: Chain, seed: int, top: int) -> None:
    while chain.head().height < top:
        height = chain.head().height + 1
        chain.apply(build_block(TOKEN, seed, height), mode="sequential")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: churn_worker.py URL SEED TOP\n")
        return 2
    url, seed, top = argv[0], int(argv[1]), int(argv[2])
    storage = supervm.open_storage(url)
    chain = Chain(storage, threads=1)
    rng = random.Random(f"churn/{seed}/{chain.head().height}/{chain.horizon()}")
    extend(chain, seed, top)
    say(f"READY {chain.head().height}")
    while True:
        back = min(rng.randint(1, 3), top - max(chain.horizon(), 1))
        say(f"BEGIN revert {top - back}")
        chain.revert_to(top - back)
        say(f"DONE revert {chain.head().height} {chain.horizon()}")
        say(f"BEGIN apply {top}")
        extend(chain, seed, top)
        say(f"DONE apply {chain.head().height} {chain.horizon()}")
        keep = rng.randint(4, 10)
        say(f"BEGIN prune {keep}")
        report = chain.prune(keep_blocks=keep, max_keys=rng.randint(50, 400))
        while not report.complete:
            report = chain.prune(keep_blocks=keep, max_keys=rng.randint(50, 400))
        say(f"DONE prune {chain.head().height} {chain.horizon()}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
