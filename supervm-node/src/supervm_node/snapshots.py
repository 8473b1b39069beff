"""Snapshots a node serves to followers: exported once per height, the newest few kept.

:class:`SnapshotCache` exports the chain's state with
:func:`supervm.snapshot.export_snapshot` (``verify``: the root is rebuilt from the file
before it is served) into its directory, and answers ``svm_snapshotInfo`` and
``svm_snapshotPart``. Without a height it serves its newest snapshot while that is within
``reuse_blocks`` of the head, so followers starting together share one export.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from supervm.chain import Chain
from supervm.snapshot import export_snapshot
from supervm.storage import Storage

__all__ = ["MAX_PART", "SnapshotCache", "SnapshotFile", "UnknownSnapshot"]

log = logging.getLogger("supervm_node.snapshots")

#: The longest part ``svm_snapshotPart`` answers.
MAX_PART: Final = 1 << 20


class UnknownSnapshot(LookupError):
    """No snapshot with that id is kept (never made, or dropped for a newer one)."""


@dataclass(frozen=True)
class SnapshotFile:
    """An exported snapshot: its file and what ``svm_snapshotInfo`` says of it."""

    id: str
    height: int
    block_hash: bytes
    state_root: bytes
    size: int
    path: Path

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "height": self.height,
            "block_hash": self.block_hash.hex(),
            "state_root": self.state_root.hex(),
            "size": self.size,
            "part_size": MAX_PART,
        }


class SnapshotCache:
    """Snapshots of ``chain`` in ``directory`` (default: a temporary one), ``keep`` kept."""

    def __init__(
        self,
        chain: Chain,
        storage: Storage,
        directory: str | os.PathLike[str] | None = None,
        *,
        keep: int = 2,
        reuse_blocks: int = 100,
    ) -> None:
        self.chain = chain
        self.storage = storage
        self.keep = keep
        self.reuse_blocks = reuse_blocks
        self._own_dir = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="supervm-snapshots-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.snapshot"):
            stale.unlink()  # from an earlier run: exported again when asked
        self._files: dict[str, SnapshotFile] = {}
        self._lock = threading.Lock()  # the files kept
        self._exporting = threading.Lock()  # one export at a time; parts go on meanwhile

    def info(self, height: int | None = None) -> SnapshotFile:
        """The snapshot at ``height`` (default: the head, or the newest one near it),
        exported first unless kept."""
        with self._exporting:
            head = self.chain.head().height
            with self._lock:
                files = list(self._files.values())
            newest = max(files, key=lambda f: f.height, default=None)
            if height is None:
                if newest is not None and head - newest.height <= self.reuse_blocks:
                    return newest
                height = head
            for kept in files:
                if kept.height == height:
                    return kept
            made = self._export(height)
            dropped = []
            with self._lock:
                self._files[made.id] = made
                while len(self._files) > self.keep:
                    oldest = min(self._files.values(), key=lambda f: f.height)
                    dropped.append(self._files.pop(oldest.id))
            for file in dropped:
                file.path.unlink(missing_ok=True)
            return made

    def _export(self, height: int) -> SnapshotFile:
        path = self.directory / f"height-{height}.snapshot"
        manifest = export_snapshot(self.storage, path, height=height, verify=True)
        log.info(
            "snapshot exported",
            extra={"height": height, "bytes": manifest.file_size, "id": manifest.digest.hex()},
        )
        return SnapshotFile(
            manifest.digest.hex(), manifest.height, manifest.block_hash, manifest.state_root,
            path.stat().st_size, path,
        )  # fmt: skip

    def part(self, ident: str, offset: int, length: int) -> str:
        """Base64 of ``length`` bytes (at most :data:`MAX_PART`) at ``offset`` of snapshot
        ``ident`` (fewer at its end)."""
        if length > MAX_PART:
            raise ValueError(f"a part is at most {MAX_PART} bytes, not {length}")
        with self._lock:
            found = self._files.get(ident)
        if found is None:
            raise UnknownSnapshot(f"no snapshot {ident[:16]}... is kept here")
        try:
            with found.path.open("rb") as file:
                file.seek(offset)
                data = file.read(length)
        except FileNotFoundError:
            raise UnknownSnapshot(f"snapshot {ident[:16]}... was dropped for a newer one") from None
        return base64.b64encode(data).decode()

    def close(self) -> None:
        """Delete a temporary directory made for the snapshots."""
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
