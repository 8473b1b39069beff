"""The storage conformance kit against MariaDB."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from supervm import open_storage
from supervm.testing import StorageConformance
from supervm_mariadb import MariaDBStorage


@pytest.mark.mariadb
class TestMariaDBConformance(StorageConformance):
    """Each store is a fresh table on the test server, one per work directory."""

    base_url: str

    @pytest.fixture(autouse=True)
    def _server(self, mariadb_url: str) -> None:
        self.base_url = mariadb_url

    def storage_url(self, workdir: Path) -> str:
        table = f"t_{uuid.uuid4().hex}"
        url = make_url(self.base_url).update_query_dict({"table": table})
        return url.render_as_string(hide_password=False)

    def make_storage(self, workdir: Path, *, create: bool = True) -> MariaDBStorage:
        url = make_url(self.url_for(workdir))
        return MariaDBStorage(
            url.database or "",
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            table=str(url.query["table"]),
            create=create,
        )

    def cleanup_url(self, url: str) -> None:
        store = open_storage(url)
        assert isinstance(store, MariaDBStorage)
        store.drop()
