from pathlib import Path

from supervm.testing import StorageConformance


class TestLogFileStorage(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"logfile://{workdir}/data.log"
