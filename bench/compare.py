"""Where two benchmark runs differ: ``python -m bench.compare A.json B.json``.

    python -m bench.compare A.json B.json [--threshold 0.05] [--all]

A and B are files written with ``--json`` by bench.storage, bench.vm or
bench.chain (a file holds one benchmark; several files may be given on each
side as ``A1.json,A2.json``). Comparisons are matched by benchmark and name. A
ratio differs when its two medians are further apart than ``threshold`` times
max(1, |A's median|): 0.05 absolute for ratios up to 1, 5% of the figure for
speed-ups above 1 (a 9.5x speed-up moving by 0.05 is noise, not news). Each
differing row also says whether the two 95% confidence intervals overlap.

Prints the differing rows (``--all``: every row) and exits with status 1 when
any row differs, 0 otherwise. A row whose figure needed quiet cores (parallel
execution) and did not get enough quiet pairs in a run says "busy machine".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(spec: str) -> dict[str, dict[str, Any]]:
    """Results of one side, keyed by "bench: name"."""
    rows: dict[str, dict[str, Any]] = {}
    for part in spec.split(","):
        document = json.loads(Path(part).read_text())
        for result in document["results"]:
            rows[f"{document['bench']}: {result['name']}"] = result
    return rows


def differs(a: float, b: float, threshold: float) -> bool:
    return abs(b - a) > threshold * max(1.0, abs(a))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the first run's JSON file(s), comma-separated")
    parser.add_argument("b", help="the second run's JSON file(s), comma-separated")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--all", action="store_true", help="print every row, not only diffs")
    args = parser.parse_args(argv)
    a, b = load(args.a), load(args.b)
    common = [name for name in a if name in b]
    flagged = 0
    lines = []
    for name in common:
        ra, rb = a[name], b[name]
        bad = differs(ra["median"], rb["median"], args.threshold)
        flagged += bad
        if not (bad or args.all):
            continue
        overlap = ra["ci_low"] <= rb["ci_high"] and rb["ci_low"] <= ra["ci_high"]
        busy = [side for side, r in (("A", ra), ("B", rb)) if r.get("used") == "busy"]
        lines.append(
            f"| {name} | {ra['median']:.2f} [{ra['ci_low']:.2f}-{ra['ci_high']:.2f}] | "
            f"{rb['median']:.2f} [{rb['ci_low']:.2f}-{rb['ci_high']:.2f}] | "
            f"{rb['median'] - ra['median']:+.2f} | {'DIFFERS' if bad else 'same'}"
            f"{'' if overlap else ', CIs apart'}"
            f"{', busy machine in ' + ' and '.join(busy) if busy else ''} |"
        )
    if lines:
        print("| comparison | A median [95% CI] | B median [95% CI] | B - A | verdict |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(lines))
    for name in sorted(set(a) ^ set(b)):
        print(f"only in {'A' if name in a else 'B'}: {name}")
    print(
        f"\n{flagged} of {len(common)} ratios differ by more than {args.threshold:g}"
        f" (x max(1, ratio))"
    )
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
