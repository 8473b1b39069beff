"""SuperVM storage in a PostgreSQL table, through SQLAlchemy 2 Core and psycopg 3.

:mod:`supervm_postgres.postgresql` is the dialect; the part every SQL database
shares, and the SQLite dialect, live in ``supervm-sql`` (:mod:`supervm_sql`).
Their names are importable from here too, as they were before the split:
:class:`SQLStorage`, :class:`SQLiteStorage`, :data:`DEFAULT_TABLE`,
:data:`MAX_KEY_SIZE`. Importing this package registers PostgreSQL (and SQLite)
with :class:`SQLStorage`.
"""

from __future__ import annotations

from supervm_postgres.postgresql import PostgresStorage
from supervm_sql import DEFAULT_TABLE, MAX_KEY_SIZE, SQLiteStorage, SQLStorage

__all__ = ["DEFAULT_TABLE", "MAX_KEY_SIZE", "PostgresStorage", "SQLStorage", "SQLiteStorage"]
