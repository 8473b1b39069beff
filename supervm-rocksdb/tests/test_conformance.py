"""The shared storage conformance kit, run against RocksDB."""

from __future__ import annotations

from pathlib import Path

from supervm.testing import StorageConformance


class TestRocksDBConformance(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"rocksdb://{workdir}/db"
