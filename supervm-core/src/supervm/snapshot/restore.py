"""Importing a snapshot: every chunk checked, the tree rebuilt, the root compared, then visible.

An import writes, first, a record of itself (``meta/incomplete``): while it is
there the store is not opened as a chain. Each chunk is then written with its
rebuilt tree nodes and the record's progress in one atomic batch, so a rerun
after a crash resumes at the next chunk. The last batch writes the root
record, the head and the pruning horizon (the snapshot's height) and deletes
the record. A file found wrong after writing began (an altered file whose
chunk hashes were recomputed, a root that is not the block's) is refused and
everything written is deleted again, leaving the store empty as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from typing import Any, Final, cast

from supervm.chain import Chain, Head
from supervm.chain.header import ZERO_HASH, BlockFormatError, BlockHeader
from supervm.chain.incomplete import close_scan, empty_store, incomplete_record
from supervm.chunkfile import ChunkInfo, ChunkReader, CorruptFileError, unframe
from supervm.layout import (
    HEIGHT_KEY,
    INCOMPLETE_KEY,
    MARKER,
    OWNER_PREFIX,
    PRUNED_KEY,
    hash_key,
    header_key,
    in_state_tree,
)
from supervm.snapshot.manifest import (
    HEADERS,
    STATE,
    Progress,
    SnapshotError,
    SnapshotManifest,
    open_snapshot,
)
from supervm.state import BatchOp
from supervm.storage import Storage
from supervm.tree import TreeRestore
from supervm.tree.node import TreeError

__all__ = ["OPERATION", "ImportReport", "import_snapshot"]

#: The operation an unfinished import names in the store's ``meta/incomplete`` record.
OPERATION: Final = "snapshot import"
_BE8: Final = struct.Struct(">Q")


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_snapshot` did."""

    manifest: SnapshotManifest
    head: Head
    chunks: int
    #: Chunks a previous, interrupted run had imported already.
    resumed_chunks: int
    keys: int
    seconds: float

    @property
    def resumed(self) -> bool:
        return self.resumed_chunks > 0


@dataclass
class _Progress:
    """The import's progress as the store's record holds it."""

    next_chunk: int = 0
    tree: bytes = b""
    parent: bytes = ZERO_HASH
    headers: int = 0
    keys: int = 0
    owners: int = 0

    def record(self, manifest: SnapshotManifest, source: str) -> bytes:
        return json.dumps({
            "operation": OPERATION, "source": source, "snapshot": manifest.digest.hex(),
            "chain": manifest.chain.hex(), "height": manifest.height,
            "next_chunk": self.next_chunk, "tree": self.tree.hex(), "parent": self.parent.hex(),
            "headers": self.headers, "keys": self.keys, "owners": self.owners,
        }, sort_keys=True).encode()  # fmt: skip

    @classmethod
    def parse(cls, record: dict[str, Any]) -> _Progress:
        try:
            return cls(
                int(record["next_chunk"]), bytes.fromhex(record["tree"]),
                bytes.fromhex(record["parent"]), int(record["headers"]), int(record["keys"]),
                int(record["owners"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise SnapshotError(
                "the store's record of its unfinished import is corrupt: empty the store and "
                "import again"
            ) from None


def import_snapshot(
    path: str | os.PathLike[str],
    storage: Storage,
    *,
    expect_chain: bytes | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the snapshot at ``path`` into ``storage``, which must be empty.

    ``expect_chain`` refuses a snapshot of any chain but the one with that
    identity (:meth:`Chain.identity`). An import interrupted before resumes
    when given the same file. Afterwards the store's chain stands at the
    snapshot's height, which is also its pruning horizon.
    """
    started = time.perf_counter()
    reader, manifest = open_snapshot(path)
    with reader:
        if expect_chain is not None and manifest.chain != expect_chain:
            raise SnapshotError(
                f"{reader.path} is a snapshot of chain {manifest.chain.hex()[:16]}..., not of the "
                f"expected chain {expect_chain.hex()[:16]}..."
            )
        state = _starting_point(storage, manifest)
        if state is None:
            # A run that finished its last batch before it could say so: nothing is left.
            return _report(storage, manifest, len(manifest.chunks), started)
        resumed = state.next_chunk
        # Every chunk's hash first: an altered or truncated file is refused before any write.
        reader.verify(
            None if progress is None else lambda done, _: progress("checking", done, None)
        )
        source = str(reader.path)
        if incomplete_record(storage) is None:
            storage.write_batch([(INCOMPLETE_KEY, state.record(manifest, source))])
        try:
            _import_chunks(reader, manifest, storage, state, source, progress)
        except (CorruptFileError, SnapshotError):
            # The store was empty before this import: make it so again, the record last.
            empty_store(storage)
            storage.delete(INCOMPLETE_KEY)
            raise
    return _report(storage, manifest, resumed, started)


def _report(
    storage: Storage, manifest: SnapshotManifest, resumed: int, started: float
) -> ImportReport:
    chain = Chain(storage, threads=1)
    try:
        head = chain.head()
    finally:
        chain.close()
    return ImportReport(
        manifest, head, len(manifest.chunks), resumed, manifest.keys,
        time.perf_counter() - started,
    )  # fmt: skip


def _starting_point(storage: Storage, manifest: SnapshotManifest) -> _Progress | None:
    """Where the import starts: at the beginning in an empty store, or where it stopped
    (``None``: the store is this snapshot, imported and untouched since)."""
    record = incomplete_record(storage)
    if record is None:
        held = storage.scan(b"")
        first = next(held, None)
        close_scan(held)
        if first is None:
            return _Progress(tree=TreeRestore(manifest.height).state())
        if _is_imported(storage, manifest):
            return None
        raise SnapshotError(
            f"the target store is not empty (it holds key {first[0][:24]!r}...): a snapshot "
            "is imported into an empty store only"
        )
    if record.get("operation") != OPERATION:
        raise SnapshotError(
            f"the target store holds an unfinished {record.get('operation')}, not a snapshot "
            "import: finish that, or empty the store"
        )
    if record.get("snapshot") != manifest.digest.hex():
        raise SnapshotError(
            f"the target store holds an unfinished import of another snapshot (chain "
            f"{str(record.get('chain'))[:16]}..., height {record.get('height')}, from "
            f"{record.get('source')}): resume it with that file, or empty the store"
        )
    return _Progress.parse(record)


def _is_imported(storage: Storage, manifest: SnapshotManifest) -> bool:
    """Whether ``storage`` is what importing ``manifest``'s snapshot made, no block since."""
    height = _BE8.pack(manifest.height)
    if storage.get(HEIGHT_KEY) != height or storage.get(PRUNED_KEY) != height:
        return False
    raw = storage.get(header_key(manifest.height))
    return raw is not None and BlockHeader.decode(raw).hash == manifest.block_hash


def _import_chunks(
    reader: ChunkReader,
    manifest: SnapshotManifest,
    storage: Storage,
    state: _Progress,
    source: str,
    progress: Progress | None,
) -> None:
    try:
        restore = TreeRestore.resume(manifest.height, state.tree)
    except TreeError as exc:
        raise SnapshotError(
            f"the store's record of its unfinished import is corrupt: {exc}"
        ) from None
    total = manifest.keys + manifest.headers + manifest.owners
    for info, raw in reader.iter_chunks(state.next_chunk):
        ops: list[BatchOp] = []
        fields = unframe(raw, f"chunk {info.index}")
        if info.kind == STATE:
            _state_chunk(info, fields, ops, restore)
            state.keys += len(fields) // 2
        elif info.kind == HEADERS:
            _header_chunk(info, fields, ops, state, manifest.height)
        else:
            _owner_chunk(info, fields, ops)
            state.owners += len(fields) // 2
        state.next_chunk = info.index + 1
        state.tree = restore.state()
        ops.append((INCOMPLETE_KEY, state.record(manifest, source)))
        storage.write_batch(ops)
        if progress is not None:
            progress("importing", state.keys + state.headers + state.owners, total)
    nodes, root = restore.finish()
    _check_end(manifest, state, root, storage)
    height = _BE8.pack(manifest.height)
    final: list[BatchOp] = [*nodes, MARKER, (PRUNED_KEY, height), (HEIGHT_KEY, height)]
    final.append((INCOMPLETE_KEY, None))
    storage.write_batch(final)


def _state_chunk(
    info: ChunkInfo, fields: list[bytes | None], ops: list[BatchOp], restore: TreeRestore
) -> None:
    if len(fields) != 2 * info.items:
        raise _bad(info, f"holds {len(fields) // 2} pairs, the manifest says {info.items}")
    keys, values = fields[0::2], fields[1::2]
    if None in keys or None in values or any(not in_state_tree(k) for k in keys):  # type: ignore[arg-type]
        raise _bad(info, "holds a record that is not a state pair")
    pairs = cast("list[tuple[bytes, bytes]]", list(zip(keys, values, strict=True)))
    sha = hashlib.sha256
    leaves = [(sha(key).digest(), sha(value).digest()) for key, value in pairs]
    try:
        nodes = restore.add_many(leaves)
    except TreeError as exc:
        raise _bad(info, f"is not in key-hash order ({exc})") from None
    ops += pairs
    ops += nodes


def _header_chunk(
    info: ChunkInfo, fields: list[bytes | None], ops: list[BatchOp], state: _Progress, height: int
) -> None:
    if len(fields) != info.items:
        raise _bad(info, f"holds {len(fields)} headers, the manifest says {info.items}")
    for raw in fields:
        try:
            header = BlockHeader.decode(raw) if raw is not None else None
        except BlockFormatError as exc:
            raise _bad(info, f"holds a malformed header ({exc})") from None
        if header is None or header.height != state.headers + 1 or header.height > height:
            raise _bad(info, f"holds a header out of sequence after block {state.headers}")
        if header.parent_hash != state.parent:
            raise _bad(info, f"holds block {header.height}, whose parent is not block "
                             f"{state.headers}")  # fmt: skip
        assert raw is not None
        ops.append((header_key(header.height), raw))
        ops.append((hash_key(header.hash), _BE8.pack(header.height)))
        state.parent = header.hash
        state.headers += 1


def _owner_chunk(info: ChunkInfo, fields: list[bytes | None], ops: list[BatchOp]) -> None:
    if len(fields) != 2 * info.items:
        raise _bad(info, f"holds {len(fields) // 2} records, the manifest says {info.items}")
    for i in range(0, len(fields), 2):
        key, owner = fields[i], fields[i + 1]
        if key is None or owner is None or not key.startswith(OWNER_PREFIX) or not owner:
            raise _bad(info, "holds a record that is not an ownership record")
        ops.append((key, owner))


def _check_end(manifest: SnapshotManifest, state: _Progress, root: bytes, storage: Storage) -> None:
    """Refuse the snapshot unless what was imported is what its manifest claims."""
    if state.headers != manifest.height or state.parent != manifest.block_hash:
        raise SnapshotError(
            f"the snapshot's headers do not end in block {manifest.height} with hash "
            f"{manifest.block_hash.hex()}: refused, nothing imported"
        )
    first = storage.get(header_key(1))
    if first is None or BlockHeader.decode(first).hash != manifest.chain:
        raise SnapshotError(
            "the snapshot's first header is not the chain its manifest names: refused, "
            "nothing imported"
        )
    last = storage.get(header_key(manifest.height))
    assert last is not None
    claimed = BlockHeader.decode(last).state_root
    if root != manifest.state_root or root != claimed:
        raise SnapshotError(
            f"the imported state has root {root.hex()}, but block {manifest.height} says "
            f"{claimed.hex()}: refused, nothing imported"
        )


def _bad(info: ChunkInfo, why: str) -> SnapshotError:
    return SnapshotError(
        f"snapshot chunk {info.index} ({info.kind}) {why}: refused, nothing imported"
    )
