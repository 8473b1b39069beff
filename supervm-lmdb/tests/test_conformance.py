"""The shared storage conformance kit, run against LMDB."""

from __future__ import annotations

from pathlib import Path

from supervm.testing import FileStorageConformance, StorageConformance
from supervm_lmdb import LMDBStorage


class TestLMDBConformance(StorageConformance, FileStorageConformance):
    #: LMDB lets several processes use one environment at once.
    shared_between_processes = True

    def storage_url(self, workdir: Path) -> str:
        return f"lmdb://{workdir}"

    def make_storage(self, workdir: Path, *, create: bool = True) -> LMDBStorage:
        return LMDBStorage(str(workdir), create=create)


class TestLMDBTinyMapConformance(StorageConformance):
    """The same behaviour when nearly every write has to grow the map first."""

    machine_examples = 15

    def storage_url(self, workdir: Path) -> str:
        return f"lmdb://{workdir}?map_size=8192&sync=false"

    def make_storage(self, workdir: Path, *, create: bool = True) -> LMDBStorage:
        return LMDBStorage(str(workdir), map_size=8192, sync=False, create=create)
