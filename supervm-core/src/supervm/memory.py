"""The in-memory store: a dict with a lazily sorted key index."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Self

from supervm.errors import InvalidURLError, StorageClosedError
from supervm.storage import (
    BatchOp,
    Capabilities,
    RangeScanStorage,
    Snapshot,
    check_key,
    check_ops,
    check_prefix,
    check_value,
    prefix_upper_bound,
)
from supervm.url import StorageURL

__all__ = ["MemoryStorage"]


def _slice(
    data: dict[bytes, bytes], keys: list[bytes], start: bytes | None, end: bytes | None
) -> list[tuple[bytes, bytes]]:
    lo = bisect_left(keys, start) if start is not None else 0
    hi = bisect_left(keys, end) if end is not None else len(keys)
    return [(k, data[k]) for k in keys[lo:hi]]


class _MemorySnapshot(Snapshot):
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self._data: dict[bytes, bytes] | None = data
        self._keys = sorted(data)

    def _live(self) -> dict[bytes, bytes]:
        if self._data is None:
            raise StorageClosedError("snapshot is closed")
        return self._data

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        return self._live().get(key)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        check_prefix(prefix)
        data = self._live()
        yield from _slice(data, self._keys, prefix or None, prefix_upper_bound(prefix))

    def close(self) -> None:
        self._data = None


class MemoryStorage(RangeScanStorage):
    """A non-persistent store held in a Python dict (``memory://``)."""

    schemes = ("memory",)
    url_form = "memory://"
    capabilities = Capabilities(
        persistent=False, range_scan=True, reverse_scan=True, snapshots=True
    )

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] | None = []
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Open ``memory://``; its one option, ``create``, is ignored (nothing is kept)."""
        url.reject_unknown_options(("create",))
        url.bool_option("create", True)
        if url.netloc or url.path not in ("", "/"):
            raise InvalidURLError(f"memory:// takes no host or path, got {url.safe!r}")
        return cls()

    @property
    def closed(self) -> bool:
        return self._closed

    def _sorted_keys(self) -> list[bytes]:
        keys = self._keys
        if keys is None:
            keys = self._keys = sorted(self._data)
        return keys

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes or not key:
            check_key(key)
        if self._closed:
            self._check_open()
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or not key:
            check_key(key)
        if type(value) is not bytes:
            check_value(value)
        if self._closed:
            self._check_open()
        with self._lock:
            if key not in self._data:
                self._keys = None
            self._data[key] = value

    def delete(self, key: bytes) -> None:
        check_key(key)
        self._check_open()
        with self._lock:
            if self._data.pop(key, None) is not None:
                self._keys = None

    def _range(
        self, start: bytes | None, end: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._lock:
            items = _slice(self._data, self._sorted_keys(), start, end)
        if reverse:
            items.reverse()
        return iter(items)

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked, _ = check_ops(ops)
        self._check_open()
        with self._lock:
            data = self._data
            for key, value in checked:
                if value is None:
                    if data.pop(key, None) is not None:
                        self._keys = None
                else:
                    if key not in data:
                        self._keys = None
                    data[key] = value

    def snapshot(self) -> Snapshot:
        self._check_open()
        with self._lock:
            return _MemorySnapshot(dict(self._data))

    def close(self) -> None:
        self._closed = True

    def __len__(self) -> int:
        return len(self._data)
