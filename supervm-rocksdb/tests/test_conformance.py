"""The shared storage conformance kit, run against RocksDB."""

from __future__ import annotations

from pathlib import Path

from supervm.testing import FileStorageConformance, StorageConformance
from supervm_rocksdb import RocksDBStorage


class TestRocksDBConformance(StorageConformance, FileStorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"rocksdb://{workdir}/db"

    def make_storage(self, workdir: Path, *, create: bool = True) -> RocksDBStorage:
        return RocksDBStorage(str(workdir / "db"), create=create)
