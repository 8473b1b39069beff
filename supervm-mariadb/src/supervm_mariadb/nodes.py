"""The servers a MariaDB store may talk to, and failing over between them.

A store URL names one server, or several nodes of one Galera cluster::

    mariadb://root@127.0.0.1:3306/test?hosts=127.0.0.1:3307,127.0.0.1:3308

The nodes are the URL's host followed by the ``hosts`` entries (duplicates
dropped). :class:`NodeList` makes every connection of the store: it tries the
node the store last used first, then the others in order, and takes the first
one that accepts the connection and, if it is a Galera node, is ready
(``wsrep_ready=ON``: in the primary component and synced). A new connection to
a Galera node first waits until the node has applied every transaction the
cluster had committed when it connected (one ``SELECT`` under
``wsrep_sync_wait=1``), so that after a failover the store reads its own
earlier writes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.connections import Connection
from pymysql.cursors import Cursor

from supervm.errors import InvalidURLError

__all__ = [
    "DEFAULT_PORT",
    "LOST_CODES",
    "Address",
    "NodeList",
    "NodeNotReadyError",
    "error_code",
    "parse_hosts",
]

logger = logging.getLogger("supervm_mariadb")

DEFAULT_PORT = 3306
#: Server error codes (``pymysql.constants.ER`` / ``CR``) that mean the connection is gone.
LOST_CODES = frozenset(
    {
        1927,  # ER_CONNECTION_KILLED
        2002,  # CR_CONNECTION_ERROR
        2003,  # CR_CONN_HOST_ERROR
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)
#: ``CR_CONN_HOST_ERROR``: what :meth:`NodeList.connect` raises when no node is usable.
_CR_CONN_HOST_ERROR = 2003
_ER_UNKNOWN_COM_ERROR = 1047
#: Error numbers for which the next node is tried: the server is unreachable, went
#: away while connecting, or (Galera) is not ready for clients.
_TRY_NEXT = LOST_CODES | {_ER_UNKNOWN_COM_ERROR}
_HOST_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\s:\[\]/,]+))(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Address:
    """One node's host and port."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class NodeNotReadyError(pymysql.err.OperationalError):
    """A Galera node accepted the connection but does not serve clients yet."""


def parse_hosts(spec: str) -> tuple[Address, ...]:
    """``"HOST[:PORT],HOST[:PORT],..."`` (IPv6 hosts in brackets) as addresses."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidURLError("hosts= lists no node; use hosts=HOST[:PORT],HOST[:PORT],...")
    addresses = []
    for entry in spec.split(","):
        match = _HOST_RE.match(entry.strip())
        port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
        if match is None or not 0 < port < 65536:
            raise InvalidURLError(
                f"hosts= entry {entry!r} is not HOST[:PORT] (a port from 1 to 65535; "
                "IPv6 addresses in brackets)"
            )
        addresses.append(Address(match["v6"] or match["name"], port))
    return tuple(addresses)


def unique(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """``addresses`` in order, each once."""
    return tuple(dict.fromkeys(addresses))


class NodeList:
    """Makes PyMySQL connections to the first usable node, the current one first.

    ``connect_args`` are PyMySQL's connection arguments other than host, port,
    user, password and database. Thread-safe: scans connect from other threads.
    """

    def __init__(
        self,
        addresses: Sequence[Address],
        *,
        user: str | None,
        password: str | None,
        connect_args: dict[str, Any],
    ) -> None:
        if not addresses:
            raise InvalidURLError("a MariaDB store needs at least one host")
        self._addresses = tuple(addresses)
        self._user = user
        self._password = password or ""
        self._args = connect_args
        self._current = 0
        self._lock = threading.Lock()
        #: How many times a connection went to another node than the one before it.
        self.failovers = 0

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every node, in the order given."""
        return self._addresses

    @property
    def current(self) -> Address:
        """The node the last connection went to (the first node before any)."""
        return self._addresses[self._current]

    def describe(self) -> str:
        """The nodes as ``host:port,host:port``, for messages."""
        return ",".join(map(str, self._addresses))

    def connect(self, database: str | None) -> Connection[Cursor]:
        """A connection to the first usable node, trying the current one first.

        Errors that mean a node is unusable (unreachable, lost while
        connecting, a Galera node not ready) move on to the next node; any
        other error (a refused login, an unknown database) is raised at once.
        When no node is usable, an ``OperationalError`` (2003) lists each
        node's error.
        """
        with self._lock:
            first = self._current
        count = len(self._addresses)
        failures: list[str] = []
        last: pymysql.err.OperationalError | None = None
        for step in range(count):
            index = (first + step) % count
            address = self._addresses[index]
            try:
                conn = self._connect_one(address, database)
            except pymysql.err.OperationalError as exc:
                if error_code(exc) not in _TRY_NEXT:
                    raise
                failures.append(f"{address}: {_message(exc)}")
                last = exc
                continue
            with self._lock:
                if index != self._current:
                    previous = self._addresses[self._current]
                    self._current = index
                    self.failovers += 1
                    logger.warning(
                        "MariaDB node %s is not usable (%s); failed over to %s",
                        previous, "; ".join(failures), address,
                    )  # fmt: skip
            return conn
        if count == 1 and last is not None:
            raise last
        raise pymysql.err.OperationalError(
            _CR_CONN_HOST_ERROR, f"no node of {self.describe()} is usable: {'; '.join(failures)}"
        )

    def _connect_one(self, address: Address, database: str | None) -> Connection[Cursor]:
        conn: Connection[Cursor] = pymysql.connect(
            host=address.host,
            port=address.port,
            user=self._user,
            password=self._password,
            database=database,
            **self._args,
        )
        try:
            _check_ready(conn, address)
        except BaseException:
            conn.close()
            raise
        return conn


def _check_ready(conn: Connection[Cursor], address: Address) -> None:
    """Refuse a Galera node not ready for clients; else wait until it is causally current."""
    with conn.cursor() as cur:
        cur.execute("SHOW VARIABLES LIKE 'wsrep_on'")
        row = cur.fetchone()
        if row is None or str(row[1]).upper() != "ON":
            return  # not a Galera node
        cur.execute(
            "SHOW STATUS WHERE Variable_name IN "
            "('wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_state_comment')"
        )
        status = {str(name).lower(): str(value) for name, value in cur.fetchall()}
        if status.get("wsrep_ready", "").upper() != "ON":
            raise NodeNotReadyError(
                _ER_UNKNOWN_COM_ERROR,
                f"Galera node {address} is not ready for clients (wsrep_ready="
                f"{status.get('wsrep_ready', '?')}, cluster status "
                f"{status.get('wsrep_cluster_status', '?')}, state "
                f"{status.get('wsrep_local_state_comment', '?')})",
            )
        # One read after the node has applied what the cluster committed before now.
        cur.execute("SET SESSION wsrep_sync_wait = 1")
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.execute("SET SESSION wsrep_sync_wait = DEFAULT")


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL exception, if it has one."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _message(exc: BaseException) -> str:
    """A driver error's message on one line, without its number."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else str(exc)
    return " ".join(text.split())
