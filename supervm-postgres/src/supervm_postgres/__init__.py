"""SuperVM storage in a SQL table: PostgreSQL (psycopg 3) or SQLite, via SQLAlchemy 2."""

from __future__ import annotations

from supervm_postgres.storage import (
    DEFAULT_TABLE,
    MAX_KEY_SIZE,
    PostgresStorage,
    SQLiteStorage,
    SQLStorage,
)

__all__ = ["DEFAULT_TABLE", "MAX_KEY_SIZE", "PostgresStorage", "SQLStorage", "SQLiteStorage"]
