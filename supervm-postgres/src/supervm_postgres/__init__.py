"""SuperVM storage in a SQL table: PostgreSQL (psycopg 3) or SQLite, via SQLAlchemy 2.

:mod:`supervm_postgres.sql` is the part every SQL database shares;
:mod:`supervm_postgres.postgresql` and :mod:`supervm_postgres.sqlite` are the
dialects. Importing this package registers both with :class:`SQLStorage`.
"""

from __future__ import annotations

from supervm_postgres.postgresql import PostgresStorage
from supervm_postgres.sql import DEFAULT_TABLE, MAX_KEY_SIZE, SQLStorage
from supervm_postgres.sqlite import SQLiteStorage

__all__ = ["DEFAULT_TABLE", "MAX_KEY_SIZE", "PostgresStorage", "SQLStorage", "SQLiteStorage"]
