"""Synthetic snapshot files: a state of many keys without building a chain for it.

A chain of a million keys takes minutes to build through blocks. A snapshot
file of the same state takes seconds to write directly: the pairs sorted by
SHA-256 of the key, the root from :class:`supervm.tree.TreeRestore`, one
header (block 1, parent the zero hash, no transactions, no receipts, that
root) and the manifest fields exactly as ``supervm.snapshot.export`` writes
them. ``import_snapshot`` of that file makes a store whose chain stands at
block 1 with that state, which exports and imports like any other.

Keys are shaped like contract state (``supervm.layout.state_key(contract,
b"bal/" + 20-byte account)``, 45 bytes); values are ``value_bytes`` (100)
pseudo-random bytes (SHAKE-128 of the index: incompressible, so the files
are about as large as the state).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from supervm.chain.block import receipts_root, transactions_root
from supervm.chain.header import ZERO_HASH, BlockHeader
from supervm.chunkfile import ChunkWriter, frame
from supervm.layout import state_key
from supervm.snapshot import FORMAT_VERSION, MAGIC
from supervm.snapshot.export import DEFAULT_CHUNK_BYTES
from supervm.snapshot.manifest import HEADERS, KIND, STATE
from supervm.tree import TreeRestore

__all__ = ["CONTRACT", "Synthetic", "key", "pairs", "value", "write_snapshot"]

#: The contract the synthetic keys belong to.
CONTRACT = hashlib.sha256(b"bench/synthetic/token").digest()[:20]
_sha256 = hashlib.sha256


def key(i: int) -> bytes:
    """The ``i``-th synthetic state key: ``c`` + contract + ``bal/`` + a 20-byte account."""
    return state_key(CONTRACT, b"bal/" + i.to_bytes(20, "big"))


def value(i: int, size: int = 100) -> bytes:
    return hashlib.shake_128(i.to_bytes(8, "big")).digest(size)


def pairs(n: int, value_bytes: int = 100) -> Iterator[tuple[bytes, bytes]]:
    """The ``n`` synthetic pairs in key order (the order a store scans them in)."""
    for i in range(n):
        yield key(i), value(i, value_bytes)


def _hash_order(n: int) -> list[int]:
    """Indices ``0 .. n - 1`` in ascending SHA-256 of their keys.

    Sorted as ints (the hash's first 16 bytes above the index) rather than as
    (hash, index) tuples: a third of the memory. Two keys sharing 16 bytes of
    hash would come out in index order; TreeRestore refuses any order that is
    not strictly ascending, so that could not pass unnoticed.
    """
    bits = max(1, n.bit_length())
    order = [int.from_bytes(_sha256(key(i)).digest()[:16], "big") << bits | i for i in range(n)]
    order.sort()
    mask = (1 << bits) - 1
    return [x & mask for x in order]


@dataclass(frozen=True)
class Synthetic:
    """A synthetic snapshot file and what it holds."""

    path: Path
    keys: int
    state_root: bytes
    block_hash: bytes
    #: Bytes of keys plus values.
    state_bytes: int
    file_size: int


def write_snapshot(
    path: str | os.PathLike[str],
    n: int,
    *,
    value_bytes: int = 100,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    timestamp: int = 1,
) -> Synthetic:
    """Write a snapshot of ``n`` synthetic pairs at block 1 to ``path``."""
    path = Path(path)
    restore = TreeRestore(1)
    sha = _sha256
    parts: list[bytes] = []
    size = count = state_bytes = 0
    with ChunkWriter(path, MAGIC) as writer:
        leaves: list[tuple[bytes, bytes]] = []
        for i in _hash_order(n):
            k, v = key(i), value(i, value_bytes)
            part = frame(k) + frame(v)
            parts.append(part)
            size += len(part)
            state_bytes += len(k) + len(v)
            count += 1
            leaves.append((sha(k).digest(), sha(v).digest()))
            if size >= chunk_bytes:
                writer.add(STATE, b"".join(parts), count)
                restore.add_many(leaves)  # the node writes are not kept: only the root is
                parts, leaves, size, count = [], [], 0, 0
        if count:
            writer.add(STATE, b"".join(parts), count)
            restore.add_many(leaves)
        _, root = restore.finish()
        header = BlockHeader(1, ZERO_HASH, timestamp, transactions_root(()), root,
                             receipts_root(()))  # fmt: skip
        writer.add(HEADERS, frame(header.encode()), 1)
        writer.finish({
            "format": FORMAT_VERSION, "kind": KIND, "chain": header.hash.hex(), "height": 1,
            "block_hash": header.hash.hex(), "state_root": root.hex(), "keys": n, "headers": 1,
            "owners": 0, "chunk_bytes": chunk_bytes,
        })  # fmt: skip
    return Synthetic(path, n, root, header.hash, state_bytes, path.stat().st_size)
