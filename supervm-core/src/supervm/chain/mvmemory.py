"""The multi-version memory of parallel block execution (Block-STM).

For every key, the values written by each transaction of the block, tagged with
the incarnation that wrote them. A transaction reads the value written by the
highest lower-indexed transaction, or the pre-block state when there is none.
Writes of an aborted incarnation become *estimates*: a reader that meets one
waits for that transaction instead of reading a value about to change.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import Final

from supervm.state import BatchOp, StateView, merge

__all__ = ["ESTIMATE", "Dependency", "MVMemory", "TxView", "Version"]

#: Where a read came from: ``(txn_index, incarnation)``, or ``None`` for pre-block state.
Version = tuple[int, int] | None


class _Estimate:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ESTIMATE"


ESTIMATE: Final = _Estimate()


class Dependency(Exception):
    """A read met an estimate written by transaction ``blocking``."""

    def __init__(self, blocking: int) -> None:
        super().__init__(blocking)
        self.blocking = blocking


class _Versions:
    """One key's entries: transaction indices in ascending order beside their entries."""

    __slots__ = ("entries", "indices")

    def __init__(self) -> None:
        #: Indices of the transactions with an entry, ascending: bisected by lookups.
        self.indices: list[int] = []
        #: ``(incarnation, value)`` or :data:`ESTIMATE`, by transaction index.
        self.entries: dict[int, object] = {}

    def put(self, txn: int, entry: object) -> None:
        entries = self.entries
        if txn not in entries:
            indices = self.indices
            if not indices or indices[-1] < txn:
                indices.append(txn)
            else:
                insort(indices, txn)
        entries[txn] = entry

    def remove(self, txn: int) -> None:
        entries = self.entries
        if txn in entries:
            del entries[txn]
            indices = self.indices
            del indices[bisect_left(indices, txn)]

    def below(self, txn: int) -> int:
        """The highest index with an entry below ``txn``, or -1."""
        indices = self.indices
        position = bisect_left(indices, txn)
        return indices[position - 1] if position else -1


class MVMemory:
    """Versions written by the block's transactions, over the pre-block state.

    Each key's versions are kept sorted by transaction index, so finding the
    one a transaction reads is a bisection, however many transactions wrote
    the key. One lock guards the versions; the pre-block state is never
    changed and is read outside it.
    """

    def __init__(self, base: StateView) -> None:
        self.base = base
        self._data: dict[bytes, _Versions] = {}
        self._written: dict[int, set[bytes]] = {}
        self._lock = threading.Lock()

    def _find(self, key: bytes, txn: int) -> tuple[tuple[int, int], bytes | None] | None:
        """Newest entry below ``txn`` as ``(version, value)``, or None for the pre-block state.

        Called with the lock held; raises Dependency on an estimate.
        """
        versions = self._data.get(key)
        if versions is None:
            return None
        best = versions.below(txn)
        if best < 0:
            return None
        entry = versions.entries[best]
        if entry is ESTIMATE:
            raise Dependency(best)
        written: tuple[int, bytes | None] = entry  # type: ignore[assignment]
        return (best, written[0]), written[1]

    def read(self, key: bytes, txn: int) -> tuple[Version, bytes | None]:
        """The version and value transaction ``txn`` sees for ``key``."""
        with self._lock:
            found = self._find(key, txn)
        if found is None:
            return None, self.base.get(key)
        return found

    def scan(self, prefix: bytes, txn: int) -> list[tuple[bytes, Version, bytes | None]]:
        """Every key with ``prefix`` as ``txn`` sees it, deleted ones included (value None)."""
        base = [(key, (None, value)) for key, value in self.base.scan(prefix)]
        with self._lock:
            pending = []
            for key in sorted(k for k in self._data if k.startswith(prefix)):
                found = self._find(key, txn)
                if found is not None:
                    pending.append((key, found))
        entries: list[tuple[bytes, tuple[Version, bytes | None]]] = list(merge(base, pending))
        return [(key, version, value) for key, (version, value) in entries]

    def record(self, txn: int, incarnation: int, writes: Iterable[BatchOp]) -> bool:
        """Install an incarnation's writes; True if it wrote a key the last one did not."""
        with self._lock:
            data = self._data
            new_keys = set()
            for key, value in writes:
                versions = data.get(key)
                if versions is None:
                    versions = data[key] = _Versions()
                versions.put(txn, (incarnation, value))
                new_keys.add(key)
            old_keys = self._written.get(txn, set())
            for key in old_keys - new_keys:
                versions = data.get(key)
                if versions is not None:
                    versions.remove(txn)
                    if not versions.indices:
                        del data[key]
            self._written[txn] = new_keys
            return bool(new_keys - old_keys)

    def mark_estimates(self, txn: int) -> None:
        """Turn ``txn``'s writes into estimates (its incarnation was aborted)."""
        with self._lock:
            for key in self._written.get(txn, ()):
                self._data[key].entries[txn] = ESTIMATE

    def validate(self, txn: int, reads: list[tuple[bytes, Version]],
                 scans: list[tuple[bytes, list[tuple[bytes, Version]]]]) -> bool:  # fmt: skip
        """Whether every read and scan of ``txn`` would still see the same versions."""
        try:
            with self._lock:
                for key, version in reads:
                    found = self._find(key, txn)
                    if (None if found is None else found[0]) != version:
                        return False
            for prefix, seen in scans:
                now = [(key, version) for key, version, _ in self.scan(prefix, txn)]
                if now != seen:
                    return False
        except Dependency:
            return False
        return True

    def final_writes(self) -> list[BatchOp]:
        """The block's write set: the highest transaction's value for each key, sorted."""
        out = []
        with self._lock:
            for key in sorted(self._data):
                versions = self._data[key]
                entry = versions.entries[versions.indices[-1]]
                assert entry is not ESTIMATE, "estimate left after the block finished"
                out.append((key, entry[1]))  # type: ignore[index]
        return out


class TxView:
    """What one incarnation of transaction ``txn`` reads; records versions for validation."""

    def __init__(self, memory: MVMemory, txn: int) -> None:
        self.memory = memory
        self.txn = txn
        self.reads: list[tuple[bytes, Version]] = []
        self.scans: list[tuple[bytes, list[tuple[bytes, Version]]]] = []

    def get(self, key: bytes) -> bytes | None:
        version, value = self.memory.read(key, self.txn)
        self.reads.append((key, version))
        return value

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        entries = self.memory.scan(prefix, self.txn)
        self.scans.append((prefix, [(key, version) for key, version, _ in entries]))
        return [(key, value) for key, _, value in entries if value is not None]
