"""The multi-version memory of parallel block execution (Block-STM).

For every key, the values written by each transaction of the block, tagged with
the incarnation that wrote them. A transaction reads the value written by the
highest lower-indexed transaction, or the pre-block state when there is none.
Writes of an aborted incarnation become *estimates*: a reader that meets one
waits for that transaction instead of reading a value about to change.
"""

from __future__ import annotations

import threading
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


class MVMemory:
    """Versions written by the block's transactions, over the pre-block state."""

    def __init__(self, base: StateView) -> None:
        self.base = base
        self._data: dict[bytes, dict[int, object]] = {}
        self._written: dict[int, set[bytes]] = {}
        self._lock = threading.Lock()

    def _lookup(self, key: bytes, txn: int) -> tuple[Version, bytes | None]:
        """Newest entry below ``txn``: raises Dependency on an estimate."""
        entries = self._data.get(key)
        if entries:
            best = -1
            for index in entries:
                if best < index < txn:
                    best = index
            if best >= 0:
                entry = entries[best]
                if entry is ESTIMATE:
                    raise Dependency(best)
                written: tuple[int, bytes | None] = entry  # type: ignore[assignment]
                return (best, written[0]), written[1]
        return None, self.base.get(key)

    def read(self, key: bytes, txn: int) -> tuple[Version, bytes | None]:
        """The version and value transaction ``txn`` sees for ``key``."""
        with self._lock:
            return self._lookup(key, txn)

    def scan(self, prefix: bytes, txn: int) -> list[tuple[bytes, Version, bytes | None]]:
        """Every key with ``prefix`` as ``txn`` sees it, deleted ones included (value None)."""
        base = [(key, (None, value)) for key, value in self.base.scan(prefix)]
        with self._lock:
            pending = []
            for key in sorted(k for k in self._data if k.startswith(prefix)):
                version, value = self._lookup(key, txn)
                if version is not None:
                    pending.append((key, (version, value)))
            entries: list[tuple[bytes, tuple[Version, bytes | None]]] = list(merge(base, pending))
        return [(key, version, value) for key, (version, value) in entries]

    def record(self, txn: int, incarnation: int, writes: Iterable[BatchOp]) -> bool:
        """Install an incarnation's writes; True if it wrote a key the last one did not."""
        with self._lock:
            new_keys = set()
            for key, value in writes:
                self._data.setdefault(key, {})[txn] = (incarnation, value)
                new_keys.add(key)
            old_keys = self._written.get(txn, set())
            for key in old_keys - new_keys:
                entries = self._data.get(key)
                if entries is not None:
                    entries.pop(txn, None)
            self._written[txn] = new_keys
            return bool(new_keys - old_keys)

    def mark_estimates(self, txn: int) -> None:
        """Turn ``txn``'s writes into estimates (its incarnation was aborted)."""
        with self._lock:
            for key in self._written.get(txn, ()):
                self._data[key][txn] = ESTIMATE

    def validate(self, txn: int, reads: list[tuple[bytes, Version]],
                 scans: list[tuple[bytes, list[tuple[bytes, Version]]]]) -> bool:  # fmt: skip
        """Whether every read and scan of ``txn`` would still see the same versions."""
        try:
            for key, version in reads:
                if self.read(key, txn)[0] != version:
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
                entries = self._data[key]
                if not entries:
                    continue
                entry = entries[max(entries)]
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
