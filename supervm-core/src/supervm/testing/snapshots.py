"""Conformance kit, snapshots: consistent read-only views, where declared."""

from __future__ import annotations

import pytest

from supervm.errors import InvalidKeyError, StorageClosedError, UnsupportedOperationError
from supervm.storage import Storage
from supervm.testing.base import KitBase

__all__ = ["SnapshotConformance"]


class SnapshotConformance(KitBase):
    """``snapshot()`` as the capabilities declare it: a view, or refused."""

    def test_snapshot(self, store: Storage) -> None:
        if not store.capabilities.snapshots:
            with pytest.raises(UnsupportedOperationError):
                store.snapshot()
            return
        store.set(b"a", b"old")
        store.set(b"b", b"old")
        with store.snapshot() as snap:
            store.set(b"a", b"new")
            store.delete(b"b")
            store.set(b"c", b"new")
            assert snap.get(b"a") == b"old"
            assert snap.get(b"b") == b"old"
            assert snap.get(b"c") is None
            assert list(snap.scan()) == [(b"a", b"old"), (b"b", b"old")]
        assert store.get(b"a") == b"new"

    def test_snapshot_prefix_scans_ignore_later_writes(self, store: Storage) -> None:
        if not store.capabilities.snapshots:
            with pytest.raises(UnsupportedOperationError):
                store.snapshot()
            return
        keys = [b"p/" + i.to_bytes(2, "big") for i in range(600)]
        store.write_batch([(k, b"before") for k in keys] + [(b"q", b"before")])
        with store.snapshot() as snap:
            store.write_batch([(k, b"after") for k in keys[::2]] + [(b"p/new", b"after")])
            store.write_batch([(k, None) for k in keys[1::2]])
            assert list(snap.scan(b"p/")) == [(k, b"before") for k in keys]
            assert snap.get(keys[1]) == b"before"
            assert snap.get(b"p/new") is None
            assert list(snap.scan(b"q")) == [(b"q", b"before")]
            assert list(snap.scan(b"p/\x00\x05")) == [(keys[5], b"before")]
        assert store.get(keys[1]) is None

    def test_snapshot_checks_keys_and_closes(self, store: Storage) -> None:
        if not store.capabilities.snapshots:
            with pytest.raises(UnsupportedOperationError):
                store.snapshot()
            return
        store.write_batch([(b"a1", b"1"), (b"a2", b"2")])
        snap = store.snapshot()
        with pytest.raises(InvalidKeyError):
            snap.get(b"")
        for bad in ("a1", bytearray(b"a1"), None):
            with pytest.raises(TypeError):
                snap.get(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                list(snap.scan(bad))  # type: ignore[arg-type]
        snap.close()
        snap.close()  # a second close is harmless
        with pytest.raises(StorageClosedError):
            snap.get(b"a1")
        with pytest.raises(StorageClosedError):
            list(snap.scan())
        assert store.get(b"a1") == b"1"
