"""Paired, interleaved measurement of two ways of doing the same work.

Every benchmark here compares two sides: SuperVM against the raw driver, the
full runtime against a bare loop, parallel against sequential. Two runs of the
same comparison minutes apart must agree, on a 2-core machine that other work
shares. So a comparison is measured like this:

1. Worker processes. A benchmark runs in ``--processes`` fresh worker
   processes, one after the other, each doing its share of the pairs below
   with its own setup; the parent pools their pairs. Within a process, the
   memory layout (where the stores, wasm instances and interpreter objects
   landed) biases one side against the other by several per cent for the
   microsecond-scale operations, the same in every pair; across processes
   it varies, so pooling several processes averages it out (pyperf spawns
   workers for the same reason). Ours and raw always run in the same process.
2. Calibration and warm-up, per process: each side's unit of work (one get, one
   call, one block) is repeated with a growing count until a repetition takes
   about ``rep_ms`` milliseconds on average over the two sides (each count
   timed three times per side and the fastest kept, so that a stall of the
   machine cannot make the repetitions too short); that count is then fixed.
   ``warmup`` pairs follow, discarded.
3. Pairs: each pair runs one repetition of each side back to back, in an order
   drawn at random per pair (half the pairs run ours first, half raw first).
   Each repetition is timed alone with ``time.perf_counter_ns``, the garbage
   collector disabled (a collection runs before each repetition, untimed, over
   the objects made since the last one: older objects are frozen). The pairs
   of all a benchmark's comparisons are interleaved in ``spread`` rounds (one
   burst of pairs per comparison per round, in a random order, a discarded
   pair first when repetitions are short), so a spell of heavy load from
   other processes lands in a slice of every comparison, not all of one.
4. The figure is the median over all pooled pairs of the ratio within each
   pair. Its spread: a 95% bootstrap confidence interval of that median
   (resampling processes, then pairs within them, so that it covers the
   process-to-process bias too), the interquartile range of the pair ratios,
   and the range of the processes' own medians. Drift between pairs cancels in
   the ratio; the median ignores the pairs a burst of other work hit.

Comparisons whose repetitions are long (a whole block) get fewer pairs: at most
``budget_s`` seconds of pairs (over all processes), never fewer than
``min_pairs``. Comparisons that need every core (parallel execution) are made
with ``quiet=True``: for each repetition the harness reads how much CPU other
processes used (``/proc/stat`` less this process's own CPU time), and the
figure comes from the pairs during which others used at most ``quiet_cores``
cores, when at least a quarter of the pairs (and 5) were that quiet; the table
says so ("12 quiet of 40").

Figures are ratios of times. ``kind="time"``: ours time / raw time (1.00 = no
overhead, lower is better). ``kind="speed"``: raw time / ours time, i.e. ours
throughput over raw throughput (a speed-up; higher is better).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "Cycle",
    "Pair",
    "Result",
    "Session",
    "Settings",
    "Side",
    "add_arguments",
    "median_ci",
]

T = TypeVar("T")

#: A side prepares a repetition of ``n`` units of work (untimed) and returns its timed body.
Prepare = Callable[[int], Callable[[], object]]


@dataclass(frozen=True)
class Side:
    """One way of doing the work.

    ``prepare(n)`` runs untimed and returns the body that does ``n`` units of work;
    only the body is timed. ``check``, if given, receives what the body returned,
    untimed (to verify results without paying for the check in the figure).
    """

    label: str
    prepare: Prepare
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Pair:
    """Two sides doing the same work, and how their ratio is read."""

    name: str
    ours: Side
    raw: Side
    kind: Literal["time", "speed"] = "time"
    target: str = "-"
    #: Units per repetition: None to calibrate; a fixed count otherwise.
    units: int | None = None
    #: The least count calibration may choose (e.g. a block must hold enough transfers).
    min_units: int = 1
    #: Operations per unit, for the per-operation times (e.g. transactions per block).
    ops_per_unit: int = 1
    #: What an operation is, for the table ("get", "tx", "key", "call").
    op: str = "op"
    #: A remark for the table, or a function giving it once the pairs have run.
    note: str | Callable[[], str] = ""
    #: Warm-up pairs, if not the settings' (fewer for very long repetitions).
    warmup: int | None = None
    #: Figure from the pairs during which other processes left the cores alone, when
    #: there are enough of them (for parallel runs, which need every core).
    quiet: bool = False
    #: Times the settings' budget this comparison may take (for noisy, long repetitions).
    budget_scale: float = 1.0


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure (per process, in a worker)."""

    pairs: int = 60
    rep_ms: float = 10.0
    warmup: int = 3
    budget_s: float = 20.0
    min_pairs: int = 10
    seed: int = 1
    #: Rounds the pairs of every comparison are spread over.
    spread: int = 10
    #: A pair is quiet when other processes used at most this many cores during it.
    quiet_cores: float = 0.25
    processes: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(
            pairs=args.rounds, rep_ms=args.rep_ms, warmup=args.warmup, budget_s=args.budget,
            min_pairs=min(args.min_pairs, args.rounds), seed=args.seed, spread=args.spread,
            quiet_cores=args.quiet_cores, processes=args.processes,
        )  # fmt: skip


@dataclass
class Result:
    """The figure of one comparison, and the pairs it comes from."""

    name: str
    kind: str
    target: str
    note: str
    op: str
    ours_label: str
    raw_label: str
    median: float
    ci_low: float
    ci_high: float
    q1: float
    q3: float
    #: Pairs the figure comes from (all, or the quiet ones: see ``used``).
    pairs: int
    pairs_run: int
    #: "all" (every pair), "quiet" (the quiet pairs), or "busy" (quiet pairs asked
    #: for, too few found: every pair, measured while other processes took cores).
    used: str
    quiet_pairs: int
    ours_ns_per_op: float
    raw_ns_per_op: float
    #: Median ratio of each worker process (over the pairs used).
    process_medians: list[float]
    #: Operations per repetition in each process.
    ops_per_rep: list[int]
    #: Every pair, in the order run: per-operation times (ns), the process it ran in
    #: and the cores other processes used meanwhile (None: not sampled).
    ours_per_op: list[float] = field(default_factory=list)
    raw_per_op: list[float] = field(default_factory=list)
    process: list[int] = field(default_factory=list)
    foreign: list[float] | None = None

    @property
    def spread(self) -> str:
        return f"{self.ci_low:.2f}-{self.ci_high:.2f}"

    @property
    def ratios(self) -> list[float]:
        """Every pair's ratio, in the order run."""
        speed = self.kind == "speed"
        pairs = zip(self.ours_per_op, self.raw_per_op, strict=True)
        return [b / a if speed else a / b for a, b in pairs]


def add_arguments(
    parser: argparse.ArgumentParser, *, rounds: int, rep_ms: float, budget: float,
    processes: int,
) -> None:  # fmt: skip
    """The measurement options every benchmark takes."""
    group = parser.add_argument_group("measurement (see bench/harness.py)")
    group.add_argument(
        "--rounds", type=int, default=rounds,
        help=f"interleaved ours/raw pairs per comparison, over all processes (default {rounds})",
    )  # fmt: skip
    group.add_argument(
        "--processes", type=int, default=processes,
        help=f"worker processes the pairs are shared among (default {processes})",
    )  # fmt: skip
    group.add_argument(
        "--rep-ms", type=float, default=rep_ms,
        help=f"target length of one repetition in ms (default {rep_ms:g})",
    )  # fmt: skip
    group.add_argument("--warmup", type=int, default=3, help="warm-up pairs, discarded (3)")
    group.add_argument(
        "--budget", type=float, default=budget,
        help=f"seconds of pairs per comparison at most (default {budget:g}); "
        "comparisons with long repetitions get fewer pairs",
    )  # fmt: skip
    group.add_argument("--min-pairs", type=int, default=10, help="pairs however long (10)")
    group.add_argument(
        "--spread", type=int, default=10,
        help="rounds the pairs of all comparisons are interleaved over (10)",
    )  # fmt: skip
    group.add_argument(
        "--quiet-cores", type=float, default=0.25,
        help="most cores other processes may use during a quiet pair (0.25)",
    )  # fmt: skip
    group.add_argument("--seed", type=int, default=1, help="seed of the pair orders (1)")
    group.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    group.add_argument("--worker", metavar="PATH", help=argparse.SUPPRESS)


class Cycle(Generic[T]):
    """Consecutive runs of a list, wrapping around (each side keeps its own, in step)."""

    def __init__(self, items: Sequence[T]) -> None:
        if not items:
            raise ValueError("nothing to cycle through")
        self.items = list(items)
        self.position = 0

    def take(self, n: int) -> list[T]:
        items, size, start = self.items, len(self.items), self.position
        self.position = (start + n) % size
        if start + n <= size:
            return items[start : start + n]
        return [items[(start + i) % size] for i in range(n)]


# -- statistics ---------------------------------------------------------------------


#: Resamples of the bootstrap interval.
BOOTSTRAP = 1000


def median_ci(
    values: Sequence[float], groups: Sequence[int], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap confidence interval of the median of ``values``, clustered by ``groups``.

    Each resample draws the groups (worker processes) with replacement, then
    each drawn group's values with replacement, so the interval covers both
    the pair-to-pair noise and the process-to-process bias (which a resample of
    pairs alone would ignore). Percentile interval, seeded: the same data give
    the same interval.
    """
    if not values:
        raise ValueError("no values")
    by_group: dict[int, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        by_group.setdefault(group, []).append(value)
    clusters = list(by_group.values())
    rng = random.Random(seed)
    medians = []
    for _ in range(BOOTSTRAP):
        sample: list[float] = []
        for cluster in rng.choices(clusters, k=len(clusters)):
            sample += rng.choices(cluster, k=len(cluster))
        medians.append(statistics.median(sample))
    medians.sort()
    tail = (1 - confidence) / 2
    return medians[int(tail * BOOTSTRAP)], medians[min(BOOTSTRAP - 1, int((1 - tail) * BOOTSTRAP))]


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(
    template: Result, ours: list[float], raw: list[float], process: list[int],
    foreign: list[float] | None, quiet: float | None,
) -> Result:  # fmt: skip
    """``template``'s descriptive fields with the figures of these pairs.

    ``quiet``: the most foreign cores a pair may have seen to count as quiet, or
    None to use every pair.
    """
    speed = template.kind == "speed"
    every = [b / a if speed else a / b for a, b in zip(ours, raw, strict=True)]
    chosen = list(range(len(every)))
    used = "all"
    quiet_count = 0
    if quiet is not None and foreign is not None:
        calm = [i for i, load in enumerate(foreign) if load <= quiet]
        quiet_count = len(calm)
        if quiet_count >= max(5, len(every) // 4):
            chosen, used = calm, "quiet"
        else:
            used = "busy"  # too few quiet pairs: the figure is what a busy machine gives
    ratios = [every[i] for i in chosen]
    low, high = median_ci(ratios, [process[i] for i in chosen])
    q1, q3 = _quartiles(ratios)
    medians = []
    for worker in sorted(set(process)):
        mine = [every[i] for i in chosen if process[i] == worker]
        if mine:
            medians.append(round(statistics.median(mine), 4))
    values = {f.name: getattr(template, f.name) for f in fields(Result)}
    values.update(
        median=statistics.median(ratios), ci_low=low, ci_high=high, q1=q1, q3=q3,
        pairs=len(ratios), pairs_run=len(every), used=used, quiet_pairs=quiet_count,
        ours_ns_per_op=statistics.median(ours[i] for i in chosen),
        raw_ns_per_op=statistics.median(raw[i] for i in chosen), process_medians=medians,
        ours_per_op=ours, raw_per_op=raw, process=process, foreign=foreign,
    )  # fmt: skip
    return Result(**values)


# -- measuring in one process --------------------------------------------------------

_PROC_STAT = Path("/proc/stat")
_TICK = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _busy() -> float:
    """CPU seconds spent by everything on the machine, all cores (Linux; in ticks)."""
    with _PROC_STAT.open("rb") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) * _TICK  # less idle and iowait


class _Runner:
    """Times repetitions of one side."""

    def __init__(self, side: Side, sample_load: bool) -> None:
        self.side = side
        self.sample_load = sample_load and _PROC_STAT.exists()
        #: Cores used by other processes during the last repetition.
        self.foreign = 0.0

    def rep(self, n: int) -> int:
        body = self.side.prepare(n)
        gc.collect()  # cheap: older objects are frozen
        if self.sample_load:
            busy, own = _busy(), time.process_time()
        start = time.perf_counter_ns()
        out = body()
        elapsed = time.perf_counter_ns() - start
        if self.sample_load:
            others = _busy() - busy - (time.process_time() - own)
            self.foreign = max(0.0, others / max(elapsed * 1e-9, 1e-9))
        if self.side.check is not None:
            self.side.check(out)
        return elapsed


#: Repetitions shorter than this get a discarded warm-up pair at the start of each burst.
_BURST_WARMUP_NS = 50_000_000


class _Comparison:
    """One comparison being measured: its repetition size, pair orders and timings."""

    def __init__(self, pair: Pair, settings: Settings) -> None:
        self.pair = pair
        self.settings = settings
        self.ours = _Runner(pair.ours, pair.quiet)
        self.raw = _Runner(pair.raw, pair.quiet)
        self.n = 1
        self.pair_ns = 0.0
        self.orders: list[bool] = []
        self.ours_ns: list[int] = []
        self.raw_ns: list[int] = []
        self.foreign: list[float] = []

    def both(self) -> int:
        return self.ours.rep(self.n) + self.raw.rep(self.n)

    def probe(self) -> float:
        """Mean over the sides of each side's fastest of three repetitions.

        The fastest, not the mean: a repetition that a stall of the machine hit
        would otherwise make the repetitions far too short.
        """
        n = self.n
        return (
            min(self.ours.rep(n) for _ in range(3)) + min(self.raw.rep(n) for _ in range(3))
        ) / 2

    def calibrate(self) -> None:
        """Fix the repetition size, warm up, and draw the pair orders."""
        pair, settings = self.pair, self.settings
        target_ns = settings.rep_ms * 1e6
        if pair.units is not None:
            self.n = pair.units
        else:
            self.n = max(1, pair.min_units)
            while True:
                mean = self.probe()
                if mean >= target_ns / 4 or self.n >= 1 << 24:
                    break
                self.n *= 4 if mean < target_ns / 64 else 2
            self.n = max(pair.min_units, round(self.n * target_ns / max(mean, 1.0)))
        warmup = settings.warmup if pair.warmup is None else pair.warmup
        self.pair_ns = statistics.median([self.both() for _ in range(warmup + 1)])
        budget_ns = settings.budget_s * pair.budget_scale * 1e9
        affordable = int(budget_ns / max(self.pair_ns, 1.0))
        count = max(settings.min_pairs, min(settings.pairs, affordable))
        # Half the pairs run ours first, half raw first, in a random order.
        self.orders = [True] * (count // 2) + [False] * (count - count // 2)
        random.Random(f"{settings.seed}/{pair.name}").shuffle(self.orders)

    @property
    def left(self) -> int:
        return len(self.orders) - len(self.ours_ns)

    def burst(self, count: int) -> None:
        """The next ``count`` pairs, after a discarded pair if repetitions are short."""
        count = min(count, self.left)
        if count <= 0:
            return
        if self.pair_ns < _BURST_WARMUP_NS:
            self.both()
        ours, raw, n = self.ours, self.raw, self.n
        start = len(self.ours_ns)
        for ours_first in self.orders[start : start + count]:
            if ours_first:
                a = ours.rep(n)
                b = raw.rep(n)
            else:
                b = raw.rep(n)
                a = ours.rep(n)
            self.ours_ns.append(a)
            self.raw_ns.append(b)
            self.foreign.append(max(ours.foreign, raw.foreign))

    def result(self, process: int) -> Result:
        pair = self.pair
        ops = self.n * pair.ops_per_unit
        note = pair.note() if callable(pair.note) else pair.note
        template = Result(
            name=pair.name, kind=pair.kind, target=pair.target, note=note, op=pair.op,
            ours_label=pair.ours.label, raw_label=pair.raw.label, median=0.0, ci_low=0.0,
            ci_high=0.0, q1=0.0, q3=0.0, pairs=0, pairs_run=0, used="all", quiet_pairs=0,
            ours_ns_per_op=0.0,
            raw_ns_per_op=0.0, process_medians=[], ops_per_rep=[ops],
        )  # fmt: skip
        sampled = self.ours.sample_load
        return summarize(
            template, [t / ops for t in self.ours_ns], [t / ops for t in self.raw_ns],
            [process] * len(self.ours_ns), [round(x, 3) for x in self.foreign] if sampled
            else None, self.settings.quiet_cores if pair.quiet else None,
        )  # fmt: skip


def _refreeze() -> None:
    gc.collect()
    gc.freeze()


def measure(pairs: Sequence[Pair], settings: Settings, process: int = 0) -> list[Result]:
    """Measure comparisons together in this process (see the module docstring)."""
    was_enabled = gc.isenabled()
    _refreeze()
    gc.disable()
    try:
        comparisons = []
        for pair in pairs:
            comparison = _Comparison(pair, settings)
            comparison.calibrate()
            say(
                f"  calibrated {pair.name}: {comparison.n * pair.ops_per_unit:,} {pair.op} "
                f"per repetition, {len(comparison.orders)} pairs"
            )
            comparisons.append(comparison)
            _refreeze()
        rng = random.Random(f"{settings.seed}/rounds")
        rounds = max(1, settings.spread)
        for round_no in range(rounds):
            order = comparisons[:]
            rng.shuffle(order)
            for comparison in order:
                comparison.burst(-(-comparison.left // (rounds - round_no)))
                _refreeze()
            say(f"  round {round_no + 1}/{rounds} done")
        return [comparison.result(process) for comparison in comparisons]
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


# -- a benchmark run: worker processes, the table, JSON --------------------------------


def format_time(ns: float) -> str:
    """A per-operation time with a unit that keeps three or four digits."""
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def _pairs(r: Result) -> str:
    if r.used == "quiet":
        return f"{r.pairs} quiet of {r.pairs_run}"
    if r.used == "busy":
        return f"{r.pairs}, busy: {r.quiet_pairs} quiet"
    return str(r.pairs)


def _figure(value: float, kind: str) -> str:
    return f"{value:.2f}x" if kind == "speed" else f"{value:.2f}"


class Session:
    """A benchmark run: measured here (one process) or in worker processes, then reported.

    ``Session.workers_ran()`` is true in the parent of worker processes once they
    are done; the benchmark then skips its own setup and measurement.
    """

    def __init__(self, bench: str, module: str, args: argparse.Namespace, title: str) -> None:
        self.bench = bench
        self.module = module
        self.args = args
        self.settings = Settings.from_args(args)
        self.title = title
        self.results: list[Result] = []
        self.started = time.time()
        self.worker = args.worker is not None
        self.index = int(os.environ.get("SUPERVM_BENCH_WORKER", "0"))

    def spawn(self, argv: Sequence[str] | None) -> bool:
        """In the parent: run the worker processes and pool their pairs; False in a worker."""
        processes = self.settings.processes
        if self.worker or processes <= 1:
            return False
        s = self.settings
        argv = list(sys.argv[1:] if argv is None else argv)
        per = {
            "--rounds": -(-s.pairs // processes),
            "--min-pairs": -(-s.min_pairs // processes),
            "--budget": s.budget_s / processes,
        }
        chunks: list[list[Result]] = []
        with tempfile.TemporaryDirectory(prefix="supervm-bench-") as tmp:
            for i in range(processes):
                out = Path(tmp) / f"worker-{i}.json"
                command = [sys.executable, "-m", self.module, *argv, "--processes", "1",
                           "--seed", f"{s.seed * 1000 + i}", "--worker", str(out)]  # fmt: skip
                for option, value in per.items():
                    command += [option, str(value)]
                say(f"worker process {i + 1}/{processes}")
                env = dict(os.environ, SUPERVM_BENCH_WORKER=str(i))
                subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
                document = json.loads(out.read_text())
                chunks.append([Result(**r) for r in document["results"]])
        self.results = _pool(chunks, self.settings.quiet_cores)
        return True

    def run(self, pairs: Sequence[Pair]) -> list[Result]:
        """Measure ``pairs`` together in this process (see :func:`measure`)."""
        results = measure(pairs, self.settings, self.index)
        self.results += results
        return results

    def table(self) -> str:
        s = self.settings
        lines = [
            f"{self.title}: median of per-pair ratios; {s.processes} processes, "
            f"{s.rep_ms:g} ms repetitions, up to {s.pairs} pairs per comparison\n",
            "| comparison | ratio | 95% CI | IQR | process medians | pairs "
            "| ours / op | raw / op | target |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.results:
            medians = r.process_medians
            lines.append(
                f"| {r.name} | {_figure(r.median, r.kind)} | {r.spread} | "
                f"{r.q1:.2f}-{r.q3:.2f} | {min(medians):.2f}-{max(medians):.2f} | {_pairs(r)} | "
                f"{format_time(r.ours_ns_per_op)} | {format_time(r.raw_ns_per_op)} | {r.target} |"
            )
        lines.append("")
        sides = dict.fromkeys((r.ours_label, r.raw_label) for r in self.results)
        if len(sides) == 1:
            ours, raw = next(iter(sides))
            lines.append(f"ours = {ours}; raw = {raw}")
        for r in self.results:
            text = "" if len(sides) == 1 else f"ours = {r.ours_label}; raw = {r.raw_label}"
            text = "; ".join(t for t in (text, r.note) if t)
            if text:
                lines.append(f"- {r.name}: {text}")
        return "\n".join(lines)

    def finish(self) -> bool:
        """Write the results; True if this process should print its report too."""
        if self.worker:
            write_json(self.args.worker, self)
            return False
        print(self.table())
        if self.args.json:
            write_json(self.args.json, self)
            say(f"wrote {self.args.json}")
        return True


def _pool(chunks: list[list[Result]], quiet_cores: float) -> list[Result]:
    """One result per comparison from the workers' results, pairs pooled."""
    pooled = []
    for same in zip(*chunks, strict=True):
        first = same[0]
        if any(r.name != first.name for r in same):
            raise RuntimeError("worker processes measured different comparisons")
        foreign = None if first.foreign is None else [x for r in same for x in r.foreign or []]
        template = Result(**{f.name: getattr(first, f.name) for f in fields(Result)})
        template.ops_per_rep = [n for r in same for n in r.ops_per_rep]
        pooled.append(summarize(
            template, [x for r in same for x in r.ours_per_op],
            [x for r in same for x in r.raw_per_op], [x for r in same for x in r.process],
            foreign, None if foreign is None else quiet_cores,  # sampled for quiet figures
        ))  # fmt: skip
    return pooled


def write_json(path: str, session: Session) -> None:
    document = {
        "bench": session.bench,
        "settings": asdict(session.settings),
        "started": session.started,
        "seconds": round(time.time() - session.started, 1),
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "load": _load()},
        "results": [asdict(r) for r in session.results],
    }
    Path(path).write_text(json.dumps(document) + "\n")


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def say(text: str) -> None:
    """Progress, on stderr."""
    print(text, file=sys.stderr, flush=True)


@contextmanager
def no_gc() -> Iterator[None]:
    """A collection, then the collector off (as the harness times repetitions)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
