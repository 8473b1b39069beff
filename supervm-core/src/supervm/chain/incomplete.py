"""Stores being filled by an import or a migration: their record, and how they are refused.

An operation that fills an empty store in several batches (a snapshot import,
a migration) first writes a record of itself at
:data:`~supervm.layout.INCOMPLETE_KEY` (JSON with at least ``operation``) and
deletes it in its last batch. While the record is there the store is not a
chain: :class:`~supervm.chain.Chain` refuses to open it
(:class:`IncompleteStoreError`), so nothing half-copied is ever read as state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from supervm.errors import SuperVMError
from supervm.layout import INCOMPLETE_KEY
from supervm.storage import BatchOp, Storage

__all__ = [
    "IncompleteStoreError",
    "close_scan",
    "empty_store",
    "incomplete_record",
    "refuse_incomplete",
]


class IncompleteStoreError(SuperVMError):
    """The store holds an unfinished snapshot import or migration: it is not a chain yet."""

    def __init__(self, message: str, *, operation: str, record: dict[str, object]) -> None:
        super().__init__(message)
        self.operation = operation
        self.record = record


def incomplete_record(storage: Storage) -> dict[str, object] | None:
    """The store's record of an unfinished import or migration (``None``: there is none)."""
    raw = storage.get(INCOMPLETE_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("operation"), str):
        raise SuperVMError(
            f"the store's record of an unfinished operation is corrupt: {raw[:80]!r}"
        )
    return record


def refuse_incomplete(storage: Storage) -> None:
    """Raise :class:`IncompleteStoreError` if an import or migration into ``storage`` is
    unfinished."""
    record = incomplete_record(storage)
    if record is None:
        return
    operation = str(record["operation"])
    source = record.get("source")
    what = f" from {source}" if source else ""
    raise IncompleteStoreError(
        f"the store holds an unfinished {operation}{what}: run it again to finish it "
        "(it resumes where it stopped), or empty the store",
        operation=operation,
        record=record,
    )


def close_scan(pairs: Iterator[tuple[bytes, bytes]]) -> None:
    """Release a scan that was not read to its end (a generator's or driver's ``close``)."""
    close = getattr(pairs, "close", None)
    if close is not None:
        close()


def empty_store(storage: Storage, batch_keys: int = 10_000) -> int:
    """Delete every key but the unfinished operation's record, ``batch_keys`` at a time;
    returns how many were deleted."""
    deleted = 0
    ranged = storage.capabilities.range_scan
    after: bytes | None = None
    while True:
        pairs = storage.scan_range(after, None) if ranged else storage.scan(b"")
        doomed: list[BatchOp] = []
        try:
            for key, _ in pairs:
                if key != INCOMPLETE_KEY:
                    doomed.append((key, None))
                    if len(doomed) >= batch_keys:
                        break
        finally:
            close_scan(pairs)
        if not doomed:
            return deleted
        storage.write_batch(doomed)
        deleted += len(doomed)
        after = doomed[-1][0]
