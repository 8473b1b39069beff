"""Copy a whole store between any two back ends: bounded batches, resumable, verified.

:func:`migrate` copies every pair of the source (state, tree, history,
headers, bodies, hash index, meta records, owners) to an empty target in
ascending key order, a batch at a time. The target carries the record of the
unfinished migration (:data:`~supervm.layout.INCOMPLETE_KEY`, JSON:
``operation``, ``source``, ``head``, ``block_hash``, ``last_key``, ``keys``,
``bytes``) from its first write until the last batch deletes it; each batch
writes its pairs and the updated record in one atomic ``write_batch``. So a
target is, at every moment, either a complete copy or a store that
:class:`~supervm.chain.Chain` refuses (:class:`~supervm.chain.IncompleteStoreError`),
and a run killed at any moment is resumed by running it again: it goes on
after the record's ``last_key``.

The source must not change while it is copied: its head (height and block
hash) is read at the start and checked before every batch is written; a
moved head stops the copy (rerun with ``restart=True`` once nothing writes to
the source). :func:`verify_copy` compares the two stores pair by pair.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass

from supervm.chain.chain import GENESIS, Head
from supervm.chain.header import BlockFormatError, BlockHeader
from supervm.chain.incomplete import close_scan, empty_store, incomplete_record
from supervm.errors import KeyTooLargeError, SuperVMError, ValueTooLargeError
from supervm.layout import HEIGHT_KEY, INCOMPLETE_KEY, header_key
from supervm.storage import BatchOp, Storage
from supervm.tree import JellyfishTree

__all__ = [
    "OPERATION",
    "MigrationError",
    "MigrationReport",
    "check_copy",
    "migrate",
    "store_head",
    "verify_copy",
]

#: The ``operation`` of a migration's record in the target.
OPERATION = "migration"

#: Pairs between two ``progress`` calls of :func:`verify_copy`.
VERIFY_PROGRESS_EVERY = 10_000

#: The callback type of ``progress``: ``(done_keys, total or None)``.
Progress = Callable[[int, int | None], None]


class MigrationError(SuperVMError):
    """A migration was refused or stopped, or a copy differs from its source."""


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did.

    ``keys`` and ``bytes`` (keys plus values) count the whole copy, including
    the ``resumed_keys`` an earlier, interrupted run had copied; ``batches``
    and ``seconds`` are this run's.
    """

    keys: int
    bytes: int
    batches: int
    seconds: float
    resumed: bool
    resumed_keys: int
    head: Head
    verified: bool
    verified_keys: int


def _hex(key: bytes) -> str:
    return key[:64].hex() + ("..." if len(key) > 64 else "")


def store_head(storage: Storage) -> Head:
    """The head recorded in ``storage`` (:data:`~supervm.chain.GENESIS` for a store with no
    chain), read from the layout's keys without opening a chain."""
    raw = storage.get(HEIGHT_KEY)
    if raw is None:
        return GENESIS
    if len(raw) != 8:
        raise MigrationError(f"the store's head height is corrupt: {raw[:16].hex()}")
    (height,) = struct.unpack(">Q", raw)
    encoded = storage.get(header_key(height))
    if encoded is None:
        raise MigrationError(f"the store has no header for its head, block {height}")
    try:
        header = BlockHeader.decode(encoded)
    except BlockFormatError as exc:
        raise MigrationError(f"the store's header of block {height} is corrupt: {exc}") from None
    return Head(height, header.hash, header.state_root)


def _record(name: str, head: Head, last_key: bytes | None, keys: int, size: int) -> bytes:
    return json.dumps(
        {
            "operation": OPERATION,
            "source": name,
            "head": head.height,
            "block_hash": head.block_hash.hex(),
            "last_key": None if last_key is None else last_key.hex(),
            "keys": keys,
            "bytes": size,
        },
        sort_keys=True,
    ).encode()


def _resume_point(record: dict[str, object]) -> tuple[bytes | None, int, int, Head]:
    """``last_key``, ``keys``, ``bytes`` and the source's head (no root) of a migration record."""
    last, keys, size = record.get("last_key"), record.get("keys"), record.get("bytes")
    height, block_hash = record.get("head"), record.get("block_hash")
    try:
        if not (
            isinstance(keys, int)
            and isinstance(size, int)
            and isinstance(height, int)
            and isinstance(block_hash, str)
            and (last is None or isinstance(last, str))
        ):
            raise ValueError
        last_key = None if last is None else bytes.fromhex(last)
        return last_key, keys, size, Head(height, bytes.fromhex(block_hash), b"")
    except ValueError:
        raise MigrationError(f"the target's migration record is corrupt: {record!r}") from None


def _source_scan(source: Storage, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """The source's pairs with keys above ``after`` (all of them for ``None``), in key order."""
    if after is None:
        yield from source.scan(b"")
        return
    ranged = source.capabilities.range_scan
    pairs = source.scan_range(after, None) if ranged else source.scan(b"")
    try:
        for key, value in pairs:
            if key > after:
                yield key, value
    finally:
        close_scan(pairs)


def _check_source(source: Storage, head: Head) -> None:
    now = store_head(source)
    if (now.height, now.block_hash) != (head.height, head.block_hash):
        raise MigrationError(
            f"the source changed during the migration (head {head.height} -> {now.height}): "
            "stop what writes to it and rerun with restart=True"
        )


def migrate(
    source: Storage,
    target: Storage,
    *,
    batch_keys: int = 10_000,
    batch_bytes: int = 8 << 20,
    verify: bool = True,
    restart: bool = False,
    source_name: str | None = None,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every pair of ``source`` to ``target``, resuming an interrupted copy of it.

    The target must be empty, or hold the record of an unfinished migration
    of the same source (``source_name``, default ``repr(source)``) at the same
    head: the copy then goes on after the record's last key. ``restart=True``
    first deletes what such an unfinished migration or import left (of any
    source; a store without that record is never emptied). A batch holds at
    most ``batch_keys`` pairs and about ``batch_bytes`` bytes (at least one
    pair). ``progress(done_keys, total)`` is called after each batch;
    ``total`` is the source's key count when it knows it without a scan (an
    in-memory store), else ``None``. With ``verify``, the copy is then compared
    with the source pair by pair (:func:`verify_copy`, without progress calls)
    and its head and tree root are checked.
    """
    if batch_keys < 1 or batch_bytes < 1:
        raise ValueError("batch_keys and batch_bytes must be at least 1")
    started = time.perf_counter()
    name = repr(source) if source_name is None else source_name
    if source.get(INCOMPLETE_KEY) is not None:
        raise MigrationError(
            f"the source {name} holds an unfinished import or migration: it is not a "
            "complete store (finish that first)"
        )
    head = store_head(source)
    total = len(source) if isinstance(source, Sized) else None

    record = incomplete_record(target)
    resumed = False
    last_key: bytes | None = None
    keys = size = 0
    batches = 0
    wrote = False  # whether the target holds this migration's record
    if record is None:
        held = target.scan(b"")
        first = next(held, None)
        close_scan(held)
        if first is not None:
            raise MigrationError(
                f"the target {target!r} is not empty (it holds key {_hex(first[0])}): a "
                "migration copies into an empty store only (a finished copy is checked "
                "with check_copy, `supervm migrate --verify-only`)"
            )
    elif restart:
        target.write_batch([(INCOMPLETE_KEY, _record(name, head, None, 0, 0))])
        wrote = True
        empty_store(target, batch_keys)
    else:
        operation = record["operation"]
        if operation != OPERATION:
            raise MigrationError(
                f"the target {target!r} holds an unfinished {operation}, not a migration: "
                "finish it, or pass restart=True to empty it"
            )
        if record.get("source") != name:
            raise MigrationError(
                f"the target holds an unfinished migration from {record.get('source')}, not "
                f"from {name}: rerun it naming that source, or pass restart=True to start over"
            )
        last_key, keys, size, began = _resume_point(record)
        if began[:2] != head[:2]:
            moved = f"{began.height} -> {head.height}"
            raise MigrationError(
                f"the source changed since the unfinished migration began (head {moved}): "
                "rerun with restart=True"
            )
        if last_key is None:
            # Nothing copied yet; an interrupted restart may have left keys to delete.
            empty_store(target, batch_keys)
        resumed = wrote = True
    resumed_keys = keys

    pairs = _source_scan(source, last_key)
    finished = False
    # One pair read ahead, so that the batch holding the last pair is the one that finishes.
    ahead: tuple[bytes, bytes] | None = None
    try:
        while not finished:
            ops: list[BatchOp] = []
            batch_size = 0
            if ahead is not None:
                ops.append(ahead)
                batch_size += len(ahead[0]) + len(ahead[1])
                ahead = None
            full = len(ops) >= batch_keys or batch_size >= batch_bytes
            for key, value in pairs:
                if key == INCOMPLETE_KEY:
                    continue
                if full:
                    ahead = (key, value)
                    break
                ops.append((key, value))
                batch_size += len(key) + len(value)
                full = len(ops) >= batch_keys or batch_size >= batch_bytes
            else:
                finished = True
            if not ops and not wrote:
                break  # an empty source: the target stays untouched
            _check_source(source, head)
            if ops:
                last_key = ops[-1][0]
                keys += len(ops)
                size += batch_size
            ops.append(
                (INCOMPLETE_KEY, None if finished else _record(name, head, last_key, keys, size))
            )
            try:
                target.write_batch(ops)
            except (KeyTooLargeError, ValueTooLargeError) as exc:
                raise MigrationError(f"the target cannot hold a pair of the source: {exc}") from exc
            batches += 1
            wrote = True
            if progress is not None:
                progress(keys, total)
    finally:
        close_scan(pairs)

    copy_head = store_head(target)
    verified_keys = 0
    if verify:
        verified_keys, _ = check_copy(source, target)
        _check_source(source, head)
    return MigrationReport(
        keys=keys,
        bytes=size,
        batches=batches,
        seconds=time.perf_counter() - started,
        resumed=resumed,
        resumed_keys=resumed_keys,
        head=copy_head,
        verified=verify,
        verified_keys=verified_keys,
    )


def check_copy(
    source: Storage, target: Storage, *, progress: Progress | None = None
) -> tuple[int, Head]:
    """Check that ``target`` is a whole copy of ``source``: the same pairs
    (:func:`verify_copy`), the same head and a state tree whose root at the head is
    the header's. Returns the pairs compared and the head."""
    if target.get(INCOMPLETE_KEY) is not None:
        raise MigrationError("the target holds an unfinished import or migration: not a copy")
    compared = verify_copy(source, target, progress=progress)
    head, copy_head = store_head(source), store_head(target)
    if copy_head != head:
        raise MigrationError(f"the copy's head {copy_head} is not the source's, {head}")
    if head.height:
        root = JellyfishTree(target).root_hash(head.height)
        if root != head.state_root:
            raise MigrationError(
                f"the copy's state tree at block {head.height} has root {root.hex()}, "
                f"not the header's {head.state_root.hex()}"
            )
    return compared, head


def verify_copy(source: Storage, target: Storage, *, progress: Progress | None = None) -> int:
    """Compare every pair of ``source`` and ``target`` in one lockstep scan; the pairs compared.

    Raises :class:`MigrationError` naming the first difference: a key only one
    side holds, or a key whose values differ. ``progress(compared, None)`` is
    called every :data:`VERIFY_PROGRESS_EVERY` pairs.
    """
    ours = source.scan(b"")
    theirs = target.scan(b"")
    compared = 0
    try:
        while True:
            a = next(ours, None)
            b = next(theirs, None)
            if a is None or b is None:
                if a is not None:
                    raise MigrationError(f"key {_hex(a[0])} is in the source but not the target")
                if b is not None:
                    raise MigrationError(f"key {_hex(b[0])} is in the target but not the source")
                return compared
            if a[0] != b[0]:
                first, side = (a[0], "source") if a[0] < b[0] else (b[0], "target")
                other = "target" if side == "source" else "source"
                raise MigrationError(f"key {_hex(first)} is in the {side} but not the {other}")
            if a[1] != b[1]:
                raise MigrationError(
                    f"key {_hex(a[0])} has another value in the target ({len(b[1])} bytes) "
                    f"than in the source ({len(a[1])} bytes)"
                )
            compared += 1
            if progress is not None and compared % VERIFY_PROGRESS_EVERY == 0:
                progress(compared, None)
    finally:
        close_scan(ours)
        close_scan(theirs)
