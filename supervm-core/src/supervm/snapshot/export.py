"""Writing a snapshot: the state at one height, sorted by key hash, in bounded chunks.

The state is read from the latest pairs, which a store scans in key order, and
sorted by key hash in runs of bounded size spilled to temporary files, then
merged (an external sort). Keys that blocks above the height changed, counting
blocks committed while the scan ran, are read at the height from the history
and replace what the scan saw. So the export shows exactly the state at the
height while new blocks commit, and memory stays bounded by the run size.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from supervm.chain import Chain
from supervm.chain.header import BlockHeader
from supervm.chain.incomplete import close_scan
from supervm.chunkfile import ChunkWriter, frame
from supervm.layout import HEADER_PREFIX, OWNER_PREFIX, header_key, state_pairs
from supervm.snapshot.manifest import (
    FORMAT_VERSION,
    HEADERS,
    KIND,
    MAGIC,
    OWNERS,
    STATE,
    Progress,
    SnapshotError,
    SnapshotManifest,
    read_manifest,
)
from supervm.storage import Storage
from supervm.tree import TreeRestore

__all__ = ["DEFAULT_CHUNK_BYTES", "export_snapshot"]

#: Uncompressed bytes per chunk, by default.
DEFAULT_CHUNK_BYTES: Final = 4 << 20
#: Memory of one buffered record beyond its bytes (the bytes object and its list slot).
_RECORD_OVERHEAD: Final = 48
_BE8: Final = struct.Struct(">Q")
#: A field's length in a chunk (:func:`supervm.chunkfile.frame`).
_LEN: Final = struct.Struct(">I")

#: One state pair being sorted: its key hash, then the pair framed as a chunk holds it
#: (key length, key, value length, value), all in one bytes object.
_Record = bytes


def export_snapshot(
    storage: Storage,
    out: str | os.PathLike[str],
    *,
    height: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    run_bytes: int | None = None,
    verify: bool = False,
    tmp_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> SnapshotManifest:
    """Write the state of ``storage``'s chain at ``height`` (default: the head) to ``out``.

    ``chunk_bytes`` bounds a chunk before compression; ``run_bytes`` (default
    four chunks) bounds the memory the sort takes before it spills a run to
    ``tmp_dir`` (default: beside ``out``). ``verify`` rebuilds the root from
    what is written and refuses to finish a file whose root is not the block's
    (an import checks it in any case).
    The file appears under its name only once it is whole.
    """
    if type(chunk_bytes) is not int or chunk_bytes < 1024:
        raise ValueError(f"chunk_bytes must be an int >= 1024, not {chunk_bytes!r}")
    run_budget = 4 * chunk_bytes if run_bytes is None else run_bytes
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a directory: name the snapshot file to write")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: the directory {out.parent} does not exist")
    chain = Chain(storage, threads=1)
    try:
        head = chain.head()
        height = head.height if height is None else height
        if type(height) is not int:
            raise TypeError(f"a height is an int, not {type(height).__name__}")
        if height == 0 or head.height == 0:
            raise SnapshotError("nothing to snapshot: the chain has no block at that height")
        chain.history.check_height(height, head.height)
        header = chain.header(height)
        if header is None:
            raise SnapshotError(f"the store has no header for block {height}")
        identity = chain.identity()
        workdir = tmp_dir if tmp_dir is not None else out.parent
        with tempfile.TemporaryDirectory(prefix=".supervm-snapshot-", dir=workdir) as tmp:
            runs = _Runs(run_budget, Path(tmp))
            read = 0
            for key, value in state_pairs(storage):
                runs.add(hashlib.sha256(key).digest(), key, value)
                read += 1
                if progress is not None and not read & 0x3FFF:
                    progress("reading", read, None)
            if progress is not None:
                progress("reading", read, None)
            records = _at_height(chain, height, runs)
            with ChunkWriter(out, MAGIC) as writer:
                keys = _write_state(writer, records, chunk_bytes, header, verify, progress, read)
                headers = _write_headers(writer, storage, height, chunk_bytes)
                owners = _write_owners(writer, storage, chunk_bytes)
                # A pruning that passed the height while we read may have deleted history used.
                chain.history.check_height(height, chain.head().height)
                writer.finish({
                    "format": FORMAT_VERSION, "kind": KIND, "chain": identity.hex(),
                    "height": height, "block_hash": header.hash.hex(),
                    "state_root": header.state_root.hex(), "keys": keys, "headers": headers,
                    "owners": owners, "chunk_bytes": chunk_bytes,
                })  # fmt: skip
    finally:
        chain.close()
    return read_manifest(out)


def _record(kh: bytes, key: bytes, value: bytes) -> _Record:
    return kh + _LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value


def _value_of(record: _Record) -> bytes:
    return record[40 + _LEN.unpack_from(record, 32)[0] :]


class _Runs:
    """Records sorted by key hash in runs of bounded memory, spilled to files, merged."""

    def __init__(self, budget: int, tmp: Path) -> None:
        self.budget = budget
        self.tmp = tmp
        self.buffer: list[_Record] = []
        self.size = 0
        self.files: list[Path] = []

    def add(self, kh: bytes, key: bytes, value: bytes) -> None:
        record = kh + _LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value
        self.buffer.append(record)
        self.size += len(record) + _RECORD_OVERHEAD
        if self.size >= self.budget:
            self.spill()

    def spill(self) -> None:
        self.buffer.sort()
        path = self.tmp / f"run-{len(self.files):05d}"
        with open(path, "wb") as file:
            file.write(b"".join(self.buffer))
        self.files.append(path)
        self.buffer = []
        self.size = 0

    def merged(self) -> Iterator[_Record]:
        """Every record, in key-hash order."""
        if not self.files:
            self.buffer.sort()
            records, self.buffer = self.buffer, []
            yield from records
            return
        if self.buffer:
            self.spill()
        files = [open(path, "rb") for path in self.files]  # noqa: SIM115
        try:
            yield from heapq.merge(*map(_read_run, files))
        finally:
            for file in files:
                file.close()


def _read_run(file: BinaryIO, block: int = 1 << 20) -> Iterator[_Record]:
    """The records of a spilled run, read ``block`` bytes at a time."""
    unpack = _LEN.unpack_from
    buf = b""
    at = 0
    while True:
        # A whole record from ``at``: its hash, both lengths and both fields.
        end = -1
        if len(buf) - at >= 36:
            value_at = at + 36 + unpack(buf, at + 32)[0]
            if len(buf) >= value_at + 4:
                end = value_at + 4 + unpack(buf, value_at)[0]
        if 0 <= end <= len(buf):
            yield buf[at:end]
            at = end
            continue
        more = file.read(max(block, end - len(buf)))
        if not more:
            if at != len(buf):
                raise SnapshotError(f"a temporary sort run ({file.name}) is truncated")
            return
        buf = buf[at:] + more
        at = 0


def _at_height(chain: Chain, height: int, runs: _Runs) -> Iterator[_Record]:
    """The scanned records with the keys changed above ``height`` read at ``height``."""
    history = chain.history
    # Read after the scan: every block that committed while it ran is counted.
    changed = history.changed_keys(height, history.head())
    if not changed:
        return runs.merged()
    sha = hashlib.sha256
    overlay = sorted((sha(key).digest(), key, history.value_at(key, height)) for key in changed)
    replaced = {kh for kh, _, _ in overlay}
    kept = (record for record in runs.merged() if record[:32] not in replaced)
    present = [_record(kh, k, v) for kh, k, v in overlay if v is not None]
    return heapq.merge(kept, present)


class _Chunks:
    """Records of one kind gathered into chunks of about ``chunk_bytes`` each."""

    def __init__(self, writer: ChunkWriter, kind: str, chunk_bytes: int) -> None:
        self.writer, self.kind, self.chunk_bytes = writer, kind, chunk_bytes
        self.parts: list[bytes] = []
        self.size = 0
        self.written = 0

    def add(self, part: bytes) -> bool:
        """Add one record (framed); whether that completed a chunk."""
        self.parts.append(part)
        self.size += len(part)
        if self.size < self.chunk_bytes:
            return False
        self.flush()
        return True

    def flush(self) -> int:
        """Write what is gathered as a chunk; the records written so far."""
        if self.parts:
            self.writer.add(self.kind, b"".join(self.parts), len(self.parts))
            self.written += len(self.parts)
            self.parts, self.size = [], 0
        return self.written


def _write_state(
    writer: ChunkWriter,
    records: Iterable[_Record],
    chunk_bytes: int,
    header: BlockHeader,
    verify: bool,
    progress: Progress | None,
    expected: int,
) -> int:
    """Write the state chunks; the number of pairs (``expected``: about how many)."""
    restore = TreeRestore(header.height) if verify else None
    sha = hashlib.sha256
    chunks = _Chunks(writer, STATE, chunk_bytes)
    for record in records:
        # A record past its key hash is the pair as a chunk frames it.
        if chunks.add(record[32:]) and progress is not None:
            progress("writing", chunks.written, max(expected, chunks.written))
        if restore is not None:
            restore.add(record[:32], sha(_value_of(record)).digest())
    total = chunks.flush()
    if restore is not None:
        _, root = restore.finish()
        if root != header.state_root:
            raise SnapshotError(
                f"the store's state at height {header.height} has root {root.hex()}, but block "
                f"{header.height} says {header.state_root.hex()}: the store is damaged or was "
                "written to during the export other than by committing blocks"
            )
    if progress is not None:
        progress("writing", total, total)
    return total


def _write_headers(writer: ChunkWriter, storage: Storage, height: int, chunk_bytes: int) -> int:
    """Write headers 1 to ``height``; their number."""
    chunks = _Chunks(writer, HEADERS, chunk_bytes)
    expected = 1
    headers = (
        storage.scan_range(header_key(1), header_key(height + 1))
        if (storage.capabilities.range_scan)
        else storage.scan(HEADER_PREFIX)
    )
    try:
        for key, raw in headers:
            at = _BE8.unpack(key[len(HEADER_PREFIX) :])[0]
            if at > height:
                break
            if at != expected:
                break
            expected += 1
            chunks.add(frame(raw))
    finally:
        close_scan(headers)
    if chunks.flush() != height:
        raise SnapshotError(f"the store has no header for block {expected}")
    return height


def _write_owners(writer: ChunkWriter, storage: Storage, chunk_bytes: int) -> int:
    """Write the ownership records (as they are now); their number."""
    chunks = _Chunks(writer, OWNERS, chunk_bytes)
    for key, value in storage.scan(OWNER_PREFIX):
        chunks.add(frame(key) + frame(value))
    return chunks.flush()
