"""SIGKILL during ``supervm snapshot import`` and ``supervm sync apply`` on every persistent
back end: the store is never torn, and a rerun finishes the job.

Snapshot import: a state of some 30,000 keys (bulk blocks over a token chain)
exported in 4 KiB chunks (some 400 of them) is imported by the CLI in a
subprocess, killed twice:

1. ``transfer_worker.py`` (the CLI with a progress callback printing one line
   per committed chunk) is killed after a random number of lines;
2. on a server back end the unmodified ``python -m supervm`` is killed once
   the test, polling the target's ``meta/incomplete`` record, sees it has
   imported a random number of chunks more; on a file back end (whose files are
   locked while the CLI has them open) the worker is killed after lines again.

After each kill the store holds the import's record with at least the chunks
seen, ``Chain`` refuses it with ``IncompleteStoreError`` and it has no head. An
in-process rerun resumes (``resumed_chunks`` is the record's count) and ends
with the source's head, state pairs, tree, headers and ownership records.

Sync apply: a target started from a snapshot at ``H1`` applies a file of
``H2 - H1`` small blocks, killed twice likewise (the server poll reads the
head). After each kill the store stands at a block between the last one seen
and ``H2``, whose header is the source's and whose state root recomputes from
its pairs; the in-process rerun skips those blocks and applies the rest.

``SUPERVM_CRASH_SEED`` fixes the kill points (the seed is in every message).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

import supervm
from supervm.chain import Chain, Head, IncompleteStoreError
from supervm.layout import HEIGHT_KEY, INCOMPLETE_KEY
from supervm.snapshot import export_snapshot, import_snapshot, read_manifest
from supervm.storage import Storage
from supervm.sync import apply_blocks, export_blocks, read_block_manifest
from supervm.tree.rebuild import root_of

from .backends import FILE_BACKENDS, SERVER_BACKENDS, require_server
from .crash_support import STALL_SECONDS, CrashTarget, crash_target
from .transfer_support import (
    bulk_block,
    bulk_key,
    bulk_value,
    extend_token,
    owners_of,
    state_of,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "transfer_worker.py"
PERSISTENT = [*FILE_BACKENDS, *SERVER_BACKENDS]
SEED = int(os.environ.get("SUPERVM_CRASH_SEED", random.randrange(1 << 30)))
#: Snapshot source: token blocks, then bulk blocks of new keys, then one of changes.
BULK_BLOCKS, BULK_KEYS = 6, 5000
SNAPSHOT_CHUNK = 4096
#: Sync: the target starts from a snapshot at H1 and applies the small blocks up to H2.
H1, H2 = 20, 240


def head_at(chain: Chain, height: int) -> Head:
    header = chain.header(height)
    assert header is not None
    return Head(height, header.hash, header.state_root)


@pytest.fixture(scope="module")
def snapshot_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Path]]:
    """A chain of some 30,000 keys with history (overwrites, deletes), and its snapshot."""
    chain = Chain(supervm.open_storage("memory://"), threads=1)
    extend_token(chain, SEED % 1000, 3)
    for b in range(BULK_BLOCKS):
        first = b * BULK_KEYS
        bulk_block(
            chain, [(bulk_key(i), bulk_value(i, 0)) for i in range(first, first + BULK_KEYS)]
        )
    total = BULK_BLOCKS * BULK_KEYS
    changes = [(bulk_key(i), bulk_value(i, 1)) for i in range(0, total, 37)]
    changes += [(bulk_key(i), None) for i in range(5, total, 53) if i % 37]
    bulk_block(chain, changes)
    out = tmp_path_factory.mktemp("snapshot") / "state.snap"
    manifest = export_snapshot(chain.storage, out, chunk_bytes=SNAPSHOT_CHUNK)
    assert len(manifest.chunks) > 300 and manifest.keys > 25_000
    yield chain, out
    chain.close()
    chain.storage.close()


@pytest.fixture(scope="module")
def sync_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Path, Path]]:
    """A chain of ``H2`` blocks (small bulk blocks after the token's), a snapshot at ``H1``
    and the block file ``H1 + 1 .. H2``."""
    chain = Chain(supervm.open_storage("memory://"), threads=1)
    extend_token(chain, SEED % 1000, 3)
    rng = random.Random(f"sync-source/{SEED}")
    while chain.head().height < H2:
        height = chain.head().height + 1
        keys = rng.sample(range(400), 8)
        pairs = [(bulk_key(i), None if rng.random() < 0.2 else bulk_value(i, height)) for i in keys]
        bulk_block(chain, pairs, timestamp=height)
    workdir = tmp_path_factory.mktemp("sync")
    snap, blocks = workdir / "h1.snap", workdir / "blocks"
    export_snapshot(chain.storage, snap, height=H1)
    manifest = export_blocks(chain.storage, blocks, from_height=H1, chunk_bytes=4096)
    assert manifest.blocks == H2 - H1 and manifest.chunks > 10
    yield chain, snap, blocks
    chain.close()
    chain.storage.close()


class CliRun:
    """One run of the CLI in a subprocess (the worker, or plain ``python -m supervm``),
    its stdout read by a thread."""

    def __init__(self, argv: list[str], stderr_path: Path, *, worker: bool = True) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("ab")
        command = [str(WORKER)] if worker else ["-m", "supervm"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, *argv],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, text=True,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.output: list[str] = []
        self.killed = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def wait_lines(self, stage: str, count: int) -> bool:
        """Read until ``count`` progress lines of ``stage``; False if the run ended first."""
        seen = 0
        while seen < count:
            try:
                line = self._lines.get(timeout=STALL_SECONDS)
            except queue.Empty:
                pytest.fail(f"the CLI printed nothing for {STALL_SECONDS:.0f} s\n{self.stderr()}")
            if line is None:
                return False
            self.output.append(line)
            words = line.split()
            if words[:2] == ["PROGRESS", stage]:
                seen += 1
        return True

    def wait_until(self, condition: Callable[[], bool]) -> bool:
        """Poll ``condition`` (the test reading the store) until true; False if the run ended."""
        deadline = time.monotonic() + STALL_SECONDS
        while not condition():
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                pytest.fail(f"no progress seen in {STALL_SECONDS:.0f} s\n{self.stderr()}")
            time.sleep(0.005)
        return True

    def kill(self) -> int:
        """SIGKILL the run (if still going), reap it; its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed = True
        self.proc.wait()
        self._reader.join()
        while (line := self._lines.get()) is not None:
            self.output.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        if not self.killed:
            assert self.proc.returncode == 0, self.stderr()
        return self.proc.returncode


def open_store(url: str) -> Storage:
    return supervm.open_storage(url)


def killed_when(
    target: CrashTarget, argv: list[str], stderr: Path, read: Callable[[Storage], int], goal: int
) -> bool:
    """Run plain ``python -m supervm ARGV`` and SIGKILL it once ``read`` of the target store
    (a server's, polled from here) reaches ``goal``; False if it finished first."""
    storage = open_store(target.url)
    try:
        run = CliRun(argv, stderr, worker=False)
        running = run.wait_until(lambda: read(storage) >= goal)
        run.kill()
    finally:
        storage.close()
    return running


def incomplete_record(storage: Storage) -> dict[str, object] | None:
    """The store's ``meta/incomplete`` record (an unfinished import), parsed."""
    raw = storage.get(INCOMPLETE_KEY)
    return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]


def imported_chunks(storage: Storage) -> int:
    record = incomplete_record(storage)
    return 0 if record is None else int(record["next_chunk"])  # type: ignore[call-overload]


def head_height(storage: Storage) -> int:
    raw = storage.get(HEIGHT_KEY)
    return 0 if raw is None else int.from_bytes(raw, "big")


def check_unfinished_import(url: str, snapshot: Path, at_least: int, context: str) -> int:
    """The store holds an unfinished import of ``snapshot`` with at least ``at_least`` chunks
    and no visible chain; returns its chunk count."""
    manifest = read_manifest(snapshot)
    storage = open_store(url)
    try:
        record = incomplete_record(storage)
        assert record is not None, context
        assert (
            record["operation"] == "snapshot import" and record["snapshot"] == manifest.digest.hex()
        )
        done = int(record["next_chunk"])  # type: ignore[call-overload]
        assert at_least <= done <= len(manifest.chunks), (done, context)
        assert record["keys"] == sum(c.items for c in manifest.chunks[:done] if c.kind == "state")
        with pytest.raises(IncompleteStoreError, match="unfinished snapshot import") as refused:
            Chain(storage, threads=1)
        assert refused.value.operation == "snapshot import"
        assert storage.get(HEIGHT_KEY) is None, context
        with pytest.raises(IncompleteStoreError):
            export_snapshot(storage, snapshot.with_name("never.snap"))
        return done
    finally:
        storage.close()


def check_store_at_block(url: str, source: Chain, at_least: int, context: str) -> int:
    """The store stands at a block of ``source``'s chain between ``at_least`` and ``H2``,
    whole (its root recomputes from its pairs); returns its height."""
    storage = open_store(url)
    chain = Chain(storage, threads=1)
    try:
        assert incomplete_record(storage) is None
        head = chain.head()
        assert at_least <= head.height <= H2, (head.height, context)
        assert head == head_at(source, head.height), context
        assert chain.header(head.height) == source.header(head.height)
        assert chain.header(head.height + 1) is None
        state = state_of(storage)
        assert root_of(state) == head.state_root, context
        assert state == dict(source.at(head.height).scan()), context
        return head.height
    finally:
        chain.close()
        storage.close()


def check_equal(url: str, source: Chain, height: int) -> None:
    storage = open_store(url)
    chain = Chain(storage, threads=1)
    try:
        assert chain.head() == head_at(source, height)
        assert chain.identity() == source.identity()
        state = state_of(storage)
        assert state == dict(source.at(height).scan())
        assert chain.tree.check(height) == len(state)
        assert owners_of(storage) == owners_of(source.storage)
        for h in range(1, height + 1):
            assert chain.header(h) == source.header(h), h
    finally:
        chain.close()
        storage.close()


def server_only(backend: str) -> None:
    if backend in SERVER_BACKENDS:
        require_server(backend)


@pytest.mark.parametrize("backend", PERSISTENT)
def test_kill_snapshot_import(
    backend: str, tmp_path: Path, snapshot_source: tuple[Chain, Path]
) -> None:
    source, snapshot = snapshot_source
    chunks = len(read_manifest(snapshot).chunks)
    rng = random.Random(f"{SEED}/snapshot/{backend}")
    server_only(backend)
    with crash_target(backend, tmp_path, "snapimport") as target:
        argv = ["snapshot", "import", str(snapshot), "--store", target.worker_url, "--json"]
        done = 0
        for attempt in (1, 2):
            more = rng.randint(5, chunks // 4)
            context = f"seed {SEED}, {backend}, kill {attempt} after {more} more chunks"
            if attempt == 2 and backend in SERVER_BACKENDS:
                stderr = tmp_path / "stderr"
                running = killed_when(target, argv, stderr, imported_chunks, done + more)
            else:
                run = CliRun(argv, tmp_path / "stderr")
                running = run.wait_lines("importing", more)
                run.kill()
            target.wait_gone()
            if not running:
                pytest.fail(f"the import finished before the kill ({context}): raise the state")
            done = check_unfinished_import(target.url, snapshot, done + more, context)
            print(f"{context}: {done} of {chunks} chunks imported")
        storage = open_store(target.url)
        try:
            report = import_snapshot(snapshot, storage)
        finally:
            storage.close()
        assert report.resumed and report.resumed_chunks == done
        assert report.head == source.head() and report.chunks == chunks
        check_equal(target.url, source, source.head().height)


@pytest.mark.parametrize("backend", PERSISTENT)
def test_kill_sync_apply(
    backend: str, tmp_path: Path, sync_source: tuple[Chain, Path, Path]
) -> None:
    source, snapshot, blocks = sync_source
    total = read_block_manifest(blocks).blocks
    rng = random.Random(f"{SEED}/sync/{backend}")
    server_only(backend)
    with crash_target(backend, tmp_path, "syncapply") as target:
        storage = open_store(target.url)
        try:
            import_snapshot(snapshot, storage)
        finally:
            storage.close()
        argv = ["sync", "apply", str(blocks), "--store", target.worker_url, "--json"]
        height = H1
        for attempt in (1, 2):
            more = rng.randint(5, total // 4)
            context = f"seed {SEED}, {backend}, kill {attempt} after {more} more blocks"
            if attempt == 2 and backend in SERVER_BACKENDS:
                stderr = tmp_path / "stderr"
                running = killed_when(target, argv, stderr, head_height, height + more)
            else:
                run = CliRun(argv, tmp_path / "stderr")
                running = run.wait_lines("applying", more)
                run.kill()
            target.wait_gone()
            if not running:
                pytest.fail(f"the sync finished before the kill ({context}): raise H2")
            height = check_store_at_block(target.url, source, height + more, context)
            print(f"{context}: the store stands at block {height} of {H2}")
        storage = open_store(target.url)
        try:
            report = apply_blocks(blocks, storage)
        finally:
            storage.close()
        assert (report.skipped, report.applied) == (height - H1, H2 - height)
        assert report.head == source.head()
        check_equal(target.url, source, H2)
        # The CLI's rerun now has nothing to do.
        proc = subprocess.run(
            [sys.executable, "-m", "supervm", *argv], capture_output=True, text=True, cwd=ROOT,
            timeout=STALL_SECONDS,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert (info["applied"], info["skipped"], info["height"]) == (0, total, H2)
