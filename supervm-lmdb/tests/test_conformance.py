"""The shared storage conformance kit, run against LMDB."""

from __future__ import annotations

from pathlib import Path

from supervm.testing import StorageConformance


class TestLMDBConformance(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"lmdb://{workdir}"


class TestLMDBTinyMapConformance(StorageConformance):
    """The same behaviour when nearly every write has to grow the map first."""

    machine_examples = 15

    def storage_url(self, workdir: Path) -> str:
        return f"lmdb://{workdir}?map_size=8192&sync=false"
