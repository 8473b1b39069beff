"""The snapshot file's manifest: what a snapshot claims, checked before it is believed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from supervm.chunkfile import ChunkInfo, ChunkReader, CorruptFileError, Progress
from supervm.errors import SuperVMError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Progress",
    "SnapshotError",
    "SnapshotManifest",
    "open_snapshot",
    "read_manifest",
]

#: The first 8 bytes of a snapshot file.
MAGIC: Final = b"SVMSNAP\x01"
#: The manifest's format version this SuperVM writes and reads.
FORMAT_VERSION: Final = 1
KIND: Final = "supervm-snapshot"
#: Chunk kinds, in the order they appear in a file.
STATE, HEADERS, OWNERS = "state", "headers", "owners"
_ORDER: Final = {STATE: 0, HEADERS: 1, OWNERS: 2}


class SnapshotError(SuperVMError):
    """A snapshot that cannot be made or imported: refused, and nothing changed."""


@dataclass(frozen=True)
class SnapshotManifest:
    """A snapshot's manifest: the chain, height, block and root it claims, and its chunks."""

    format: int
    #: The chain's identity: the hash of its first block.
    chain: bytes
    height: int
    block_hash: bytes
    state_root: bytes
    #: State pairs (the pairs under the root).
    keys: int
    #: Block headers 1 to ``height``.
    headers: int
    #: Ownership records (outside the state root).
    owners: int
    chunk_bytes: int
    chunks: tuple[ChunkInfo, ...]
    #: SHA-256 of the encoded manifest: the snapshot's identity.
    digest: bytes
    #: Bytes of the whole file.
    file_size: int = 0

    @classmethod
    def from_reader(cls, reader: ChunkReader) -> SnapshotManifest:
        """The manifest of ``reader``'s file, checked for shape and consistency."""
        body = reader.manifest

        def bad(why: str) -> CorruptFileError:
            return CorruptFileError(f"{reader.path} is not a valid snapshot file: {why}")

        if body.get("kind") != KIND:
            raise bad(f"its manifest is of kind {body.get('kind')!r}, not {KIND!r}")
        if body.get("format") != FORMAT_VERSION:
            raise bad(
                f"it has manifest format {body.get('format')!r}; this SuperVM reads "
                f"format {FORMAT_VERSION}"
            )
        try:
            fields: dict[str, Any] = {
                "chain": _hash(body["chain"]),
                "height": _count(body["height"]),
                "block_hash": _hash(body["block_hash"]),
                "state_root": _hash(body["state_root"]),
                "keys": _count(body["keys"]),
                "headers": _count(body["headers"]),
                "owners": _count(body["owners"]),
                "chunk_bytes": _count(body["chunk_bytes"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"its manifest is malformed ({exc})") from None
        chunks = tuple(reader.chunks)
        rank = -1
        totals = {STATE: 0, HEADERS: 0, OWNERS: 0}
        for info in chunks:
            order = _ORDER.get(info.kind)
            if order is None:
                raise bad(f"chunk {info.index} is of unknown kind {info.kind!r}")
            if order < rank:
                raise bad(f"chunk {info.index} ({info.kind}) is out of place")
            rank = order
            totals[info.kind] += info.items
        if fields["height"] < 1 or fields["headers"] != fields["height"]:
            raise bad("its manifest's height and header count disagree")
        for kind, name in ((STATE, "keys"), (HEADERS, "headers"), (OWNERS, "owners")):
            if totals[kind] != fields[name]:
                raise bad(f"its chunks hold {totals[kind]} {kind} records, the manifest says "
                          f"{fields[name]}")  # fmt: skip
        return cls(
            format=FORMAT_VERSION, chunks=chunks, digest=reader.manifest_hash,
            file_size=reader.size, **fields,
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The manifest as JSON-ready values (what ``supervm snapshot info --json`` prints)."""
        return {
            "format": self.format,
            "chain": self.chain.hex(),
            "height": self.height,
            "block_hash": self.block_hash.hex(),
            "state_root": self.state_root.hex(),
            "keys": self.keys,
            "headers": self.headers,
            "owners": self.owners,
            "chunk_bytes": self.chunk_bytes,
            "chunks": len(self.chunks),
            "snapshot": self.digest.hex(),
            "file_size": self.file_size,
        }


def open_snapshot(path: str | os.PathLike[str]) -> tuple[ChunkReader, SnapshotManifest]:
    """Open a snapshot file: its reader and its checked manifest."""
    reader = ChunkReader(path, MAGIC, "snapshot")
    try:
        return reader, SnapshotManifest.from_reader(reader)
    except BaseException:
        reader.close()
        raise


def read_manifest(path: str | os.PathLike[str]) -> SnapshotManifest:
    """The checked manifest of the snapshot file at ``path`` (chunks are not read)."""
    reader, manifest = open_snapshot(path)
    reader.close()
    return manifest


def _hash(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("a hash is a hex string")
    value = bytes.fromhex(text)
    if len(value) != 32:
        raise ValueError("a hash is 32 bytes")
    return value


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value
