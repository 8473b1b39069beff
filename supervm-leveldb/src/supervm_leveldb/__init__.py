"""LevelDB storage back end for SuperVM (``leveldb://`` URLs, via plyvel)."""

from __future__ import annotations

from supervm_leveldb.storage import LevelDBStorage

__all__ = ["LevelDBStorage"]
