"""A store that keeps every write as a checksummed record in one append-only file.

Each ``set``, ``delete`` and batch is one record: ``length (4) | crc32 (4) |
payload``. On open the log is replayed into a dict; a torn last record (a crash
mid-write) fails its checksum and is cut off, so a batch lands whole or not at all.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Self

from supervm.errors import StorageClosedError, StorageError, StorageLockedError
from supervm.storage import (
    BatchOp,
    Capabilities,
    Storage,
    check_key,
    check_ops,
    check_prefix,
    check_value,
    prefix_upper_bound,
    store_path,
)
from supervm.url import StorageURL

_HEADER = struct.Struct(">II")
_LEN = struct.Struct(">I")


def _encode(ops: list[BatchOp]) -> bytes:
    parts = []
    for key, value in ops:
        parts.append((b"D" if value is None else b"P") + _LEN.pack(len(key)) + key)
        if value is not None:
            parts.append(_LEN.pack(len(value)) + value)
    payload = b"".join(parts)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> Iterator[BatchOp]:
    pos = 0
    while pos < len(payload):
        tag = payload[pos : pos + 1]
        (klen,) = _LEN.unpack_from(payload, pos + 1)
        key = payload[pos + 5 : pos + 5 + klen]
        pos += 5 + klen
        if tag == b"D":
            yield key, None
        else:
            (vlen,) = _LEN.unpack_from(payload, pos)
            yield key, payload[pos + 4 : pos + 4 + vlen]
            pos += 4 + vlen


class LogFileStorage(Storage):
    """``logfile:///path/to/file.log[?sync=true&create=false]``."""

    schemes = ("logfile",)
    url_form = "logfile:///ABS/FILE or logfile://REL/FILE[?sync=true&create=true]"
    capabilities = Capabilities(persistent=True, sync_writes=True)

    def __init__(self, path: str, *, sync: bool = False, create: bool = True) -> None:
        # With create=False a missing file raises StoreNotFoundError; nothing is made.
        self.path = path = store_path(path, create=create, kind="log file")
        self._sync = sync
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        try:
            file: BinaryIO = open(path, "a+b")  # noqa: SIM115 - held open until close()
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc}", original=exc) from exc
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            file.close()
            raise StorageLockedError(f"{path} is locked by another process", original=exc) from exc
        self._file: BinaryIO | None = file
        self._replay(file)

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        url.reject_unknown_options(["sync", "create"])
        return cls(
            url.file_path(),
            sync=url.bool_option("sync", False),
            create=url.bool_option("create", True),
        )

    def _replay(self, file: BinaryIO) -> None:
        file.seek(0)
        blob = file.read()
        pos = good = 0
        while pos + _HEADER.size <= len(blob):
            length, crc = _HEADER.unpack_from(blob, pos)
            payload = blob[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            for key, value in _decode(payload):
                self._apply(key, value)
            pos = good = pos + _HEADER.size + length
        if good != len(blob):
            file.truncate(good)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value

    def _append(self, ops: list[BatchOp]) -> None:
        file = self._file
        if file is None:
            raise StorageClosedError(f"{self.path} is closed")
        record = _encode(ops)
        with self._lock:
            try:
                file.write(record)
                file.flush()
                if self._sync:
                    os.fsync(file.fileno())
            except OSError as exc:
                raise StorageError(f"writing {self.path} failed: {exc}", original=exc) from exc
            for key, value in ops:
                self._apply(key, value)

    @property
    def closed(self) -> bool:
        return self._file is None

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        self._check_open()
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self._append([(check_key(key), check_value(value))])

    def delete(self, key: bytes) -> None:
        self._append([(check_key(key), None)])

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        checked, _ = check_ops(ops)
        self._check_open()
        if checked:
            self._append(checked)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        check_prefix(prefix)
        self._check_open()
        with self._lock:
            keys = sorted(self._data)
            end = prefix_upper_bound(prefix)
            lo = bisect_left(keys, prefix)
            hi = len(keys) if end is None else bisect_left(keys, end)
            items = [(k, self._data[k]) for k in keys[lo:hi]]
        return iter(items)

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
