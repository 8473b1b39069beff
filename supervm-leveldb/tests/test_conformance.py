"""The shared storage conformance kit, run against LevelDB."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from supervm.testing import FileStorageConformance, StorageConformance
from supervm_leveldb import LevelDBStorage


class TestLevelDBConformance(StorageConformance, FileStorageConformance):
    """Default options: snappy compression, asynchronous writes."""

    def storage_url(self, workdir: Path) -> str:
        return f"leveldb://{quote(str(workdir))}"

    def make_storage(self, workdir: Path, *, create: bool = True) -> LevelDBStorage:
        return LevelDBStorage(workdir, create=create)


class TestLevelDBSyncUncompressedConformance(StorageConformance):
    """``sync=true`` and ``compression=none`` take different driver paths."""

    machine_examples = 15

    def storage_url(self, workdir: Path) -> str:
        return f"leveldb://{quote(str(workdir))}?sync=true&compression=none"

    def make_storage(self, workdir: Path, *, create: bool = True) -> LevelDBStorage:
        return LevelDBStorage(workdir, sync=True, compression="none", create=create)
