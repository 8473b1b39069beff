"""Conformance kit for storage back ends.

A back end's test file subclasses :class:`StorageConformance` and says how to
make a URL for a fresh, empty store::

    from supervm.testing import StorageConformance

    class TestMyStore(StorageConformance):
        def storage_url(self, workdir):
            return f"mystore://{workdir}/db"

Every test then runs against that back end, including a Hypothesis state
machine (:class:`StorageMachine`) that compares it with the memory store.
Tests of optional features switch on from the back end's declared
:class:`~supervm.storage.Capabilities`.
"""

from __future__ import annotations

from supervm.testing.conformance import StorageConformance
from supervm.testing.machine import StorageMachine, run_storage_machine

__all__ = ["StorageConformance", "StorageMachine", "run_storage_machine"]
