from pathlib import Path

from supervm.testing import StorageConformance


class TestMemoryStorage(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return "memory://"
