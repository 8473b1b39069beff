"""Conformance kit, stores kept in local files: paths, ``create=False``, locking.

Not part of :class:`~supervm.testing.StorageConformance`: a back end whose
store is a directory or a file adds :class:`FileStorageConformance` to its
test class. Such a store has a ``path`` attribute, the absolute path of its
directory or file, which ``storage_url(workdir)`` puts at or under ``workdir``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from supervm.errors import (
    InvalidURLError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
)
from supervm.registry import open_storage
from supervm.storage import Storage
from supervm.testing.base import KitBase, with_options
from supervm.url import parse_url

__all__ = ["FileStorageConformance"]

# Opens the store at argv[1], writes to it, says so, and holds it until stdin closes.
_HOLDER = """
import sys
import supervm
store = supervm.open_storage(sys.argv[1])
store.set(b"from-holder", b"1")
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def _store_path(store: Storage) -> Path:
    path = getattr(store, "path", None)
    assert isinstance(path, str), f"{type(store).__name__} has no path attribute"
    assert os.path.isabs(path), f"{type(store).__name__}.path is not absolute: {path!r}"
    return Path(path)


class FileStorageConformance(KitBase):
    """What a store in local files must do about paths, ``create=False`` and locks."""

    #: Whether other processes may open the store while one has it open (LMDB:
    #: yes); otherwise a second opener gets :class:`StorageLockedError`.
    shared_between_processes: bool = False

    def holder(self, url: str) -> subprocess.Popen[str]:
        """A process that has the store at ``url`` open (and has written to it)."""
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        return child

    # -- paths -------------------------------------------------------------------

    def test_store_lives_under_its_work_directory(self, tmp_path: Path) -> None:
        workdir = tmp_path / "here"
        with open_storage(self.url_for(workdir)) as store:
            path = _store_path(store)
            store.set(b"k", b"v")
        assert path == workdir or workdir in path.parents
        assert path.exists()

    def test_missing_parent_directories_are_created(self, tmp_path: Path) -> None:
        workdir = tmp_path / "a" / "b" / "c"
        with open_storage(self.url_for(workdir)) as store:
            store.set(b"k", b"v")
            path = _store_path(store)
        assert path.exists()
        with open_storage(self.url_for(workdir)) as store:
            assert store.get(b"k") == b"v"

    def test_relative_path_is_relative_to_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        relative = self.storage_url(Path("rel") / "dir")
        try:
            with open_storage(relative) as store:
                store.set(b"k", b"v")
                path = _store_path(store)
            assert path.resolve().is_relative_to((tmp_path / "rel" / "dir").resolve())
            with open_storage(self.url_for(tmp_path / "rel" / "dir")) as store:
                assert store.get(b"k") == b"v"
        finally:
            self.cleanup_url(relative)

    @pytest.mark.parametrize("form", ["{scheme}://", "{scheme}:///"])
    def test_url_without_path_is_refused(self, url: str, form: str) -> None:
        with pytest.raises(InvalidURLError, match="path"):
            open_storage(form.format(scheme=parse_url(url).scheme))

    def test_path_under_a_regular_file_is_a_storage_error(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_bytes(b"not a directory")
        with pytest.raises(StorageError) as info:
            open_storage(self.url_for(blocker / "store"))
        assert not isinstance(info.value, StorageLockedError)
        assert str(blocker) in str(info.value)
        assert info.value.original is not None
        assert info.value.__cause__ is info.value.original
        assert blocker.read_bytes() == b"not a directory"

    def test_path_that_is_a_file_is_a_storage_error(self, tmp_path: Path) -> None:
        with open_storage(self.url_for(tmp_path / "probe")) as probe:
            directory_store = _store_path(probe).is_dir()
        target = tmp_path / "target"
        with open_storage(self.url_for(target)) as store:
            path = _store_path(store)
        if directory_store:
            # A regular file where the store's directory belongs.
            shutil.rmtree(path)
            path.write_bytes(b"not a database")
        else:
            # A directory where the store's file belongs.
            path.unlink()
            path.mkdir()
        with pytest.raises(StorageError) as info:
            open_storage(self.url_for(target))
        assert not isinstance(info.value, StorageLockedError | StoreNotFoundError)
        assert str(path) in str(info.value)
        assert info.value.original is not None

    def test_unknown_option_creates_nothing(self, tmp_path: Path) -> None:
        workdir = tmp_path / "never"
        url = self.url_for(workdir)
        with pytest.raises(InvalidURLError):
            open_storage(with_options(url, no_such_option="1"))
        assert not workdir.exists()

    # -- opening without creating ------------------------------------------------

    def test_create_false_creates_nothing(self, tmp_path: Path) -> None:
        workdir = tmp_path / "parent" / "missing"
        attempts: list[Callable[[], Storage]] = [
            lambda: open_storage(self.url_for(workdir), create=False),
            lambda: self.make_storage(workdir, create=False),
        ]
        for attempt in attempts:
            with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
                attempt()
            assert str(workdir) in str(info.value)
            assert list(tmp_path.iterdir()) == []

    def test_create_false_finds_no_store_in_an_empty_directory(self, tmp_path: Path) -> None:
        workdir = tmp_path / "empty"
        with open_storage(self.url_for(workdir)) as store:
            path = _store_path(store)
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()
            empty = path
        else:
            path.unlink()
            empty = path.parent
        with pytest.raises(StoreNotFoundError, match="nothing was created"):
            open_storage(self.url_for(workdir), create=False)
        assert list(empty.iterdir()) == []

    # -- locking -----------------------------------------------------------------

    def test_second_open_in_this_process_is_locked_out(self, url: str) -> None:
        first = open_storage(url)
        try:
            with pytest.raises(StorageLockedError) as info:
                open_storage(url)
            assert str(_store_path(first)) in str(info.value)
            first.set(b"k", b"still usable")
            assert first.get(b"k") == b"still usable"
        finally:
            first.close()
        with open_storage(url) as again:
            assert again.get(b"k") == b"still usable"

    def test_another_process_holding_the_store(self, url: str) -> None:
        """Locked out, unless the back end declares it ``shared_between_processes``."""
        with open_storage(url) as store:
            path = _store_path(store)
        child = self.holder(url)
        try:
            if self.shared_between_processes:
                with open_storage(url) as store:
                    assert store.get(b"from-holder") == b"1"
                    store.set(b"from-parent", b"2")
            else:
                with pytest.raises(StorageLockedError) as info:
                    open_storage(url)
                assert str(path) in str(info.value)
        finally:
            assert child.stdin is not None
            child.stdin.close()
            assert child.wait(timeout=60) == 0
        with open_storage(url) as store:
            assert store.get(b"from-holder") == b"1"

    def test_store_opens_after_its_holder_is_killed(self, url: str) -> None:
        child = self.holder(url)
        try:
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            if child.stdin is not None:
                child.stdin.close()
        with open_storage(url) as store:
            assert store.get(b"from-holder") == b"1"

    def test_close_or_drop_releases_the_store(self, url: str) -> None:
        for _ in range(3):
            store = open_storage(url)
            store.set(b"n", (store.get(b"n") or b"") + b"x")
            store.close()
        dropped = open_storage(url)
        dropped.set(b"dropped", b"1")
        del dropped  # never closed: freeing it lets go of the files
        with open_storage(url) as store:
            assert store.get(b"n") == b"xxx"
            assert store.get(b"dropped") == b"1"

    def test_closing_the_store_ends_its_snapshots(self, url: str) -> None:
        store = open_storage(url)
        store.set(b"k", b"v")
        snap = store.snapshot() if store.capabilities.snapshots else None
        store.close()
        if snap is not None:
            with pytest.raises(StorageClosedError):
                snap.get(b"k")
            snap.close()
        with open_storage(url) as again:
            assert again.get(b"k") == b"v"
