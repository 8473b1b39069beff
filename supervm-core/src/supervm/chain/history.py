"""State at past heights: per-key history entries and per-block change records; pruning, unwinding.

The layout follows the archive layout of Erigon and reth: the latest state is
kept plain (a read of it is one storage get), and every block also writes

- history entries: for each key it changed, ``h/i/`` + key length (2 bytes) +
  key + height -> the key's value before the block (``0x00`` when the key was
  absent, else ``0x01`` + the old value), so the changes of one key sort
  together, by height;
- its change record: ``h/c/`` + height -> the keys it changed (each as a
  2-byte length and the key), for unwinding and pruning.

The value of ``k`` at height ``h`` is the old value in the first history entry
of ``k`` above ``h`` (one range-scan step), or the latest value when no later
block changed ``k``. History is written only for the keys the state tree
covers (:func:`~supervm.layout.in_state_tree`).

Pruning to a horizon ``p`` first records ``p`` (reads below it then raise
:class:`PrunedHeightError`), then deletes, in bounded batches, the change
records and history entries of blocks up to ``p``, the tree nodes made stale
at versions up to ``p`` and the tree's root records below ``p``. Each batch is
atomic and the work is found again from the store, so an interrupted pruning
resumes where it stopped. Headers and block bodies are kept.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from supervm.errors import SuperVMError
from supervm.layout import (
    CHANGE_PREFIX,
    HEIGHT_KEY,
    HISTORY_PREFIX,
    KEEP_BLOCKS_KEY,
    PRUNED_KEY,
    TREE_NODE_PREFIX,
    TREE_ROOT_PREFIX,
    TREE_STALE_PREFIX,
    in_state_tree,
)
from supervm.state import BatchOp, merge
from supervm.storage import Storage, prefix_upper_bound
from supervm.tree.node import decode_stale_record

__all__ = [
    "HeightView",
    "History",
    "PruneReport",
    "PrunedHeightError",
    "change_key",
    "decode_keys",
    "encode_keys",
    "index_key",
]

_ABSENT = b"\x00"
_PRESENT = b"\x01"
_BE8 = struct.Struct(">Q")
_LEN = struct.Struct(">H")
#: Keys deleted by one pruning batch, by default.
PRUNE_BATCH = 10_000


class PrunedHeightError(SuperVMError, LookupError):
    """A read, proof or revert at a height whose history the store no longer keeps."""

    def __init__(self, message: str, *, height: int, horizon: int) -> None:
        super().__init__(message)
        self.height = height
        self.horizon = horizon


def change_key(height: int) -> bytes:
    """The change record (the keys it changed) of the block at ``height``."""
    return CHANGE_PREFIX + _BE8.pack(height)


def encode_keys(keys: Iterable[bytes]) -> bytes:
    """Keys as a change record holds them: a 2-byte length and the key, each."""
    pack = _LEN.pack
    return b"".join(pack(len(key)) + key for key in keys)


def decode_keys(record: bytes) -> list[bytes]:
    """The keys of a change record."""
    keys = []
    at = 0
    while at < len(record):
        (size,) = _LEN.unpack_from(record, at)
        at += 2
        keys.append(record[at : at + size])
        at += size
    if at != len(record):
        raise SuperVMError(f"a change record is truncated ({len(record)} bytes)")
    return keys


def _index_prefix(key: bytes) -> bytes:
    return HISTORY_PREFIX + _LEN.pack(len(key)) + key


def index_key(key: bytes, height: int) -> bytes:
    """The history entry of ``key`` for the block at ``height``: its value before it."""
    return _index_prefix(key) + _BE8.pack(height)


@dataclass(frozen=True)
class PruneReport:
    """What one pruning did: the horizon, and the keys and bytes it deleted."""

    horizon: int
    keys: int
    bytes: int
    #: Blocks whose history was deleted (their change records).
    change_sets: int
    #: History entries deleted (one per key a block changed).
    history_entries: int
    tree_nodes: int
    #: Whether everything below the horizon is gone (False: stopped at ``max_keys``).
    complete: bool


class History:
    """Change sets and the history index of a chain's store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._scan_range = _scan_range(storage)

    # -- writing ---------------------------------------------------------------------

    def block_ops(self, height: int, write_set: Iterable[BatchOp]) -> list[BatchOp]:
        """The history entries and change record the block at ``height`` writes.

        Reads each key's value before the block from the store (the latest state).
        """
        get = self.storage.get
        suffix = _BE8.pack(height)
        pack = _LEN.pack
        ops: list[BatchOp] = []
        keys: list[bytes] = []
        for key, _ in write_set:
            if not in_state_tree(key):
                continue
            old = get(key)
            entry = HISTORY_PREFIX + pack(len(key)) + key + suffix
            ops.append((entry, _ABSENT if old is None else _PRESENT + old))
            keys.append(key)
        if keys:
            ops.append((CHANGE_PREFIX + suffix, encode_keys(keys)))
        return ops

    # -- horizon -----------------------------------------------------------------------

    def horizon(self) -> int:
        """The lowest height whose state is still kept (0: every height)."""
        raw = self.storage.get(PRUNED_KEY)
        return 0 if raw is None else _BE8.unpack(raw)[0]

    def keep_blocks(self) -> int | None:
        """How many recent blocks the store keeps history for (``None``: all, an archive)."""
        raw = self.storage.get(KEEP_BLOCKS_KEY)
        return None if raw is None else _BE8.unpack(raw)[0]

    def set_keep_blocks(self, keep: int | None) -> None:
        """Record how many blocks to keep (``None``: keep everything)."""
        if keep is None:
            self.storage.delete(KEEP_BLOCKS_KEY)
            return
        if type(keep) is not int or keep < 0:
            raise ValueError(f"keep_blocks must be an int >= 0 or None, not {keep!r}")
        self.storage.set(KEEP_BLOCKS_KEY, _BE8.pack(keep))

    def check_height(self, height: int, head: int) -> None:
        """Raise unless the state at ``height`` is kept (``horizon <= height <= head``)."""
        if type(height) is not int or height < 0:
            raise ValueError(f"a height is an int >= 0, not {height!r}")
        if height > head:
            raise ValueError(f"height {height} is above the head, {head}")
        self._refuse_pruned(height, f"this store keeps heights {{horizon}} to {head}")

    def _refuse_pruned(self, height: int, kept: str, *, why: str = "is pruned") -> None:
        """Raise PrunedHeightError if ``height`` is below the horizon; ``kept`` says what is
        kept (``{horizon}`` stands for it)."""
        horizon = self.horizon()
        if height < horizon:
            raise PrunedHeightError(
                f"the state at height {height} {why}: {kept.format(horizon=horizon)}",
                height=height,
                horizon=horizon,
            )

    # -- reading -----------------------------------------------------------------------

    def _next_change(self, key: bytes, height: int) -> bytes | None:
        """The history entry (old value) of the first block above ``height`` that changed
        ``key``, or ``None``."""
        prefix = _index_prefix(key)
        for _, record in self._between(prefix, prefix + _BE8.pack(height + 1), None):
            return record
        return None

    def _between(
        self, prefix: bytes, start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs under ``prefix`` with ``start <= key < end`` (``None``: to the prefix's end),
        as a range scan where the store has one."""
        scan_range = self._scan_range
        if scan_range is not None:
            return scan_range(start, prefix_upper_bound(prefix) if end is None else end)
        return (
            (key, value)
            for key, value in self.storage.scan(prefix)
            if key >= start and (end is None or key < end)
        )

    def head(self) -> int:
        """The height of the last committed block (0 before any)."""
        raw = self.storage.get(HEIGHT_KEY)
        return 0 if raw is None else int(_BE8.unpack(raw)[0])

    def value_at(self, key: bytes, height: int) -> bytes | None:
        """The value of ``key`` after the block at ``height`` (a kept height)."""
        value = self._read_at(key, height)
        self._check_still_kept(height)
        return value

    def _read_at(self, key: bytes, height: int) -> bytes | None:
        """:meth:`value_at` without the check that the height was not pruned meanwhile."""
        # The latest value first: a block committing meanwhile writes its value and its
        # history entry in one batch, so if no later change is recorded below, this is it.
        latest = self.storage.get(key)
        record = self._next_change(key, height)
        return latest if record is None else None if record == _ABSENT else record[1:]

    def _check_still_kept(self, height: int) -> None:
        # A pruning that passed ``height`` while we read may have deleted what we used.
        self._refuse_pruned(
            height, "this store now keeps heights from {horizon}",
            why="was pruned while it was being read",
        )  # fmt: skip

    def changed_keys(self, after: int, upto: int, prefix: bytes = b"") -> set[bytes]:
        """Keys with ``prefix`` that blocks ``after + 1 .. upto`` changed."""
        keys: set[bytes] = set()
        get = self.storage.get
        for height in range(after + 1, upto + 1):
            record = get(change_key(height))
            if record:
                keys.update(k for k in decode_keys(record) if k.startswith(prefix))
        return keys

    def scan_at(self, prefix: bytes, height: int) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``prefix`` after the block at ``height``, in key order.

        The latest pairs are read first, then the keys that blocks after
        ``height`` changed (up to the head as it is then) are read at
        ``height``: a block committed meanwhile is among those blocks.
        """
        latest = [(k, v) for k, v in self.storage.scan(prefix) if in_state_tree(k)]
        changed = sorted(self.changed_keys(height, self.head(), prefix))
        values = [(key, self._read_at(key, height)) for key in changed]
        yield from merge(latest, values)
        self._check_still_kept(height)

    # -- pruning ------------------------------------------------------------------------

    def prune(
        self,
        horizon: int,
        *,
        max_keys: int | None = None,
        batch: int = PRUNE_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> PruneReport:
        """Delete what reads at heights ``>= horizon`` do not need, ``batch`` keys at a time."""
        if self.horizon() < horizon:
            self.storage.set(PRUNED_KEY, _BE8.pack(horizon))
        horizon = max(horizon, self.horizon())
        deleted = size = change_sets = entries = nodes = 0
        budget = max_keys
        complete = True
        ops: list[BatchOp] = []

        def flush() -> None:
            nonlocal ops
            if ops:
                self.storage.write_batch(ops)
                if progress is not None:
                    progress(len(ops))
                ops = []

        get = self.storage.get
        for kind, (key, value) in self._prunable(horizon):
            if budget is not None and budget <= 0:
                complete = False
                break
            if kind == "change":
                # The block's history entries go first, its change record last, in one batch.
                height = _BE8.unpack(key[len(CHANGE_PREFIX) :])[0]
                for state_key in decode_keys(value):
                    entry = index_key(state_key, height)
                    old = get(entry)
                    if old is not None:
                        ops.append((entry, None))
                        deleted += 1
                        entries += 1
                        size += len(entry) + len(old)
                change_sets += 1
            ops.append((key, None))
            deleted += 1
            size += len(key) + len(value)
            if kind == "node":
                nodes += 1
            if budget is not None:
                budget -= 1
            if len(ops) >= batch:
                flush()
        flush()
        return PruneReport(horizon, deleted, size, change_sets, entries, nodes, complete)

    def _prunable(self, horizon: int) -> Iterator[tuple[str, tuple[bytes, bytes]]]:
        """Entries no read at ``horizon`` or above needs, oldest first."""
        limit = _BE8.pack(horizon + 1)
        # History of blocks <= horizon: reads at h need that of blocks > h only.
        for key, value in self._until(CHANGE_PREFIX, limit):
            yield "change", (key, value)
        # Nodes made stale at versions <= horizon belong to trees below the horizon.
        for record, value in self._until(TREE_STALE_PREFIX, limit):
            for node_key in decode_stale_record(value):
                stored = TREE_NODE_PREFIX + node_key
                node = self.storage.get(stored)
                if node is not None:
                    yield "node", (stored, node)
            yield "stale", (record, value)
        for record, value in self._until(TREE_ROOT_PREFIX, _BE8.pack(horizon)):
            yield "root", (record, value)

    def _until(self, prefix: bytes, limit: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Pairs under ``prefix`` whose next 8 bytes are below ``limit``, in order."""
        # Materialised per call: the caller deletes as it goes.
        yield from list(self._between(prefix, prefix, prefix + limit))

    # -- unwinding -------------------------------------------------------------------------

    def unwind_ops(self, height: int) -> tuple[list[BatchOp], int]:
        """Operations that undo the block at ``height``'s state writes and its history,
        and the number of keys they restore."""
        record_key = change_key(height)
        record = self.storage.get(record_key)
        if record is None:
            return [], 0
        ops: list[BatchOp] = []
        keys = decode_keys(record)
        for key in keys:
            entry = index_key(key, height)
            old = self.storage.get(entry)
            if old is None:
                raise SuperVMError(
                    f"the history of block {height} is corrupt: no entry for key {key.hex()}"
                )
            ops.append((key, None if old == _ABSENT else old[1:]))
            ops.append((entry, None))
        ops.append((record_key, None))
        return ops, len(keys)


def _scan_range(
    storage: Storage,
) -> Callable[[bytes | None, bytes | None], Iterator[tuple[bytes, bytes]]] | None:
    """The store's key-range scan, when it declares one (``capabilities.range_scan``)."""
    scan_range = getattr(storage, "scan_range", None)
    if scan_range is None or not storage.capabilities.range_scan:
        return None
    return cast("Callable[[bytes | None, bytes | None], Iterator[tuple[bytes, bytes]]]", scan_range)


class HeightView:
    """The state after the block at ``height``, as a :class:`~supervm.state.StateView`.

    It keeps showing that height while later blocks commit; once pruning passes
    the height, reads raise :class:`PrunedHeightError`.
    """

    def __init__(self, history: History, height: int) -> None:
        self._history = history
        self.height = height

    def get(self, key: bytes) -> bytes | None:
        if not in_state_tree(key):
            raise ValueError(f"key {key.hex()} is chain metadata, not state")
        return self._history.value_at(key, self.height)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._history.scan_at(prefix, self.height)
