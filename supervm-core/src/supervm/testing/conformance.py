"""The pytest test class every storage back end subclasses: all parts of the kit together."""

from __future__ import annotations

from supervm.testing.batches import BatchConformance
from supervm.testing.lifecycle import LifecycleConformance
from supervm.testing.machine import MachineConformance
from supervm.testing.points import PointConformance
from supervm.testing.scans import ScanConformance
from supervm.testing.snapshots import SnapshotConformance

__all__ = ["StorageConformance"]


class StorageConformance(
    PointConformance,
    ScanConformance,
    BatchConformance,
    LifecycleConformance,
    SnapshotConformance,
    MachineConformance,
):
    """Behaviour every :class:`~supervm.storage.Storage` back end must show.

    Subclasses implement :meth:`storage_url`; back ends that keep state outside
    ``workdir`` (a database server) also implement :meth:`cleanup_url`, and
    back ends with a constructor implement :meth:`make_storage` with it.
    Every test of an optional feature checks what the capabilities declare,
    either way: a declared feature works, an undeclared one is refused.
    """
