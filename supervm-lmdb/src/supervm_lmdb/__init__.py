"""LMDB storage back end for SuperVM: ``lmdb:///path/to/dir``."""

from supervm_lmdb.storage import (
    DEFAULT_MAP_SIZE,
    MAX_KEY_SIZE,
    LMDBBatch,
    LMDBSnapshot,
    LMDBStorage,
)

__all__ = ["DEFAULT_MAP_SIZE", "MAX_KEY_SIZE", "LMDBBatch", "LMDBSnapshot", "LMDBStorage"]
