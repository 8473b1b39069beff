"""SuperVM's MariaDB back end on the session's 3-node Galera cluster.

Chains committed through one node are read on the others (causal reads); the
node a chain is committing through is killed with SIGKILL while blocks commit,
and the store fails over to the next node of its ``hosts=`` list with no
acknowledged block lost and none torn; the killed node rejoins and serves the
same state; two writers on different nodes writing the same keys conflict, one
of them retries, and the table ends in one of the two serial orders.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from galera_cluster import Cluster

import supervm
from supervm.chain import Chain, Head
from supervm_mariadb import MariaDBStorage

from ..crash_support import STALL_SECONDS, Replay, Tally, Worker, check_store
from ..crash_worker import TOKEN, build_block

pytestmark = pytest.mark.cluster

SEED = 8_008


@pytest.fixture
def database(galera: Cluster) -> Iterator[str]:
    """A database of the test's own (the store creates it), dropped afterwards."""
    name = f"supervm_{uuid.uuid4().hex[:12]}"
    yield name
    galera.heal()
    with galera.connect(1) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def store_url(
    cluster: Cluster, database: str, first: int, *, failover: bool = False, **options: str
) -> str:
    """A URL of the store in ``database`` on node ``first`` (then the others, with ``failover``)."""
    node = cluster.node(first)
    query = {"table": "chain", **options}
    if failover:
        others = [n for n in cluster.nodes if n.number != first]
        query["hosts"] = ",".join(f"{n.host}:{n.port}" for n in others)
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return f"mariadb+pymysql://root@{node.host}:{node.port}/{database}?{text}"


def open_store(url: str) -> MariaDBStorage:
    store = supervm.open_storage(url)
    assert isinstance(store, MariaDBStorage)
    return store


def chain_state(store: MariaDBStorage) -> tuple[Head, dict[bytes, bytes]]:
    """The chain's head (height, block hash, state root) and every pair in the store."""
    chain = Chain(store, threads=1)
    try:
        return chain.head(), dict(store.scan())
    finally:
        chain.close()


def test_blocks_committed_through_node_1_are_read_on_nodes_2_and_3(
    galera: Cluster, database: str
) -> None:
    writer = open_store(store_url(galera, database, 1, sync="true"))
    try:
        assert writer.server_settings.galera and writer.server_settings.durable
        chain = Chain(writer, threads=2)
        for height in range(1, 9):
            chain.apply(build_block(TOKEN, SEED, height))
        written = chain_state(writer)
        records = [chain.header(h) for h in range(1, 9)]
        chain.close()
    finally:
        writer.close()
    assert written[0].height == 8

    replay = Replay(SEED)
    replay.extend_to(8)
    assert written[0] == replay.chain.head()
    for node in (2, 3):
        reader = open_store(store_url(galera, database, node, causal_reads="true"))
        try:
            assert reader.node.port == galera.node(node).port
            assert chain_state(reader) == written
            reading = Chain(reader, threads=1)
            assert [reading.header(h) for h in range(1, 9)] == records
            reading.close()
        finally:
            reader.close()


def sessions_in(cluster: Cluster, node: int, database: str) -> int:
    with cluster.connect(node) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (database,)
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


def wait_sessions_gone(cluster: Cluster, database: str, nodes: tuple[int, ...]) -> None:
    """Until no node has a session in ``database`` (a killed worker's commit has ended)."""
    deadline = time.monotonic() + STALL_SECONDS
    while any(sessions_in(cluster, node, database) for node in nodes):
        if time.monotonic() > deadline:
            pytest.fail(f"a killed worker's session in {database} lingers")
        time.sleep(0.01)


def test_killing_the_serving_node_during_commits_fails_over_and_loses_nothing(
    galera: Cluster, database: str, tmp_path: Path
) -> None:
    url = store_url(galera, database, 1, failover=True, sync="true")
    replay = Replay(SEED)
    worker = Worker(url, 1, SEED, tmp_path / "worker.stderr")
    try:
        worker.wait_for("ACK", 6)
        before = max(worker.acks)
        killed_at = time.perf_counter()
        galera.kill(1)
        # The worker carries on through node 2: blocks keep being acknowledged.
        deadline = time.monotonic() + STALL_SECONDS
        while max(worker.acks) < before + 6:
            worker.next_event()
            assert time.monotonic() < deadline, "no blocks acknowledged after the kill"
        resumed = min(t for t in worker.ack_times.values() if t > killed_at)
    finally:
        worker.kill()
    stderr = worker.stderr()
    survivor = galera.node(2)
    assert f"failed over to {survivor.host}:{survivor.port}" in stderr, stderr
    wait_sessions_gone(galera, database, (2, 3))

    tally = Tally()
    reader = open_store(store_url(galera, database, 3, causal_reads="true"))
    try:
        head = check_store(reader, replay, worker, 0, tally)
        after_kill = chain_state(reader)
    finally:
        reader.close()
    assert tally.lost == 0
    assert head >= before + 6
    print(
        f"\ngalera failover: {before} blocks acknowledged before node 1 was killed, "
        f"{max(worker.acks)} in all, head {head}; kill to the next acknowledged block "
        f"{resumed - killed_at:.2f} s"
    )

    # The killed node comes back, catches up, and serves the same state.
    galera.restart(1)
    rejoined = open_store(store_url(galera, database, 1, causal_reads="true"))
    try:
        assert rejoined.node.port == galera.node(1).port
        assert chain_state(rejoined) == after_kill
    finally:
        rejoined.close()


def race(writers: dict[bytes, MariaDBStorage], keys: list[bytes], tag: int) -> list[BaseException]:
    """Each writer writes ``NAME/tag`` to every key in one batch, all starting together."""
    barrier = threading.Barrier(len(writers))
    failures: list[BaseException] = []

    def write(name: bytes, store: MariaDBStorage) -> None:
        barrier.wait()
        try:
            store.write_batch([(key, b"%s/%d" % (name, tag)) for key in keys])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=item) for item in writers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STALL_SECONDS)
    return failures


def test_two_writers_on_two_nodes_conflict_one_retries_and_one_serial_order_wins(
    galera: Cluster, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [b"shared/%05d" % i for i in range(3000)]
    one = open_store(store_url(galera, database, 1))
    two = open_store(store_url(galera, database, 2))
    check = open_store(store_url(galera, database, 3, causal_reads="true"))
    writers = {b"one": one, b"two": two}
    rounds = 0
    try:
        one.write_batch([(key, b"start") for key in keys])
        caplog.set_level(logging.WARNING, logger="supervm_mariadb")
        while rounds < 40 and one.conflicts_retried + two.conflicts_retried == 0:
            rounds += 1
            failures = race(writers, keys, rounds)
            assert not failures, failures
            # Every key holds the value of the same writer: one of the two serial orders.
            values = {value for _, value in check.scan(b"shared/")}
            assert values in ({b"one/%d" % rounds}, {b"two/%d" % rounds}), values
            assert len(list(check.scan(b"shared/"))) == len(keys)
        retried = one.conflicts_retried + two.conflicts_retried
    finally:
        for store in (one, two, check):
            store.close()
    assert retried > 0, f"no write conflict in {rounds} rounds of simultaneous batches"
    messages = [r.getMessage() for r in caplog.records if r.name == "supervm_mariadb"]
    assert any("lost a write conflict (1213)" in m for m in messages), messages
    print(f"\ngalera conflicts: {retried} batch(es) retried after 1213 in {rounds} round(s)")


def test_a_store_opens_on_the_next_node_when_the_first_is_down(
    galera: Cluster, database: str
) -> None:
    galera.kill(2)
    store = open_store(store_url(galera, database, 2, failover=True))
    try:
        assert store.node.port == galera.node(1).port
        assert store.failovers == 1
        store.set(b"k", b"v")
    finally:
        store.close()
    galera.restart(2)
    again = open_store(store_url(galera, database, 2, causal_reads="true"))
    try:
        assert again.get(b"k") == b"v"
    finally:
        again.close()
