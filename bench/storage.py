"""Storage benchmark: each operation through SuperVM versus the raw driver.

    python -m bench.storage [--backends rocksdb,lmdb] [--keys 20000] [--rounds 300]
                            [--processes 4] [--rep-ms 1] [--json storage.json]

For every back end a SuperVM store and a database opened directly with the
driver (same settings, a directory or table of its own) are opened and filled
with the same keys (4-byte big-endian counters behind ``k``, 100-byte values;
``--keys`` 20,000 for the embedded stores, a quarter for SQLite, a tenth for
PostgreSQL and MariaDB), in each of ``--processes`` worker processes. Then repetitions of
the same work on the two sides (about ``--rep-ms`` ms each) are interleaved in
pairs, and the figure per operation is the median of the per-pair ratios
SuperVM time / raw time (1.00 = no overhead) with its 95% confidence interval;
see bench/harness.py for the method. ``--rounds`` is the number of pairs per
operation over all processes (it used to be the number of best-of rounds, each
on fresh stores). The pairs of all twenty comparisons are interleaved in time.

The operations (each repetition a run of consecutive units, cycling):

* get: point gets of the stored keys, in key order;
* prefix scan: full scans of 3-byte prefixes, 256 keys each (the count is
  checked);
* set: single puts overwriting stored keys, in key order;
* batch set: atomic batches of 1,000 puts overwriting stored keys.

Writes overwrite the stored keys, so the stores keep their size (the old
benchmark inserted into fresh stores). Both sides get the same operations in
the same order, so their stores go through the same states.

"Raw" is the driver used idiomatically, opened with the options the SuperVM
store opens with and running the same statements, so a ratio measures the
wrapper (argument checks, error translation, locking, bookkeeping):
* rocksdb: a rocksdict ``Rdict`` in raw mode, lz4 compression, the same options
  for the default column family; ``get``/``put``, a ``WriteBatch`` applied with
  ``write``, and ``items(from_key=prefix)`` bounded by an iterate upper bound.
* leveldb: a plyvel ``DB`` (snappy compression); ``get``/``put``, a
  ``write_batch(transaction=True)``, and ``iterator(prefix=prefix)``.
* lmdb: an environment with LMDBStorage's map size, sync and metasync on, 126
  readers and 4 spare read transactions; each get and scan in its own read
  transaction, each set and batch in one write transaction.
* sqlite: one ``sqlite3`` connection in autocommit mode with the 5 s busy
  timeout, WAL journal and default ``synchronous`` (the pragmas SQLiteStorage
  sets), the same table DDL; the same SELECT / upsert statements on one cursor,
  batches as ``executemany`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, and a
  scan that iterates the cursor of its range SELECT. (SuperVM scans on a
  connection of its own, so a scan is one consistent view however long it is
  read; that connection's page cache starts cold, while the raw side reads
  through the connection that wrote the data.)
* postgresql: one psycopg 3 connection in autocommit mode, the same table DDL
  and statements with binary parameters (``%b``); gets and scans are prepared
  and ask for binary results, as PostgresStorage does; batches run
  ``executemany`` in one transaction; a scan fetches the rows of its range
  SELECT with ``fetchall`` (what PostgresStorage does for results of up to a
  page of rows, which every scan of this workload is).
* mariadb: one PyMySQL connection in autocommit mode with MariaDBStorage's
  session settings (utf8mb4, ``STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION``, READ
  COMMITTED), the same InnoDB table (``VARBINARY(2048)`` key, ``LONGBLOB``
  value) and statements (upsert by ``ON DUPLICATE KEY UPDATE``); batches run
  ``executemany`` (multi-row upserts) between ``begin`` and ``commit``; a scan
  fetches the rows of its range SELECT with ``fetchall``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import supervm
from bench.harness import Cycle, Pair, Session, Side, add_arguments, say
from supervm.storage import Storage, prefix_upper_bound

OPERATIONS = ("get", "set", "batch set", "prefix scan")
BATCH_SIZE = 1000
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_DEFAULT = "mariadb+pymysql://root@127.0.0.1:3306/test"
#: The table the SQL back ends use by default (the raw SQLite side uses it in a file of its
#: own; named here because the SQL back ends are moving between packages).
SQL_TABLE = "supervm_kv"


@dataclass
class Target:
    """The four workload operations bound to one store."""

    get: Callable[[bytes], object]
    set: Callable[[bytes, bytes], object]
    batch: Callable[[list[tuple[bytes, bytes]]], object]
    scan: Callable[[bytes], Iterator[object]]
    close: Callable[[], object]


def supervm_target(store: Storage) -> Target:
    def batch(items: list[tuple[bytes, bytes]]) -> None:
        with store.batch() as b:
            put = b.set
            for key, value in items:
                put(key, value)

    return Target(store.get, store.set, batch, store.scan, store.close)


# -- raw drivers, opened with the settings the SuperVM back end uses -----------------


def raw_rocksdb(path: str) -> Target:
    from rocksdict import DBCompressionType, Options, Rdict, ReadOptions, WriteBatch

    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.lz4())
    # As RocksDBStorage opens it: these options for the default column family too.
    db = Rdict(path, options=options, column_families={"default": options})
    keep_alive: list[object] = []

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        for key, value in items:
            put(key, value)
        db.write(wb)

    def scan(prefix: bytes) -> Iterator[object]:
        read_options = ReadOptions()
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            read_options.set_iterate_upper_bound(upper)
        # The iterator borrows the bound from read_options: keep it alive while iterating.
        keep_alive[:] = [read_options]
        items: Iterator[object] = db.items(from_key=prefix, read_opt=read_options)
        return items

    return Target(db.get, db.put, batch, scan, db.close)


def raw_leveldb(path: str) -> Target:
    import plyvel

    db = plyvel.DB(path, create_if_missing=True, compression="snappy")

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        with db.write_batch(transaction=True) as wb:
            put = wb.put
            for key, value in items:
                put(key, value)

    def scan(prefix: bytes) -> Iterator[object]:
        return db.iterator(prefix=prefix)  # type: ignore[no-any-return]

    return Target(db.get, db.put, batch, scan, db.close)


def raw_lmdb(path: str) -> Target:
    import lmdb

    from supervm_lmdb.storage import DEFAULT_MAP_SIZE

    os.makedirs(path, exist_ok=True)
    # The settings LMDBStorage opens an environment with by default.
    env = lmdb.open(
        path,
        map_size=DEFAULT_MAP_SIZE,
        subdir=True,
        sync=True,
        metasync=True,
        max_readers=126,
        max_spare_txns=4,
        lock=True,
    )

    def get(key: bytes) -> object:
        with env.begin() as txn:
            return txn.get(key)

    def put(key: bytes, value: bytes) -> None:
        with env.begin(write=True) as txn:
            txn.put(key, value)

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        with env.begin(write=True) as txn:
            put = txn.put
            for key, value in items:
                put(key, value)

    def scan(prefix: bytes) -> Iterator[object]:
        with env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    yield key, value

    return Target(get, put, batch, scan, env.close)


def raw_sqlite(path: str) -> Target:
    # SQLiteStorage's connection: autocommit, 5 s busy timeout, WAL journal.
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    table = f'"{SQL_TABLE}"'
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (key))"
    )
    select = f"SELECT value FROM {table} WHERE key = ?"
    upsert = (
        f"INSERT INTO {table} (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    scan_sql = f"SELECT key, value FROM {table} WHERE key >= ? AND key < ? ORDER BY key"
    cur = db.cursor()

    def get(key: bytes) -> object:
        row = cur.execute(select, (key,)).fetchone()
        return None if row is None else row[0]

    def put(key: bytes, value: bytes) -> None:
        cur.execute(upsert, (key, value))

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(upsert, items)
        cur.execute("COMMIT")

    def scan(prefix: bytes) -> Iterator[object]:
        return iter(db.execute(scan_sql, (prefix, prefix_upper_bound(prefix))))

    return Target(get, put, batch, scan, db.close)


def raw_postgres(dsn: str, table: str) -> Target:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    quoted = f'"{table}"'
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {quoted} "
        "(key BYTEA NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (key))"
    )
    # PostgresStorage's statements: binary parameters (%b); gets and scans are
    # prepared and read binary results.
    select = f"SELECT value FROM {quoted} WHERE key = %b"
    upsert = (
        f"INSERT INTO {quoted} (key, value) VALUES (%b, %b) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    scan_sql = f"SELECT key, value FROM {quoted} WHERE key >= %b AND key < %b ORDER BY key"
    cur = conn.cursor()

    def get(key: bytes) -> object:
        row = cur.execute(select, (key,), prepare=True, binary=True).fetchone()
        return None if row is None else row[0]

    def put(key: bytes, value: bytes) -> None:
        cur.execute(upsert, (key, value), prepare=True)

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        with conn.transaction():
            cur.executemany(upsert, items)

    def scan(prefix: bytes) -> Iterator[object]:
        params = (prefix, prefix_upper_bound(prefix))
        return iter(cur.execute(scan_sql, params, prepare=True, binary=True).fetchall())

    def close() -> None:
        conn.execute(f"DROP TABLE IF EXISTS {quoted}")
        conn.close()

    return Target(get, put, batch, scan, close)


def raw_mariadb(url: str, table: str) -> Target:
    import pymysql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    # MariaDBStorage's session: autocommit, utf8mb4, strict, READ COMMITTED.
    conn = pymysql.connect(
        host=parsed.host, port=parsed.port or 3306, user=parsed.username,
        password=parsed.password or "", database=parsed.database, charset="utf8mb4",
        autocommit=True, sql_mode="STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION",
    )  # fmt: skip
    cur = conn.cursor()
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    quoted = f"`{table}`"
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {quoted} (`key` VARBINARY(2048) NOT NULL, "
        "value LONGBLOB NOT NULL, PRIMARY KEY (`key`)) ENGINE=InnoDB ROW_FORMAT=DYNAMIC"
    )
    select = f"SELECT value FROM {quoted} WHERE `key` = %s"
    upsert = (
        f"INSERT INTO {quoted} (`key`, value) VALUES (%s, %s) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value)"
    )
    scan_sql = f"SELECT `key`, value FROM {quoted} WHERE `key` >= %s AND `key` < %s ORDER BY `key`"

    def get(key: bytes) -> object:
        cur.execute(select, (key,))
        row = cur.fetchone()
        return None if row is None else row[0]

    def put(key: bytes, value: bytes) -> None:
        cur.execute(upsert, (key, value))

    def batch(items: list[tuple[bytes, bytes]]) -> None:
        conn.begin()
        cur.executemany(upsert, items)
        conn.commit()

    def scan(prefix: bytes) -> Iterator[object]:
        cur.execute(scan_sql, (prefix, prefix_upper_bound(prefix)))
        return iter(cur.fetchall())

    def close() -> None:
        cur.execute(f"DROP TABLE IF EXISTS {quoted}")
        conn.close()

    return Target(get, put, batch, scan, close)


# -- the workload ---------------------------------------------------------------------


@dataclass
class Workload:
    keys: list[bytes]
    value: bytes
    prefixes: list[bytes]
    #: keys under each prefix
    counts: dict[bytes, int]

    @classmethod
    def make(cls, count: int) -> Workload:
        # 4-byte big-endian counters: every 3-byte prefix covers 256 consecutive keys.
        keys = [b"k" + i.to_bytes(4, "big") for i in range(count)]
        groups = sorted({key[:4] for key in keys})
        step = max(1, len(groups) // 32)
        prefixes = groups[::step]
        counts = {p: sum(1 for k in keys if k.startswith(p)) for p in prefixes}
        return cls(keys, b"v" * 100, prefixes, counts)


def get_side(label: str, target: Target, work: Workload) -> Side:
    cycle, get = Cycle(work.keys), target.get

    def prepare(n: int) -> Callable[[], object]:
        keys = cycle.take(n)

        def body() -> None:
            for key in keys:
                get(key)

        return body

    return Side(label, prepare)


def set_side(label: str, target: Target, work: Workload) -> Side:
    cycle, put, value = Cycle(work.keys), target.set, work.value

    def prepare(n: int) -> Callable[[], object]:
        keys = cycle.take(n)

        def body() -> None:
            for key in keys:
                put(key, value)

        return body

    return Side(label, prepare)


def batch_side(label: str, target: Target, work: Workload) -> Side:
    cycle, batch, value = Cycle(work.keys), target.batch, work.value

    def prepare(n: int) -> Callable[[], object]:
        chunks = [[(key, value) for key in cycle.take(BATCH_SIZE)] for _ in range(n)]

        def body() -> None:
            for chunk in chunks:
                batch(chunk)

        return body

    return Side(label, prepare)


def scan_side(label: str, target: Target, work: Workload) -> Side:
    cycle, scan = Cycle(work.prefixes), target.scan

    def prepare(n: int) -> Callable[[], object]:
        prefixes = cycle.take(n)
        expected = sum(work.counts[p] for p in prefixes)

        def body() -> tuple[int, int]:
            seen = 0
            for prefix in prefixes:
                for _ in scan(prefix):
                    seen += 1
            return seen, expected

        return body

    def check(out: tuple[int, int]) -> None:
        if out[0] != out[1]:
            raise AssertionError(f"{label}: scan saw {out[0]} pairs, expected {out[1]}")

    return Side(label, prepare, check)


SIDES: dict[str, Callable[[str, Target, Workload], Side]] = {
    "get": get_side,
    "prefix scan": scan_side,
    "set": set_side,
    "batch set": batch_side,
}
UNITS = {
    "get": ("get", 1),
    "prefix scan": ("scan", 1),
    "set": ("set", 1),
    "batch set": ("key", BATCH_SIZE),
}


def fill(target: Target, work: Workload) -> None:
    """Store every key (untimed) and check a few come back."""
    for i in range(0, len(work.keys), BATCH_SIZE):
        target.batch([(key, work.value) for key in work.keys[i : i + BATCH_SIZE]])
    for key in work.keys[:: max(1, len(work.keys) // 10)]:
        if target.get(key) != work.value:
            raise AssertionError(f"{key!r} did not come back")


@dataclass
class Backend:
    name: str
    ours: Callable[[str], Target]
    raw: Callable[[str], Target]
    keys: int


def _file_backend(name: str, scheme: str, raw: Callable[[str], Target], keys: int) -> Backend:
    def ours(path: str) -> Target:
        return supervm_target(supervm.open_storage(f"{scheme}://{path}"))

    return Backend(name, ours, raw, keys)


def backends(pg_url: str, keys: int, mariadb_url: str = MARIADB_DEFAULT) -> list[Backend]:
    def server_ours(server_url: str) -> Callable[[str], Target]:
        """A SuperVM store in a fresh table on the server, dropped when closed."""

        def ours(_: str) -> Target:
            table = f"bench_{uuid.uuid4().hex[:12]}"
            store = supervm.open_storage(f"{server_url}?table={table}")

            def close() -> None:
                store.drop()  # type: ignore[attr-defined]
                store.close()

            target = supervm_target(store)
            target.close = close
            return target

        return ours

    def pg_raw(_: str) -> Target:
        dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
        return raw_postgres(dsn, f"bench_{uuid.uuid4().hex[:12]}")

    def sqlite_ours(path: str) -> Target:
        return supervm_target(supervm.open_storage(f"sqlite:///{path}.db"))

    return [
        _file_backend("rocksdb", "rocksdb", raw_rocksdb, keys),
        _file_backend("leveldb", "leveldb", raw_leveldb, keys),
        _file_backend("lmdb", "lmdb", raw_lmdb, keys),
        Backend("sqlite", sqlite_ours, lambda p: raw_sqlite(p + ".db"), max(1, keys // 4)),
        Backend("postgresql", server_ours(pg_url), pg_raw, max(1, keys // 10)),
        Backend(
            "mariadb",
            server_ours(mariadb_url),
            lambda _: raw_mariadb(mariadb_url, f"bench_{uuid.uuid4().hex[:12]}"),
            max(1, keys // 10),
        ),
    ]


def open_backend(backend: Backend, workdir: Path, stack: ExitStack) -> list[Pair]:
    """Open and fill both stores of a back end; the pairs of its four operations."""
    work = Workload.make(backend.keys)
    ours = backend.ours(str(workdir / f"{backend.name}-ours"))
    stack.callback(ours.close)
    raw = backend.raw(str(workdir / f"{backend.name}-raw"))
    stack.callback(raw.close)
    fill(ours, work)
    fill(raw, work)
    pairs = []
    for op, make in SIDES.items():
        unit, per = UNITS[op]
        pairs.append(Pair(
            f"{backend.name} {op}", make("SuperVM store", ours, work),
            make("raw driver", raw, work), kind="time", target="<= 1.15",
            ops_per_unit=per, op=unit,
        ))  # fmt: skip
    return pairs


def summary(session: Session) -> str:
    """The ratios as a back end x operation matrix, and the raw per-operation times."""
    by_name = {r.name: r for r in session.results}
    names = list(dict.fromkeys(r.name.split(" ", 1)[0] for r in session.results))
    header = "| back end | " + " | ".join(OPERATIONS) + " |"
    rule = "|" + " --- |" * (len(OPERATIONS) + 1)
    lines = [
        "SuperVM time / raw driver time, median [95% CI] (1.00 = no overhead; target <= 1.15)\n",
        header,
        rule,
    ]
    for name in names:
        cells = []
        for op in OPERATIONS:
            r = by_name.get(f"{name} {op}")
            cells.append("-" if r is None else f"{r.median:.2f} [{r.spread}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Raw driver rates in the same run (ops/s; scan: keys/s)", "", header, rule]
    for name in names:
        cells = []
        for op in OPERATIONS:
            r = by_name.get(f"{name} {op}")
            if r is None:
                cells.append("-")
                continue
            per_key = r.raw_ns_per_op / (256 if op == "prefix scan" else 1)
            cells.append(f"{1e9 / per_key:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    worst = max(session.results, key=lambda r: r.median)
    lines.append(f"\nworst ratio: {worst.median:.2f} ({worst.name})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="rocksdb,leveldb,lmdb,sqlite,postgresql,mariadb")
    parser.add_argument("--keys", type=int, default=20000, help="keys per embedded back end")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("SUPERVM_TEST_POSTGRES_URL", PG_DEFAULT)
    )
    parser.add_argument(
        "--mariadb-url", default=os.environ.get("SUPERVM_TEST_MARIADB_URL", MARIADB_DEFAULT)
    )
    add_arguments(parser, rounds=300, rep_ms=1.0, budget=8.0, processes=4)
    args = parser.parse_args(argv)
    wanted = args.backends.split(",")
    session = Session("storage", "bench.storage", args, "Storage: SuperVM / raw driver")
    if not session.spawn(argv):
        pairs: list[Pair] = []
        with tempfile.TemporaryDirectory(prefix="supervm-bench-") as tmp, ExitStack() as stack:
            for backend in backends(args.postgres_url, args.keys, args.mariadb_url):
                if backend.name in wanted:
                    say(f"opening and filling {backend.name} ({backend.keys:,} keys)")
                    pairs += open_backend(backend, Path(tmp), stack)
            session.run(pairs)
    if session.finish():
        print()
        print(summary(session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
