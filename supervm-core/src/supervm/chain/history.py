"""State at past heights: per-block change sets and a history index, pruning and unwinding.

The layout follows the archive layout of Erigon and reth: the latest state is
kept plain (a read of it is one storage get), and every block also writes

- a change set: for each key it changed, the key's value before the block
  (``h/c/`` + height + key -> ``0x00`` when the key was absent, else ``0x01``
  + the old value);
- history index entries: ``h/i/`` + key length (2 bytes) + key + height ->
  empty, so the heights at which a key changed sort together, in order.

The value of ``k`` at height ``h`` is the old value recorded by the first block
after ``h`` that changed ``k``, or the latest value when no later block did.
Change sets are written only for the keys the state tree covers
(:func:`~supervm.layout.in_state_tree`).

Pruning to a horizon ``p`` first records ``p`` (reads below it then raise
:class:`PrunedHeightError`), then deletes, in bounded batches, the change
sets and index entries of blocks up to ``p``, the tree nodes made stale at
versions up to ``p`` and the tree's root records below ``p``. Each batch is
atomic and the work is found again from the store, so an interrupted pruning
resumes where it stopped. Headers and block bodies are kept.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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
from supervm.storage import RangeScanStorage, Storage, prefix_upper_bound

__all__ = [
    "HeightView",
    "History",
    "PruneReport",
    "PrunedHeightError",
    "change_key",
    "index_key",
]

_ABSENT = b"\x00"
_PRESENT = b"\x01"
_BE8 = struct.Struct(">Q")
#: Keys deleted by one pruning batch, by default.
PRUNE_BATCH = 10_000


class PrunedHeightError(SuperVMError, LookupError):
    """A read, proof or revert at a height whose history the store no longer keeps."""

    def __init__(self, message: str, *, height: int, horizon: int) -> None:
        super().__init__(message)
        self.height = height
        self.horizon = horizon


def change_key(height: int, key: bytes) -> bytes:
    """The change-set entry of ``key`` in the block at ``height``."""
    return CHANGE_PREFIX + _BE8.pack(height) + key


def _index_prefix(key: bytes) -> bytes:
    return HISTORY_PREFIX + struct.pack(">H", len(key)) + key


def index_key(key: bytes, height: int) -> bytes:
    """The history-index entry saying that the block at ``height`` changed ``key``."""
    return _index_prefix(key) + _BE8.pack(height)


@dataclass(frozen=True)
class PruneReport:
    """What one pruning did: the horizon, and the keys and bytes it deleted."""

    horizon: int
    keys: int
    bytes: int
    change_sets: int
    tree_nodes: int
    #: Whether everything below the horizon is gone (False: stopped at ``max_keys``).
    complete: bool


class History:
    """Change sets and the history index of a chain's store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # -- writing ---------------------------------------------------------------------

    def block_ops(self, height: int, write_set: Iterable[BatchOp]) -> list[BatchOp]:
        """The change-set and index entries the block at ``height`` writes with its state.

        Reads each key's value before the block from the store (the latest state).
        """
        get = self.storage.get
        ops: list[BatchOp] = []
        for key, _ in write_set:
            if not in_state_tree(key):
                continue
            old = get(key)
            ops.append((change_key(height, key), _ABSENT if old is None else _PRESENT + old))
            ops.append((index_key(key, height), b""))
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
        horizon = self.horizon()
        if height < horizon:
            raise PrunedHeightError(
                f"the state at height {height} is pruned: this store keeps heights "
                f"{horizon} to {head}",
                height=height,
                horizon=horizon,
            )

    # -- reading -----------------------------------------------------------------------

    def _next_change(self, key: bytes, height: int) -> int | None:
        """The first height above ``height`` at which a block changed ``key``."""
        prefix = _index_prefix(key)
        start = prefix + _BE8.pack(height + 1)
        storage = self.storage
        if isinstance(storage, RangeScanStorage):
            for found, _ in storage.scan_range(start, prefix_upper_bound(prefix)):
                return int(_BE8.unpack(found[len(prefix) :])[0])
            return None
        for found, _ in storage.scan(prefix):
            if found >= start:
                return int(_BE8.unpack(found[len(prefix) :])[0])
        return None

    def head(self) -> int:
        """The height of the last committed block (0 before any)."""
        raw = self.storage.get(HEIGHT_KEY)
        return 0 if raw is None else int(_BE8.unpack(raw)[0])

    def value_at(self, key: bytes, height: int) -> bytes | None:
        """The value of ``key`` after the block at ``height`` (a kept height)."""
        # The latest value first: a block committing meanwhile writes its value and its
        # index entry in one batch, so if no later change is indexed below, this is it.
        latest = self.storage.get(key)
        changed = self._next_change(key, height)
        if changed is None:
            value = latest
        else:
            record = self.storage.get(change_key(changed, key))
            if record is None:
                raise SuperVMError(
                    f"the history of key {key.hex()} is corrupt: block {changed} has an "
                    "index entry but no change-set entry"
                )
            value = None if record == _ABSENT else record[1:]
        self._check_still_kept(height)
        return value

    def _check_still_kept(self, height: int) -> None:
        # A pruning that passed ``height`` while we read may have deleted what we used.
        horizon = self.horizon()
        if height < horizon:
            raise PrunedHeightError(
                f"the state at height {height} was pruned while it was being read "
                f"(this store now keeps heights from {horizon})",
                height=height,
                horizon=horizon,
            )

    def changed_keys(self, after: int, upto: int, prefix: bytes = b"") -> set[bytes]:
        """Keys with ``prefix`` that blocks ``after + 1 .. upto`` changed."""
        keys: set[bytes] = set()
        for height in range(after + 1, upto + 1):
            block = CHANGE_PREFIX + _BE8.pack(height)
            skip = len(block)
            for entry, _ in self.storage.scan(block + prefix):
                keys.add(entry[skip:])
        return keys

    def scan_at(self, prefix: bytes, height: int) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``prefix`` after the block at ``height``, in key order.

        The latest pairs are read first, then the keys that blocks after
        ``height`` changed (up to the head as it is then) are read at
        ``height``: a block committed meanwhile is among those blocks.
        """
        latest = [(k, v) for k, v in self.storage.scan(prefix) if in_state_tree(k)]
        changed = sorted(self.changed_keys(height, self.head(), prefix))
        values = [(key, self.value_at(key, height)) for key in changed]
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
        deleted = size = change_sets = nodes = 0
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

        for kind, (key, value) in self._prunable(horizon):
            if budget is not None and budget <= 0:
                complete = False
                break
            ops.append((key, None))
            deleted += 1
            size += len(key) + len(value)
            if kind == "change":
                change_sets += 1
                # The index entry of the same change goes with it.
                height = _BE8.unpack(key[len(CHANGE_PREFIX) : len(CHANGE_PREFIX) + 8])[0]
                state_key = key[len(CHANGE_PREFIX) + 8 :]
                entry = index_key(state_key, height)
                ops.append((entry, None))
                deleted += 1
                size += len(entry)
            elif kind == "node":
                nodes += 1
            if budget is not None:
                budget -= 1
            if len(ops) >= batch:
                flush()
        flush()
        return PruneReport(horizon, deleted, size, change_sets, nodes, complete)

    def _prunable(self, horizon: int) -> Iterator[tuple[str, tuple[bytes, bytes]]]:
        """Entries no read at ``horizon`` or above needs, oldest first."""
        limit = _BE8.pack(horizon + 1)
        # Change sets of blocks <= horizon: reads at h need those of blocks > h only.
        for key, value in self._until(CHANGE_PREFIX, limit):
            yield "change", (key, value)
        # Nodes made stale at versions <= horizon belong to trees below the horizon.
        for record, value in self._until(TREE_STALE_PREFIX, limit):
            node_key = record[len(TREE_STALE_PREFIX) + 8 :]
            stored = TREE_NODE_PREFIX + node_key
            node = self.storage.get(stored)
            if node is not None:
                yield "node", (stored, node)
            yield "stale", (record, value)
        for record, value in self._until(TREE_ROOT_PREFIX, _BE8.pack(horizon)):
            yield "root", (record, value)

    def _until(self, prefix: bytes, limit: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Pairs under ``prefix`` whose next 8 bytes are below ``limit``, in order."""
        storage = self.storage
        end = prefix + limit
        if isinstance(storage, RangeScanStorage):
            # Materialised per call: the caller deletes as it goes.
            yield from list(storage.scan_range(prefix, end))
            return
        yield from [(k, v) for k, v in storage.scan(prefix) if k < end]

    # -- unwinding -------------------------------------------------------------------------

    def unwind_ops(self, height: int) -> list[BatchOp]:
        """Operations that undo the block at ``height``'s state writes and history entries."""
        block = CHANGE_PREFIX + _BE8.pack(height)
        ops: list[BatchOp] = []
        for entry, record in self.storage.scan(block):
            key = entry[len(block) :]
            ops.append((key, None if record == _ABSENT else record[1:]))
            ops.append((entry, None))
            ops.append((index_key(key, height), None))
        return ops


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
