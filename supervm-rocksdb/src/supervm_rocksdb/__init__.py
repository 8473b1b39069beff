"""RocksDB storage back end for SuperVM (``rocksdb://`` URLs, on rocksdict)."""

from __future__ import annotations

from supervm_rocksdb.storage import RocksDBBatch, RocksDBSnapshot, RocksDBStorage

__all__ = ["RocksDBBatch", "RocksDBSnapshot", "RocksDBStorage"]
