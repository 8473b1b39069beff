"""What every part of the conformance kit builds on: the hooks a back end's test fills in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest

from supervm.registry import open_storage
from supervm.storage import Storage

__all__ = ["KitBase", "with_options"]


def with_options(url: str, **options: str) -> str:
    """``url`` with query options set (replacing any of the same name)."""
    base, _, query = url.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in options]
    pairs.extend(options.items())
    return f"{base}?{urlencode(pairs, safe=':/,*-')}" if pairs else base


class KitBase:
    """The hooks of the conformance kit, and the fixtures built on them.

    A back end's test class implements :meth:`storage_url`; a back end that
    keeps state outside the work directory (a database server) also
    implements :meth:`cleanup_url`, and one with a constructor implements
    :meth:`make_storage` with it.
    """

    def storage_url(self, workdir: Path) -> str:
        """URL of a fresh, empty store whose files (if any) live under ``workdir``.

        The kit asks once per work directory (see :meth:`url_for`).
        """
        raise NotImplementedError("subclasses of the conformance kit must define storage_url")

    def cleanup_url(self, url: str) -> None:
        """Remove whatever the store at ``url`` left outside its work directory."""

    def make_storage(self, workdir: Path, *, create: bool = True) -> Storage:
        """The store :meth:`storage_url` names for ``workdir``, built by the back end's constructor.

        ``create=False`` must not create a missing store. By default this
        opens the URL; back ends with a constructor override it to use it.
        """
        return open_storage(self.url_for(workdir), create=create)

    # -- helpers -------------------------------------------------------------

    _kit_urls: dict[Path, str]

    @pytest.fixture(autouse=True)
    def _kit_cleanup(self) -> Iterator[None]:
        self._kit_urls = {}
        yield
        for url in reversed(self._kit_urls.values()):
            self.cleanup_url(url)

    def url_for(self, workdir: Path) -> str:
        """The store URL for ``workdir``, the same for the whole test; cleaned up after it."""
        if workdir not in self._kit_urls:
            self._kit_urls[workdir] = self.storage_url(workdir)
        return self._kit_urls[workdir]

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        """URL of a fresh store (whose work directory is ``tmp_path / "store"``)."""
        return self.url_for(tmp_path / "store")

    @pytest.fixture
    def store(self, url: str) -> Iterator[Storage]:
        """A fresh store, opened by URL and closed after the test."""
        storage = open_storage(url)
        yield storage
        storage.close()

    def reopen(self, store: Storage, url: str) -> Storage:
        """Close ``store`` and open ``url`` again."""
        store.close()
        return open_storage(url)
