"""SuperVM storage in one SQL table, through SQLAlchemy 2 Core: what every SQL database shares.

:mod:`supervm_sql.store` is the dialect-neutral part (:class:`SQLStorage`);
:mod:`supervm_sql.sqlite` is the SQLite dialect, which needs no driver beyond
the standard library. The PostgreSQL and MariaDB dialects live in their own
distributions (``supervm-postgres``, ``supervm-mariadb``), so that each brings
only its own driver. Importing this package registers SQLite with
:class:`SQLStorage`.
"""

from __future__ import annotations

from supervm_sql.sqlite import SQLiteStorage
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
    "SQLiteStorage",
]
