"""Files of hashed, zstandard-compressed chunks with a manifest: snapshots and block files.

A file is its magic (8 bytes, naming what it holds), then its chunks, then a
manifest and a footer::

    magic | chunk 0 | chunk 1 | ... | manifest (JSON) | footer

Each chunk is its compressed length (4 bytes, big-endian) and a zstandard
frame. The manifest lists every chunk in order with the SHA-256 of its
compressed bytes, its sizes and its kind, besides what the file's writer puts
there. The footer is the manifest's offset and length (8 bytes each), its
SHA-256 and the magic again, so a reader finds the manifest from the end and
a truncated file is told apart from a whole one.

A :class:`ChunkReader` checks the footer, the manifest's hash and the chunk
sizes when it opens a file, and each chunk's hash before it decompresses it,
into a buffer no larger than the manifest says; :meth:`ChunkReader.verify`
checks every chunk without decompressing. A :class:`ChunkWriter` writes to
``FILE.partial`` and renames it when the manifest is written, so a file under
its final name is always whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Self

import zstandard

from supervm.errors import SuperVMError

__all__ = [
    "ChunkInfo",
    "ChunkReader",
    "ChunkWriter",
    "CorruptFileError",
    "Progress",
    "frame",
    "frame_none",
    "unframe",
]

_FOOTER: Final = struct.Struct(">QQ32s8s")
_LENGTH: Final = struct.Struct(">I")
#: Longest manifest a reader accepts (a file of some million chunks).
MAX_MANIFEST: Final = 256 << 20
#: Largest chunk, compressed or not, a reader accepts.
MAX_CHUNK: Final = 1 << 30


#: ``progress(stage, done, total)``: ``done`` of ``total`` (``None``: unknown) at ``stage``.
Progress = Callable[[str, int, int | None], None]


class CorruptFileError(SuperVMError, ValueError):
    """A file that is not whole, not of the expected kind, or altered."""


_NONE: Final = 0xFFFFFFFF
_NONE_FRAME: Final = _LENGTH.pack(_NONE)


def frame(data: bytes) -> bytes:
    """``data`` as a record field in a chunk: its length (4 bytes) and the bytes."""
    return _LENGTH.pack(len(data)) + data


def frame_none() -> bytes:
    """The field that stands for no value (a deleted key)."""
    return _NONE_FRAME


def unframe(data: bytes, what: str = "chunk") -> list[bytes | None]:
    """The fields of a chunk written with :func:`frame` and :func:`frame_none`."""
    fields: list[bytes | None] = []
    append = fields.append
    unpack = _LENGTH.unpack_from
    at, end = 0, len(data)
    while at < end:
        if at + 4 > end:
            raise CorruptFileError(f"a {what} ends inside a field's length")
        (size,) = unpack(data, at)
        at += 4
        if size == _NONE:
            append(None)
            continue
        stop = at + size
        if stop > end:
            raise CorruptFileError(f"a {what} ends inside a field")
        append(data[at:stop])
        at = stop
    return fields


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk as the manifest lists it."""

    index: int
    kind: str
    #: SHA-256 of the compressed bytes.
    hash: bytes
    #: Compressed bytes.
    size: int
    #: Bytes after decompression.
    raw_size: int
    #: Records in the chunk (what they are is up to the writer).
    items: int
    #: Offset of the chunk's length prefix in the file.
    offset: int

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hash": self.hash.hex(),
            "size": self.size,
            "raw_size": self.raw_size,
            "items": self.items,
        }


class ChunkWriter:
    """Writes a chunk file to ``path``: chunks as they come, the manifest at the end."""

    def __init__(self, path: str | os.PathLike[str], magic: bytes, *, level: int = 3) -> None:
        if len(magic) != 8:
            raise ValueError("a chunk file's magic is 8 bytes")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.magic = magic
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._file: BinaryIO = open(self.partial, "wb")  # noqa: SIM115 - closed by finish/abort
        self._file.write(magic)
        self._offset = len(magic)
        self.chunks: list[ChunkInfo] = []
        self.bytes_written = len(magic)
        self.raw_bytes = 0

    def add(self, kind: str, raw: bytes, items: int) -> ChunkInfo:
        """Compress ``raw`` and append it as the next chunk of ``kind``."""
        data = self._compressor.compress(raw)
        info = ChunkInfo(
            len(self.chunks), kind, hashlib.sha256(data).digest(), len(data), len(raw), items,
            self._offset,
        )  # fmt: skip
        self._file.write(_LENGTH.pack(len(data)))
        self._file.write(data)
        self._offset += _LENGTH.size + len(data)
        self.bytes_written = self._offset
        self.raw_bytes += len(raw)
        self.chunks.append(info)
        return info

    def finish(self, manifest: dict[str, Any]) -> bytes:
        """Write the manifest (``manifest`` plus the chunk list) and the footer, sync, and
        rename the file into place; returns the manifest's SHA-256."""
        body = dict(manifest)
        body["chunks"] = [chunk.describe() for chunk in self.chunks]
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(encoded).digest()
        self._file.write(encoded)
        self._file.write(_FOOTER.pack(self._offset, len(encoded), digest, self.magic))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        self.bytes_written = self._offset + len(encoded) + _FOOTER.size
        return digest

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        if not self._file.closed:
            self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._file.closed:
            self.abort()


class ChunkReader:
    """A chunk file opened for reading: its manifest checked, its chunks read on demand."""

    def __init__(self, path: str | os.PathLike[str], magic: bytes, what: str) -> None:
        self.path = Path(path)
        self.what = what
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such {what} file: {self.path}") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{self.path} is a directory, not a {what} file") from None
        try:
            self._open(magic)
        except BaseException:
            self._file.close()
            raise

    def _corrupt(self, why: str) -> CorruptFileError:
        return CorruptFileError(f"{self.path} is not a valid {self.what} file: {why}")

    def _open(self, magic: bytes) -> None:
        size = os.fstat(self._file.fileno()).st_size
        self.size = size
        head = self._file.read(len(magic))
        if head != magic:
            raise self._corrupt(f"it does not start with the {self.what} file magic")
        if size < len(magic) + _FOOTER.size:
            raise self._corrupt(f"it is truncated ({size} bytes)")
        self._file.seek(size - _FOOTER.size)
        offset, length, digest, tail = _FOOTER.unpack(self._file.read(_FOOTER.size))
        if tail != magic:
            raise self._corrupt("its footer is missing (the file is truncated or altered)")
        if length > MAX_MANIFEST or offset + length + _FOOTER.size != size or offset < len(magic):
            raise self._corrupt("its footer does not match the file's length")
        self._file.seek(offset)
        encoded = self._file.read(length)
        if hashlib.sha256(encoded).digest() != digest:
            raise self._corrupt("its manifest does not match the manifest's hash")
        try:
            manifest = json.loads(encoded)
        except ValueError:
            raise self._corrupt("its manifest is not JSON") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("chunks"), list):
            raise self._corrupt("its manifest lists no chunks")
        self.manifest: dict[str, Any] = manifest
        self.manifest_hash: bytes = digest
        self.chunks = self._chunk_list(manifest["chunks"], len(magic), offset)

    def _chunk_list(self, listed: list[Any], start: int, end: int) -> list[ChunkInfo]:
        chunks = []
        at = start
        for index, entry in enumerate(listed):
            try:
                kind, digest = entry["kind"], bytes.fromhex(entry["hash"])
                size, raw, items = entry["size"], entry["raw_size"], entry["items"]
            except (TypeError, KeyError, ValueError):
                raise self._corrupt(
                    f"the manifest's entry for chunk {index} is malformed"
                ) from None
            numbers = (size, raw, items)
            if (
                not isinstance(kind, str)
                or len(digest) != 32
                or any(type(n) is not int or n < 0 for n in numbers)
                or size > MAX_CHUNK
                or raw > MAX_CHUNK
            ):
                raise self._corrupt(f"the manifest's entry for chunk {index} is malformed")
            chunks.append(ChunkInfo(index, kind, digest, size, raw, items, at))
            at += _LENGTH.size + size
        if at != end:
            raise self._corrupt(
                f"its chunks take {at - start} bytes but the manifest starts {end - start} "
                "bytes after the magic"
            )
        return chunks

    def _read_chunk(self, info: ChunkInfo) -> bytes:
        """The compressed bytes of chunk ``info``, checked against the manifest."""
        self._file.seek(info.offset)
        prefix = self._file.read(_LENGTH.size)
        if len(prefix) != _LENGTH.size or _LENGTH.unpack(prefix)[0] != info.size:
            raise self._corrupt(f"chunk {info.index}'s length does not match the manifest")
        data = self._file.read(info.size)
        if len(data) != info.size or hashlib.sha256(data).digest() != info.hash:
            raise self._corrupt(
                f"chunk {info.index} ({info.kind}) does not match its hash in the manifest "
                "(altered, truncated or out of order)"
            )
        return data

    def verify(self, progress: Callable[[int, int | None], None] | None = None) -> None:
        """Check every chunk's length and hash (nothing is decompressed)."""
        done = 0
        for info in self.chunks:
            self._read_chunk(info)
            done += info.items
            if progress is not None:
                progress(done, None)

    def read(self, info: ChunkInfo) -> bytes:
        """Chunk ``info`` decompressed, after its hash is checked."""
        data = self._read_chunk(info)
        try:
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=info.raw_size)
        except zstandard.ZstdError as exc:
            raise self._corrupt(f"chunk {info.index} does not decompress: {exc}") from None
        if len(raw) != info.raw_size:
            raise self._corrupt(f"chunk {info.index} decompresses to another size than listed")
        return raw

    def iter_chunks(self, start: int = 0) -> Iterator[tuple[ChunkInfo, bytes]]:
        """Chunks from index ``start`` on, each checked and decompressed."""
        for info in self.chunks[start:]:
            yield info, self.read(info)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
