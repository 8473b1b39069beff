"""Migrating a whole store between back ends: complete, refused when unsafe, resumable.

A chain of deterministic token blocks (``crash_worker.build_block``) goes
around a ring of every back end, each one source once and target once
(memory -> rocksdb -> leveldb -> lmdb -> sqlite -> postgresql -> mariadb ->
memory), as an archive and pruned: each copy has the source's pairs, head,
root, past reads and proofs, refuses the pruned heights as well, and goes on
with the next block exactly as the source does. Then the refusals (a
non-empty target, a changing source, another source's unfinished migration,
an unfinished source) and ``restart``; and a ``migrate_worker.py`` killed by
SIGKILL in the middle of a migration into every persistent back end, which
the next run resumes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import supervm
from supervm.chain import Chain, IncompleteStoreError, PrunedHeightError
from supervm.layout import INCOMPLETE_KEY, STATE_PREFIX, state_key
from supervm.migrate import MigrationError, MigrationReport, migrate, verify_copy
from supervm.migrate import store_head as head_of
from supervm.storage import Storage
from supervm.tree import PLACEHOLDER, JellyfishTree

from .backends import FILE_BACKENDS, SERVER_BACKENDS, fresh_store, require_server, url_for
from .crash_support import STALL_SECONDS, crash_target
from .crash_worker import ACCOUNTS, TOKEN, build_block

WORKER = Path(__file__).resolve().parent / "migrate_worker.py"
ROOT = Path(__file__).resolve().parent.parent
SEED = 20_240_611
#: Blocks of the chain the tests copy (block 1 deploys the token, block 2 mints).
BLOCKS = 8
RING = ["memory", "rocksdb", "leveldb", "lmdb", "sqlite", "postgresql", "mariadb", "memory"]
BALANCES = [state_key(TOKEN, b"bal/" + account) for account in ACCOUNTS]
NAMESPACE = STATE_PREFIX + TOKEN


def extend(store: Storage, to_height: int) -> None:
    """Apply the chain's blocks after ``store``'s head up to ``to_height``, sequentially."""
    chain = Chain(store, threads=1)
    try:
        for height in range(chain.head().height + 1, to_height + 1):
            chain.apply(build_block(TOKEN, SEED, height), mode="sequential")
    finally:
        chain.close()


def pairs(store: Storage) -> list[tuple[bytes, bytes]]:
    return list(store.scan(b""))


def check_copy(source: Storage, target: Storage, report: MigrationReport) -> None:
    """The copy is the source: pairs, head, root, reads and proofs at every kept height."""
    expected = pairs(source)
    assert pairs(target) == expected
    assert report.verified and report.verified_keys == len(expected)
    assert report.keys == len(expected)
    assert report.bytes == sum(len(k) + len(v) for k, v in expected)
    assert target.get(INCOMPLETE_KEY) is None
    ours, theirs = Chain(source, threads=1), Chain(target, threads=1)
    try:
        head = ours.head()
        assert theirs.head() == head == report.head
        assert head.height > 0
        assert JellyfishTree(target).root_hash(head.height) == head.state_root
        assert theirs.tree.check(head.height) >= 1
        assert theirs.horizon() == ours.horizon()
        assert theirs.keep_blocks == ours.keep_blocks
        assert theirs.identity() == ours.identity()
        for height in range(1, head.height + 1):
            assert theirs.header(height) == ours.header(height)
            assert theirs.block(height) == ours.block(height)
        horizon = ours.horizon()
        for height in range(horizon, head.height + 1):
            mine, copy = ours.at(height), theirs.at(height)
            for key in BALANCES:
                assert copy.get(key) == mine.get(key), (height, key)
            assert list(copy.scan(NAMESPACE)) == list(mine.scan(NAMESPACE))
            for key in (BALANCES[0], BALANCES[1], state_key(TOKEN, b"bal/" + b"\x01" * 20)):
                proof = theirs.prove(key, height)
                header = theirs.header(height)
                assert proof.verify(PLACEHOLDER if header is None else header.state_root)
                assert proof.encode() == ours.prove(key, height).encode()
        if horizon:
            for chain in (ours, theirs):
                with pytest.raises(PrunedHeightError):
                    chain.at(horizon - 1)
                with pytest.raises(PrunedHeightError):
                    chain.prove(BALANCES[0], horizon - 1)
        # The copy goes on with the next block exactly as the source does.
        block = build_block(TOKEN, SEED, head.height + 1)
        a = ours.apply(block, mode="sequential")
        b = theirs.apply(block, mode="sequential")
        assert a.block_hash == b.block_hash
        assert theirs.head() == ours.head()
        assert pairs(target) == pairs(source)
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("pruned", [False, True], ids=["archive", "pruned"])
def test_a_chain_goes_around_every_back_end(pruned: bool, tmp_path: Path) -> None:
    for backend in SERVER_BACKENDS:
        require_server(backend)
    with contextlib.ExitStack() as stack:
        stores = [
            stack.enter_context(fresh_store(backend, tmp_path / f"{i}-{backend}"))
            for i, backend in enumerate(RING)
        ]
        extend(stores[0], BLOCKS)
        if pruned:
            chain = Chain(stores[0], threads=1)
            pruning = chain.prune(keep_blocks=2)
            assert chain.horizon() == BLOCKS - 2
            chain.close()
            assert pruning.complete
        for hop, (source, target) in enumerate(itertools.pairwise(stores)):
            done: list[tuple[int, int | None]] = []
            report = migrate(
                source,
                target,
                batch_keys=97 + 50 * hop,
                batch_bytes=(1 << 20) if hop % 2 else 9_000,
                source_name=f"{RING[hop]} #{hop}",
                progress=lambda keys, total: done.append((keys, total)),  # noqa: B023
            )
            assert not report.resumed and report.resumed_keys == 0
            assert report.batches == len(done) > 2
            assert [keys for keys, _ in done] == sorted({keys for keys, _ in done})
            assert done[-1][0] == report.keys
            # A memory source knows its size; the others are not counted.
            total = report.keys if RING[hop] == "memory" else None
            assert {t for _, t in done} == {total}
            check_copy(source, target, report)


@pytest.mark.parametrize("backend", ["memory", "sqlite", "rocksdb"])
def test_a_non_empty_target_is_refused_untouched(backend: str, tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as source, fresh_store(backend, tmp_path) as target:
        extend(source, 3)
        target.set(b"zz", b"mine")
        for restart in (False, True):
            with pytest.raises(MigrationError, match=r"target .* is not empty"):
                migrate(source, target, restart=restart)
            assert pairs(target) == [(b"zz", b"mine")]
        # An unfinished operation's record must be a migration's unless restarting.
        target.set(INCOMPLETE_KEY, b'{"operation": "import", "source": "x"}')
        with pytest.raises(MigrationError, match="unfinished import"):
            migrate(source, target)
        report = migrate(source, target, restart=True)
        check_copy(source, target, report)


def test_an_empty_source_leaves_the_target_untouched(tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as source, fresh_store("lmdb", tmp_path) as target:
        report = migrate(source, target)
        assert (report.keys, report.batches, report.verified_keys) == (0, 0, 0)
        assert report.head.height == 0 and report.verified
        assert pairs(target) == []


def test_an_unfinished_source_is_refused(tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as source, fresh_store("memory", tmp_path) as target:
        extend(source, 3)
        source.set(INCOMPLETE_KEY, b'{"operation": "migration", "source": "elsewhere"}')
        with pytest.raises(MigrationError, match=r"source .* unfinished"):
            migrate(source, target)
        assert pairs(target) == []


def test_a_source_that_changes_during_the_copy_is_refused(tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as source, fresh_store("sqlite", tmp_path) as target:
        extend(source, BLOCKS)
        height = BLOCKS

        def commit_a_block(done: int, total: int | None) -> None:
            nonlocal height
            if height == BLOCKS:
                height += 1
                extend(source, height)

        with pytest.raises(
            MigrationError,
            match=rf"source changed during the migration \(head {BLOCKS} -> {BLOCKS + 1}\).*"
            "restart=True",
        ):
            migrate(source, target, batch_keys=100, progress=commit_a_block, source_name="s")
        with pytest.raises(IncompleteStoreError, match="unfinished migration from s"):
            Chain(target)
        # Resuming it is refused too: the source is not what the record describes.
        with pytest.raises(MigrationError, match=r"source changed .*restart=True"):
            migrate(source, target, batch_keys=100, source_name="s")
        report = migrate(source, target, batch_keys=100, source_name="s", restart=True)
        assert not report.resumed and report.head.height == BLOCKS + 1
        check_copy(source, target, report)


class Interrupted(Exception):
    pass


def interrupt_after(batches: int) -> Callable[[int, int | None], None]:
    seen = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal seen
        seen += 1
        if seen == batches:
            raise Interrupted

    return progress


def test_resume_needs_the_same_source_and_restart_starts_over(tmp_path: Path) -> None:
    with (
        fresh_store("memory", tmp_path) as source,
        fresh_store("memory", tmp_path) as other,
        fresh_store("leveldb", tmp_path) as target,
    ):
        extend(source, BLOCKS)
        extend(other, 4)
        with pytest.raises(Interrupted):
            migrate(source, target, batch_keys=50, source_name="a", progress=interrupt_after(3))
        copied = len(pairs(target)) - 1  # without the record
        assert copied == 150
        with pytest.raises(IncompleteStoreError):
            Chain(target)
        with pytest.raises(MigrationError, match="unfinished migration from a, not from b"):
            migrate(other, target, source_name="b")
        assert len(pairs(target)) == copied + 1
        # The same source resumes where it stopped.
        with pytest.raises(Interrupted):
            migrate(source, target, batch_keys=50, source_name="a", progress=interrupt_after(2))
        assert len(pairs(target)) - 1 == 250
        report = migrate(source, target, batch_keys=50, source_name="a")
        assert report.resumed and report.resumed_keys == 250
        check_copy(source, target, report)
        # A complete copy is never emptied, even with restart.
        with pytest.raises(MigrationError, match="is not empty"):
            migrate(other, target, source_name="b", restart=True)

    with (
        fresh_store("memory", tmp_path) as source,
        fresh_store("memory", tmp_path) as other,
        fresh_store("rocksdb", tmp_path / "2") as target,
    ):
        extend(source, BLOCKS)
        extend(other, 4)
        with pytest.raises(Interrupted):
            migrate(source, target, batch_keys=50, source_name="a", progress=interrupt_after(4))
        # restart=True empties what the other migration left and copies this source.
        report = migrate(other, target, batch_keys=30, source_name="b", restart=True)
        assert not report.resumed and report.head.height == 4
        check_copy(other, target, report)


def test_verify_copy_names_the_first_difference(tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as source, fresh_store("sqlite", tmp_path) as target:
        extend(source, 3)
        migrate(source, target)
        assert verify_copy(source, target) == len(pairs(source))
        key, value = pairs(source)[5]
        target.set(key, value + b"!")
        with pytest.raises(MigrationError, match=f"key {key.hex()} has another value"):
            verify_copy(source, target)
        target.set(key, value)
        target.set(b"d", b"")
        with pytest.raises(MigrationError, match=f"key {b'd'.hex()} is in the target but not"):
            verify_copy(source, target)
        target.delete(b"d")
        last = pairs(source)[-1][0]
        target.delete(last)
        with pytest.raises(MigrationError, match=f"key {last.hex()} is in the source but not"):
            verify_copy(source, target)


def test_verify_only_checks_a_finished_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy whose run was killed after its last batch is checked with --verify-only."""
    import json

    from supervm.cli import main

    source_url, target_url = f"lmdb://{tmp_path}/source", f"sqlite:///{tmp_path}/copy.db"
    source = supervm.open_storage(source_url)
    extend(source, 3)
    source.close()
    assert main(["migrate", "--from", source_url, "--to", target_url, "--no-verify"]) == 0
    capsys.readouterr()
    # Run again: the target is not empty, and the error says how to check it instead.
    assert main(["migrate", "--from", source_url, "--to", target_url]) == 1
    assert "--verify-only" in capsys.readouterr().err
    assert main(["migrate", "--from", source_url, "--to", target_url, "--verify-only",
                 "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    source = supervm.open_storage(source_url)
    try:
        assert report["verified"] and report["verified_keys"] == len(pairs(source))
        assert report["height"] == head_of(source).height == 3
    finally:
        source.close()
    target = supervm.open_storage(target_url)
    key, value = pairs(target)[3]
    target.set(key, value + b"!")
    target.close()
    assert main(["migrate", "--from", source_url, "--to", target_url, "--verify-only"]) == 1
    assert "has another value" in capsys.readouterr().err


# -- kill -9 in the middle of a migration ---------------------------------------------


class MigrateWorker:
    """One run of ``migrate_worker.py``, its stdout read by a thread."""

    def __init__(self, source_url: str, target_url: str, batch_keys: int, stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr = stderr.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), source_url, target_url, str(batch_keys), "4"],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=STALL_SECONDS)
        except queue.Empty:
            pytest.fail(f"migrate worker printed nothing for {STALL_SECONDS:.0f} s")
        if line is None:
            self.proc.wait()
            pytest.fail(
                f"migrate worker exited by itself ({self.proc.returncode})\n"
                + self.stderr_path.read_text(errors="replace")[-4000:]
            )
        return line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def chain_source(backend: str, tmp_path: Path) -> Iterator[str]:
    """A closed file store of ``backend`` holding the test chain; its URL."""
    url = url_for(backend, tmp_path / "source")
    (tmp_path / "source").mkdir()
    with fresh_store("memory", tmp_path) as built:
        extend(built, 3 * BLOCKS)
        store = supervm.open_storage(url)
        migrate(built, store)
        store.close()
    yield url


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, *SERVER_BACKENDS])
def test_a_migration_killed_by_sigkill_resumes(backend: str, tmp_path: Path) -> None:
    if backend in SERVER_BACKENDS:
        require_server(backend)
    source_backend = "lmdb" if backend == "rocksdb" else "rocksdb"
    with (
        chain_source(source_backend, tmp_path) as source_url,
        crash_target(backend, tmp_path, "migrate") as target,
    ):
        worker = MigrateWorker(source_url, target.worker_url, 40, tmp_path / "worker.err")
        assert worker.next_line().split() == ["READY"]
        acknowledged = 0
        for _ in range(5):
            words = worker.next_line().split()
            assert words[0] == "BATCH", words
            acknowledged = int(words[1])
        worker.kill()
        target.wait_gone()

        source = supervm.open_storage(source_url, create=False)
        store = supervm.open_storage(target.url, create=False)
        try:
            with pytest.raises(IncompleteStoreError, match="unfinished migration"):
                Chain(store)
            report = migrate(source, store, batch_keys=40, source_name=source_url)
            assert report.resumed
            assert report.resumed_keys >= acknowledged > 0
            assert report.resumed_keys < report.keys
            assert report.head == head_of(source) and report.head.height == 3 * BLOCKS
            check_copy(source, store, report)
        finally:
            store.close()
            source.close()
