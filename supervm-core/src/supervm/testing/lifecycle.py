"""Conformance kit, lifecycle: opening (by URL and by constructor), closing, persistence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from supervm.errors import InvalidURLError, StorageClosedError, StoreNotFoundError
from supervm.registry import available_backends, load_backend, open_storage
from supervm.storage import Capabilities, Storage
from supervm.testing.base import KitBase, with_options
from supervm.url import parse_url

__all__ = ["LifecycleConformance"]


class LifecycleConformance(KitBase):
    """Opening, ``create=False``, options, closing, and what survives a reopen."""

    def capabilities_of(self, url: str) -> Capabilities:
        """The capabilities the back end serving ``url`` declares (without opening it)."""
        return load_backend(parse_url(url).scheme).capabilities

    def test_open_storage_finds_the_back_end(self, store: Storage, url: str) -> None:
        scheme = parse_url(url).scheme
        backend = load_backend(scheme)
        assert isinstance(store, backend)
        assert scheme in available_backends() or scheme.split("+")[0] in available_backends()
        assert backend.schemes and backend.url_form

    def test_unknown_option_is_refused(self, url: str) -> None:
        with pytest.raises(InvalidURLError, match="no_such_option"):
            open_storage(with_options(url, no_such_option="1"))

    def test_closed_store_refuses_operations(self, store: Storage) -> None:
        store.set(b"k", b"v")
        caps = store.capabilities
        store.close()
        assert store.closed
        calls: list[Callable[[], object]] = [
            lambda: store.get(b"k"),
            lambda: store.set(b"k", b"v"),
            lambda: store.delete(b"k"),
            lambda: list(store.scan()),
            lambda: store.write_batch([(b"k", b"v")]),
            lambda: store.batch(),
        ]
        if caps.range_scan:
            calls.append(lambda: list(store.scan_range(b"a", b"z")))
            calls.append(lambda: list(store.scan_range(b"z", b"a")))
        if caps.snapshots:
            calls.append(lambda: store.snapshot())
        for call in calls:
            with pytest.raises(StorageClosedError):
                call()
        store.close()  # a second close is harmless

    def test_batch_made_before_close_cannot_commit(self, store: Storage, url: str) -> None:
        batch = store.batch()
        batch.set(b"k", b"v")
        store.close()
        with pytest.raises(StorageClosedError):
            batch.commit()
        with open_storage(url) as again:
            assert again.get(b"k") is None

    def test_context_manager_closes(self, url: str) -> None:
        with open_storage(url) as store:
            store.set(b"k", b"v")
        assert store.closed

    def test_separate_stores_are_isolated(self, store: Storage, tmp_path: Path) -> None:
        with open_storage(self.url_for(tmp_path / "other")) as other:
            other.set(b"k", b"other")
            store.set(b"k", b"mine")
            assert other.get(b"k") == b"other"
            assert list(other.scan()) == [(b"k", b"other")]
        assert store.get(b"k") == b"mine"

    def test_data_survives_reopen(self, store: Storage, url: str) -> None:
        """Persistent: every kind of write survives a reopen. Else: a new open is empty."""
        store.set(b"a", b"1")
        store.set(b"e", b"")
        store.write_batch([(b"w", b""), (b"x", b"x")])
        with store.batch() as b:
            b.set(b"b", b"2")
            b.delete(b"a")
            b.delete(b"x")
        persistent = store.capabilities.persistent
        reopened = self.reopen(store, url)
        try:
            if persistent:
                assert list(reopened.scan()) == [(b"b", b"2"), (b"e", b""), (b"w", b"")]
                assert reopened.get(b"e") == b""
                assert reopened.get(b"a") is None
            else:
                assert list(reopened.scan()) == []
        finally:
            reopened.close()

    def test_sync_option(self, url: str) -> None:
        """Declared sync writes: ``sync=true`` works for every kind of write. Else: refused."""
        caps = self.capabilities_of(url)
        if not caps.sync_writes:
            with pytest.raises(InvalidURLError):
                open_storage(with_options(url, sync="true"))
            return
        expected = [(b"batch", b"4"), (b"empty", b""), (b"set", b"3")]
        with open_storage(with_options(url, sync="true")) as store:
            store.set(b"set", b"1")
            store.set(b"gone", b"x")
            store.delete(b"gone")
            store.write_batch([(b"wb", b"2"), (b"empty", b""), (b"set", None), (b"set", b"3")])
            with store.batch() as b:
                b.set(b"batch", b"4")
                b.delete(b"wb")
            assert list(store.scan()) == expected
        if caps.persistent:
            with open_storage(with_options(url, sync="false")) as store:
                assert list(store.scan()) == expected

    # -- opening without creating ------------------------------------------------

    def test_create_false(self, url: str) -> None:
        """Persistent: a missing store is not created, an existing one opens. Else: ignored."""
        if not self.capabilities_of(url).persistent:
            with open_storage(url, create=False) as store:
                assert list(store.scan()) == []
            return
        with pytest.raises(StoreNotFoundError):
            open_storage(url, create=False)
        with pytest.raises(StoreNotFoundError):
            open_storage(with_options(url, create="false"))
        # The failed opens left nothing that a later one could take for the store.
        with pytest.raises(StoreNotFoundError):
            open_storage(url, create=False)
        with open_storage(url) as store:
            store.set(b"k", b"v")
        with open_storage(url, create=False) as store:
            assert store.get(b"k") == b"v"
        with open_storage(with_options(url, create="false")) as store:
            assert store.get(b"k") == b"v"

    # -- the constructor ---------------------------------------------------------

    def test_constructor_builds_the_store_the_url_names(self, tmp_path: Path) -> None:
        workdir = tmp_path / "built"
        made = self.make_storage(workdir)
        try:
            made.set(b"made", b"1")
            kind, persistent = type(made), made.capabilities.persistent
        finally:
            made.close()
        assert made.closed
        with open_storage(self.url_for(workdir)) as opened:
            assert type(opened) is kind
            assert opened.get(b"made") == (b"1" if persistent else None)
            opened.set(b"opened", b"2")
        with self.make_storage(workdir) as again:
            assert again.get(b"opened") == (b"2" if persistent else None)

    def test_constructor_without_create(self, tmp_path: Path) -> None:
        workdir = tmp_path / "missing"
        if not self.capabilities_of(self.url_for(workdir)).persistent:
            with self.make_storage(workdir, create=False) as store:
                assert list(store.scan()) == []
            return
        with pytest.raises(StoreNotFoundError):
            self.make_storage(workdir, create=False)
        with pytest.raises(StoreNotFoundError):
            open_storage(self.url_for(workdir), create=False)
        with self.make_storage(workdir) as store:
            store.set(b"k", b"v")
        with self.make_storage(workdir, create=False) as store:
            assert store.get(b"k") == b"v"
