"""State views and the overlay merge: pending writes over a base view.

Everything that reads state during execution reads a :class:`StateView`: the
store itself (:class:`StorageView`), a store with the writes of earlier
transactions on top (:class:`OverlayView`), or a transaction's view of the
block's multi-version memory. Pending writes are a :data:`WriteSet`: pairs of
key and value, ``None`` for a delete. :func:`merge` is the one place that lays
pending writes over a base scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

from supervm.storage import BatchOp, Storage

__all__ = [
    "BatchOp",
    "OverlayView",
    "StateView",
    "StorageView",
    "WriteSet",
    "merge",
    "pending_under",
]

#: Writes in key order: ``(key, value)`` puts and ``(key, None)`` deletes.
WriteSet = tuple[BatchOp, ...]

V = TypeVar("V")


class StateView(Protocol):
    """Read access to state, as a call sees it."""

    def get(self, key: bytes) -> bytes | None:
        """Value of ``key`` or ``None``."""

    def scan(self, prefix: bytes) -> Iterable[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in ascending key order."""


def merge(
    base: Iterable[tuple[bytes, V]], pending: Iterable[tuple[bytes, V | None]]
) -> Iterator[tuple[bytes, V]]:
    """``base`` with ``pending`` laid over it, in ascending key order.

    Both inputs must be sorted by key. A pending entry replaces the base entry
    with the same key; a pending ``None`` hides it. Lazy: ``base`` is consumed
    only as far as the caller reads.
    """
    ahead = iter(pending)
    nxt = next(ahead, None)
    if nxt is None:
        yield from base
        return
    for key, value in base:
        while nxt is not None and nxt[0] < key:
            if nxt[1] is not None:
                yield nxt  # type: ignore[misc]
            nxt = next(ahead, None)
        if nxt is not None and nxt[0] == key:
            if nxt[1] is not None:
                yield nxt  # type: ignore[misc]
            nxt = next(ahead, None)
            continue
        yield key, value
    while nxt is not None:
        if nxt[1] is not None:
            yield nxt  # type: ignore[misc]
        nxt = next(ahead, None)


def pending_under(writes: Mapping[bytes, V | None], prefix: bytes) -> list[tuple[bytes, V | None]]:
    """The entries of ``writes`` whose key starts with ``prefix``, sorted by key."""
    return sorted(item for item in writes.items() if item[0].startswith(prefix))


class StorageView:
    """A :class:`StateView` straight over a store."""

    __slots__ = ("get", "storage")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.get = storage.get

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.storage.scan(prefix)


class OverlayView:
    """Pending writes (a dict, ``None`` for deletes) over a base view."""

    __slots__ = ("base", "overlay")

    def __init__(self, base: StateView, overlay: dict[bytes, bytes | None] | None = None) -> None:
        self.base = base
        self.overlay: dict[bytes, bytes | None] = {} if overlay is None else overlay

    def get(self, key: bytes) -> bytes | None:
        overlay = self.overlay
        if key in overlay:
            return overlay[key]
        return self.base.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return merge(self.base.scan(prefix), pending_under(self.overlay, prefix))

    def update(self, writes: Sequence[BatchOp]) -> None:
        """Lay ``writes`` over the view."""
        self.overlay.update(writes)
