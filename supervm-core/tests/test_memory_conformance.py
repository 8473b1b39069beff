"""The shared storage conformance kit, run against the memory store."""

from __future__ import annotations

from pathlib import Path

from supervm.memory import MemoryStorage
from supervm.testing import StorageConformance


class TestMemoryStorage(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return "memory://"

    def make_storage(self, workdir: Path, *, create: bool = True) -> MemoryStorage:
        return MemoryStorage()
