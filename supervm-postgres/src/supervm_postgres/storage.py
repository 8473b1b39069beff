"""The names this module held before the SQL store was split by dialect.

New code imports them from :mod:`supervm_postgres`.
"""

from __future__ import annotations

from supervm_postgres import (
    DEFAULT_TABLE,
    MAX_KEY_SIZE,
    PostgresStorage,
    SQLiteStorage,
    SQLStorage,
)

__all__ = ["DEFAULT_TABLE", "MAX_KEY_SIZE", "PostgresStorage", "SQLStorage", "SQLiteStorage"]
