"""The storage conformance kit against PostgreSQL (SQLite's runs in supervm-sql)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from supervm import open_storage
from supervm.testing import StorageConformance
from supervm_postgres import SQLStorage


@pytest.mark.postgres
class TestPostgresConformance(StorageConformance):
    """Each store is a fresh table on the test server."""

    base_url: str

    @pytest.fixture(autouse=True)
    def _server(self, postgres_url: str) -> None:
        self.base_url = postgres_url

    def storage_url(self, workdir: Path) -> str:
        table = f"t_{uuid.uuid4().hex}"
        url = make_url(self.base_url).update_query_dict({"table": table})
        return url.render_as_string(hide_password=False)

    def cleanup_url(self, url: str) -> None:
        store = open_storage(url)
        assert isinstance(store, SQLStorage)
        store.drop()
