"""The storage conformance kit against SQLite, the dialect supervm-sql carries."""

from __future__ import annotations

from pathlib import Path

from supervm.testing import StorageConformance


class TestSQLiteConformance(StorageConformance):
    """Each store is a SQLite file under the test's work directory."""

    def storage_url(self, workdir: Path) -> str:
        return f"sqlite:///{workdir}/kv.db"
