"""Verified state snapshots: a chain's state at one height in one file, and back.

:func:`export_snapshot` writes the state at any kept height as a manifest and
zstandard chunks of bounded size, sorted by key hash; :func:`import_snapshot`
checks every chunk's hash, rebuilds the state tree as it writes, and makes
the state visible only once the rebuilt root equals the manifest's. See
``docs/snapshots.md``.
"""

from supervm.snapshot.export import export_snapshot
from supervm.snapshot.manifest import (
    FORMAT_VERSION,
    MAGIC,
    SnapshotError,
    SnapshotManifest,
    read_manifest,
)
from supervm.snapshot.restore import ImportReport, import_snapshot

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ImportReport",
    "SnapshotError",
    "SnapshotManifest",
    "export_snapshot",
    "import_snapshot",
    "read_manifest",
]
