"""Conformance kit for storage back ends.

A back end's test file subclasses :class:`StorageConformance` and says how to
make a URL for a fresh, empty store::

    from supervm.testing import FileStorageConformance, StorageConformance

    class TestMyStore(StorageConformance, FileStorageConformance):
        def storage_url(self, workdir):
            return f"mystore://{workdir}/db"

        def make_storage(self, workdir, *, create=True):  # optional: the constructor
            return MyStorage(workdir / "db", create=create)

Every test then runs against that back end. :class:`StorageConformance`
combines the parts, which can also be used on their own:
:class:`PointConformance` (get, set, delete, bad input, the key-size limit),
:class:`ScanConformance` (prefix, range and reverse scans),
:class:`BatchConformance`, :class:`LifecycleConformance` (opening by URL and
by constructor, ``create=False``, options, closing, persistence),
:class:`SnapshotConformance` and :class:`MachineConformance` (a Hypothesis
state machine, :class:`StorageMachine`, that compares the back end with the
memory store). :class:`FileStorageConformance` is for stores kept in local
files (paths, ``create=False`` leaving nothing behind, locking).

Tests of optional features check the back end's declared
:class:`~supervm.storage.Capabilities` either way, so none is skipped.

The Hypothesis strategies the kit draws from are here for plugin authors:
``keys`` (non-empty keys of bytes around the ordering edges), ``values``,
``prefixes`` and ``batch_ops`` (lists of ``(key, value)`` puts and
``(key, None)`` deletes); see :mod:`supervm.testing.strategies`.
"""

from __future__ import annotations

from supervm.testing.base import KitBase, with_options
from supervm.testing.batches import BatchConformance
from supervm.testing.conformance import StorageConformance
from supervm.testing.files import FileStorageConformance
from supervm.testing.lifecycle import LifecycleConformance
from supervm.testing.machine import MachineConformance, StorageMachine, run_storage_machine
from supervm.testing.points import PointConformance
from supervm.testing.scans import ScanConformance
from supervm.testing.snapshots import SnapshotConformance
from supervm.testing.strategies import EDGE_KEYS, batch_ops, keys, prefixes, values

__all__ = [
    "EDGE_KEYS",
    "BatchConformance",
    "FileStorageConformance",
    "KitBase",
    "LifecycleConformance",
    "MachineConformance",
    "PointConformance",
    "ScanConformance",
    "SnapshotConformance",
    "StorageConformance",
    "StorageMachine",
    "batch_ops",
    "keys",
    "prefixes",
    "run_storage_machine",
    "values",
    "with_options",
]
