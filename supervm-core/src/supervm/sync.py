"""Incremental sync: the blocks between two heights in one file, and applying them elsewhere.

:func:`export_blocks` writes blocks ``H1 + 1 .. H2`` of a chain: each block's
header, transactions and write set (read from the history), in hashed
zstandard chunks with a manifest (:mod:`supervm.chunkfile`). :func:`apply_blocks`
applies such a file to a store standing at ``H1``: each block must extend the
store's head (its parent hash), its transactions must match its header, and
the state root after its write set must be the header's; with ``reexecute``
the transactions are run instead and must give the same write set and header.
Each block commits atomically, so a refused block or a crash leaves the store
at the last good block, and a rerun skips the blocks it already holds.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from supervm.chain import Block, Chain, ChainError, Head
from supervm.chain.block import Transaction, decode_transactions, encode_transactions
from supervm.chain.header import ZERO_HASH, BlockFormatError, BlockHeader
from supervm.chain.history import change_key, decode_keys
from supervm.chunkfile import (
    ChunkReader,
    ChunkWriter,
    CorruptFileError,
    Progress,
    frame,
    frame_none,
    unframe,
)
from supervm.errors import SuperVMError
from supervm.state import WriteSet
from supervm.storage import Storage

__all__ = [
    "MAGIC",
    "BlockFileManifest",
    "SyncError",
    "SyncReport",
    "apply_blocks",
    "block_write_set",
    "export_blocks",
    "read_block_manifest",
]

#: The first 8 bytes of a block file.
MAGIC: Final = b"SVMBLKS\x01"
FORMAT_VERSION: Final = 1
KIND: Final = "supervm-blocks"
BLOCKS: Final = "blocks"
#: Uncompressed bytes per chunk, by default (a larger block gets a chunk of its own).
DEFAULT_CHUNK_BYTES: Final = 4 << 20
_BE4: Final = struct.Struct(">I")


class SyncError(SuperVMError):
    """Blocks that do not apply to the store: a gap, a fork, another chain or a wrong root."""


@dataclass(frozen=True)
class BlockFileManifest:
    """What a block file holds: blocks ``from_height + 1 .. to_height`` of a chain."""

    chain: bytes
    from_height: int
    #: Hash of the block at ``from_height`` (the first block's parent; zeros for 0).
    from_hash: bytes
    to_height: int
    to_hash: bytes
    blocks: int
    #: Keys the blocks' write sets change, counted once per block.
    keys: int
    chunks: int
    digest: bytes
    file_size: int

    def describe(self) -> dict[str, Any]:
        return {
            "chain": self.chain.hex(), "from": self.from_height, "from_hash": self.from_hash.hex(),
            "to": self.to_height, "to_hash": self.to_hash.hex(), "blocks": self.blocks,
            "keys": self.keys, "chunks": self.chunks, "digest": self.digest.hex(),
            "file_size": self.file_size,
        }  # fmt: skip


@dataclass(frozen=True)
class SyncReport:
    """What :func:`apply_blocks` did."""

    manifest: BlockFileManifest
    head: Head
    applied: int
    #: Blocks the store held already (an earlier, interrupted run applied them).
    skipped: int
    keys: int
    reexecuted: bool
    seconds: float


@dataclass(frozen=True)
class _Record:
    header: BlockHeader
    transactions: tuple[Transaction, ...]
    write_set: WriteSet


def export_blocks(
    storage: Storage,
    out: str | os.PathLike[str],
    *,
    from_height: int,
    to_height: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
) -> BlockFileManifest:
    """Write blocks ``from_height + 1 .. to_height`` (default: the head) of ``storage``'s
    chain to ``out``; the store must keep the history of those heights."""
    chain = Chain(storage, threads=1)
    try:
        head = chain.head()
        to_height = head.height if to_height is None else to_height
        for name, value in (("from", from_height), ("to", to_height)):
            if type(value) is not int or value < 0:
                raise ValueError(f"the {name} height must be an int >= 0, not {value!r}")
        if not from_height < to_height <= head.height:
            raise SyncError(
                f"blocks {from_height + 1} to {to_height} are not in this chain, which stands at "
                f"height {head.height} (need from < to <= head)"
            )
        chain.history.check_height(from_height, head.height)
        from_hash = _hash_at(chain, from_height)
        keys = 0
        with ChunkWriter(out, MAGIC) as writer:
            parts: list[bytes] = []
            size = count = 0
            for height in range(from_height + 1, to_height + 1):
                part, changed = _block_record(chain, height)
                parts.append(part)
                size += len(part)
                count += 1
                keys += changed
                if size >= chunk_bytes:
                    writer.add(BLOCKS, b"".join(parts), count)
                    parts, size, count = [], 0, 0
                if progress is not None:
                    progress("exporting", height - from_height, to_height - from_height)
            if parts:
                writer.add(BLOCKS, b"".join(parts), count)
            chain.history.check_height(from_height, chain.head().height)
            writer.finish({
                "format": FORMAT_VERSION, "kind": KIND, "chain": chain.identity().hex(),
                "from": from_height, "from_hash": from_hash.hex(), "to": to_height,
                "to_hash": _hash_at(chain, to_height).hex(), "blocks": to_height - from_height,
                "keys": keys,
            })  # fmt: skip
    finally:
        chain.close()
    return read_block_manifest(out)


def _hash_at(chain: Chain, height: int) -> bytes:
    if height == 0:
        return ZERO_HASH
    header = chain.header(height)
    if header is None:
        raise SyncError(f"the store has no header for block {height}")
    return header.hash


def _block_record(chain: Chain, height: int) -> tuple[bytes, int]:
    """Block ``height`` as a file record (header, body, write set), and its key count."""
    header = chain.header(height)
    block = chain.block(height)
    if header is None or block is None:
        raise SyncError(f"the store has no block {height}")
    write_set = block_write_set(chain, height)
    fields = [frame(header.encode()), frame(encode_transactions(block.transactions))]
    fields.append(frame(_BE4.pack(len(write_set))))
    for key, value in write_set:
        fields.append(frame(key))
        fields.append(frame_none() if value is None else frame(value))
    return b"".join(fields), len(write_set)


def block_write_set(chain: Chain, height: int) -> WriteSet:
    """The write set of the committed block at ``height``, read from the history (the
    store must keep that height's history)."""
    record = chain.storage.get(change_key(height))
    keys = decode_keys(record) if record else []
    history = chain.history
    return tuple((key, history.value_at(key, height)) for key in keys)


def read_block_manifest(path: str | os.PathLike[str]) -> BlockFileManifest:
    """The checked manifest of the block file at ``path``."""
    with ChunkReader(path, MAGIC, "block") as reader:
        return _manifest(reader)


def _manifest(reader: ChunkReader) -> BlockFileManifest:
    body = reader.manifest

    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(f"{reader.path} is not a valid block file: {why}")

    if body.get("kind") != KIND or body.get("format") != FORMAT_VERSION:
        raise bad(f"its manifest is of kind {body.get('kind')!r}, format {body.get('format')!r}")
    try:
        fields = [bytes.fromhex(body[name]) for name in ("chain", "from_hash", "to_hash")]
        numbers = [body[name] for name in ("from", "to", "blocks", "keys")]
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"its manifest is malformed ({exc})") from None
    if any(len(value) != 32 for value in fields) or any(
        type(n) is not int or n < 0 for n in numbers
    ):
        raise bad("its manifest is malformed")
    chain, from_hash, to_hash = fields
    first, last, blocks, keys = numbers
    if last - first != blocks or blocks < 1:
        raise bad("its manifest's heights and block count disagree")
    if (
        any(c.kind != BLOCKS for c in reader.chunks)
        or sum(c.items for c in reader.chunks) != blocks
    ):
        raise bad("its chunks do not hold the blocks its manifest lists")
    return BlockFileManifest(
        chain, first, from_hash, last, to_hash, blocks, keys, len(reader.chunks),
        reader.manifest_hash, reader.size,
    )  # fmt: skip


def _records(reader: ChunkReader) -> Iterator[_Record]:
    """The file's blocks, in order, each chunk checked as it is read."""
    for info, raw in reader.iter_chunks():
        fields = unframe(raw, f"chunk {info.index}")
        at, found = 0, 0
        try:
            while at < len(fields):
                header_raw, body, count_raw = fields[at : at + 3]
                if header_raw is None or body is None or count_raw is None or len(count_raw) != 4:
                    raise BlockFormatError("a block record is malformed")
                (count,) = _BE4.unpack(count_raw)
                ops = fields[at + 3 : at + 3 + 2 * count]
                if len(ops) != 2 * count:
                    raise BlockFormatError("a block record's write set is truncated")
                write_set = []
                for i in range(0, len(ops), 2):
                    key = ops[i]
                    if key is None:
                        raise BlockFormatError("a write set names no key")
                    write_set.append((key, ops[i + 1]))
                at += 3 + 2 * count
                found += 1
                yield _Record(
                    BlockHeader.decode(header_raw), decode_transactions(body), tuple(write_set)
                )
        except (BlockFormatError, ValueError) as exc:
            raise CorruptFileError(
                f"{reader.path} is not a valid block file: chunk {info.index}: {exc}"
            ) from None
        if found != info.items:
            raise CorruptFileError(
                f"{reader.path} is not a valid block file: chunk {info.index} holds {found} "
                f"blocks, the manifest says {info.items}"
            )


def apply_blocks(
    path: str | os.PathLike[str],
    storage: Storage,
    *,
    reexecute: bool = False,
    mode: str = "parallel",
    threads: int = 2,
    progress: Progress | None = None,
) -> SyncReport:
    """Apply the block file at ``path`` to ``storage``'s chain, block by block.

    The store must stand at the file's first parent or above it on the same
    chain (blocks it holds already are checked and skipped). A gap, a fork,
    another chain's file or a block whose root does not match is refused with
    :class:`SyncError`; the blocks before it stay applied.
    """
    started = time.perf_counter()
    path = Path(path)
    with ChunkReader(path, MAGIC, "block") as reader:
        manifest = _manifest(reader)
        reader.verify()
        chain = Chain(storage, threads=threads)
        try:
            applied, skipped, keys = _apply(chain, reader, manifest, reexecute, mode, progress)
            head = chain.head()
        finally:
            chain.close()
    return SyncReport(
        manifest, head, applied, skipped, keys, reexecute, time.perf_counter() - started
    )


def _apply(
    chain: Chain,
    reader: ChunkReader,
    manifest: BlockFileManifest,
    reexecute: bool,
    mode: str,
    progress: Progress | None,
) -> tuple[int, int, int]:
    head = chain.head()
    if head.height and chain.identity() != manifest.chain:
        raise SyncError(
            f"{reader.path} holds blocks of chain {manifest.chain.hex()[:16]}..., but the store's "
            f"chain is {chain.identity().hex()[:16]}...: nothing applied"
        )
    if head.height < manifest.from_height:
        raise SyncError(
            f"the store stands at height {head.height}, but {reader.path} starts after block "
            f"{manifest.from_height}: blocks {head.height + 1} to {manifest.from_height} are "
            "missing (a gap); nothing applied"
        )
    if _hash_at(chain, manifest.from_height) != manifest.from_hash:
        raise SyncError(
            f"the store's block {manifest.from_height} is not the parent of {reader.path}'s first "
            "block (a fork): nothing applied"
        )
    applied = skipped = keys = 0
    for record in _records(reader):
        header = record.header
        height = header.height
        if height <= head.height:
            stored = chain.header(height)
            if stored is None or stored.hash != header.hash:
                raise SyncError(
                    f"the store's block {height} differs from the file's (a fork): nothing "
                    f"applied; the store stands at block {head.height}"
                )
            skipped += 1
            continue
        try:
            if reexecute:
                _reexecute(chain, record, mode)
            else:
                chain.import_block(header, record.transactions, record.write_set)
        except ChainError as exc:
            raise SyncError(
                f"block {height} refused: {exc}; the store stands at block {height - 1}, the "
                "last good block"
            ) from None
        applied += 1
        keys += len(record.write_set)
        if progress is not None:
            progress("applying", applied + skipped, manifest.blocks)
    return applied, skipped, keys


def _reexecute(chain: Chain, record: _Record, mode: str) -> None:
    """Run the block's transactions and commit them if they give the file's block."""
    header = record.header
    result = chain.execute(Block(header.height, header.timestamp, record.transactions), mode=mode)
    if result.write_set != record.write_set:
        ours = dict(result.write_set)
        theirs = dict(record.write_set)
        differs = sorted(
            k for k in ours.keys() | theirs.keys() if ours.get(k, b"") != theirs.get(k, b"")
        )
        first = f", the first {differs[0][:40]!r}" if differs else ""
        raise ChainError(
            f"re-executing it gives another write set than the file's ({len(differs)} keys "
            f"differ{first})"
        )
    if result.header.hash != header.hash:
        raise ChainError(
            f"re-executing it gives header {result.header.hash.hex()[:16]}..., the file says "
            f"{header.hash.hex()[:16]}... (receipts root {result.header.receipts_root.hex()[:16]}"
            f"... vs {header.receipts_root.hex()[:16]}...)"
        )
    chain.commit(result)
