from pathlib import Path

from supervm.testing import FileStorageConformance, StorageConformance
from supervm_logfile import LogFileStorage


class TestLogFileStorage(StorageConformance, FileStorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"logfile://{workdir}/data.log"

    def make_storage(self, workdir: Path, *, create: bool = True) -> LogFileStorage:
        return LogFileStorage(str(workdir / "data.log"), create=create)
