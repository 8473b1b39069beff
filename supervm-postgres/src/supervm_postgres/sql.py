"""The shared SQL module, now :mod:`supervm_sql.store` (distribution ``supervm-sql``).

Kept so that imports of ``supervm_postgres.sql`` go on working.
"""

from __future__ import annotations

from supervm_sql.store import (
    CHUNK_ROWS,
    COMMON_OPTIONS,
    DEFAULT_TABLE,
    MAX_KEY_SIZE,
    PAGE_ROWS,
    SQLOptions,
    SQLStorage,
)

__all__ = [
    "CHUNK_ROWS",
    "COMMON_OPTIONS",
    "DEFAULT_TABLE",
    "MAX_KEY_SIZE",
    "PAGE_ROWS",
    "SQLOptions",
    "SQLStorage",
]
