"""SuperVM storage in a MariaDB (or MySQL) table, through SQLAlchemy 2 Core and PyMySQL.

:mod:`supervm_mariadb.mariadb` is the dialect of the shared SQL store
(:mod:`supervm_sql`). Importing this package registers it with
:class:`~supervm_sql.SQLStorage` for ``mariadb://``, ``mariadb+pymysql://``,
``mysql://`` and ``mysql+pymysql://``.
"""

from __future__ import annotations

from supervm_mariadb.mariadb import (
    DEFAULT_MAX_ALLOWED_PACKET,
    MariaDBStorage,
    ServerSettings,
    max_value_size,
)
from supervm_sql import DEFAULT_TABLE, MAX_KEY_SIZE

__all__ = [
    "DEFAULT_MAX_ALLOWED_PACKET",
    "DEFAULT_TABLE",
    "MAX_KEY_SIZE",
    "MariaDBStorage",
    "ServerSettings",
    "max_value_size",
]
