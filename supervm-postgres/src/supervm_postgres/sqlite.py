"""The SQLite dialect, now :mod:`supervm_sql.sqlite` (distribution ``supervm-sql``).

Kept so that imports of ``supervm_postgres.sqlite`` go on working.
"""

from __future__ import annotations

from supervm_sql.sqlite import SQLiteStorage

__all__ = ["SQLiteStorage"]
