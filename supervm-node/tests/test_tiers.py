"""Every profile of follower at once, as real node processes on loopback: one producer on
RocksDB under a stream of signed transfers, and an archive, a pruned, an edge and a light
follower of it. Each reaches the producer's head with the producer's headers, answers the
reads its profile promises (the archive at height 1 with a proof, the pruned node only
above its horizon, the edge node from its cache, the light node with values it verified)
and survives kill -9: restarted on the same store with the same arguments, it resumes and
catches up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervm.client import Client, RpcError, verify_state_proof
from supervm_node.workload import Workload as SignedWorkload

from .node_process import TOKEN, NodeProcess
from .test_follower import (
    SYNC_TIMEOUT,
    Stream,
    get_text,
    rocksdb,
    setup_chain,
    start_producer,
    wait_height,
    wait_state,
)

#: Balance reads on the edge node.
EDGE_READS = 500
#: The edge node's cache (bytes).
EDGE_CACHE = 8 << 20
#: The pruned node's history (blocks).
KEEP_BLOCKS = 5


@dataclass
class Follower:
    """A follower process and what it takes to start it again on the same store."""

    store: str
    log: Path
    args: tuple[str, ...]
    node: NodeProcess

    @classmethod
    def start(cls, store: str, log: Path, *args: str) -> Follower:
        return cls(store, log, args, NodeProcess(store, log, *args))

    def client(self) -> Client:
        return self.node.client()

    def restart_after_kill(self) -> None:
        """kill -9, then the same command on the same store (on another free port)."""
        self.node.kill()
        self.node = NodeProcess(self.store, self.log, *self.args)


@dataclass
class Tiers:
    producer: NodeProcess
    workload: SignedWorkload
    stream: Stream
    followers: dict[str, Follower]
    tmp: Path


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiers]:
    tmp = tmp_path_factory.mktemp("tiers")
    producer = start_producer(tmp)
    workload = setup_chain(producer)
    stream = Stream(producer.client(), workload, per_round=5).start()
    wait_height(producer.client(), 10)
    follow = ("--follow", producer.url)
    profiles = {
        "archive": (*follow, "--profile", "archive", "--sync", "reexecute"),
        "pruned": (*follow, "--profile", "pruned", "--keep-blocks", str(KEEP_BLOCKS)),
        "edge": (*follow, "--profile", "edge", "--cache", str(EDGE_CACHE)),
    }
    followers = {
        name: Follower.start(rocksdb(tmp, f"{name}.db"), tmp / f"{name}.log", *args)
        for name, args in profiles.items()
    }
    try:
        yield Tiers(producer, workload, stream, followers, tmp)
        stream.stop()  # raises what the stream's thread met (a refused transaction)
        for follower in followers.values():
            assert follower.node.stop() == 0, follower.log.read_text()[-2000:]
        assert producer.stop() == 0
    finally:
        for follower in followers.values():
            follower.node.kill()
        producer.kill()


def balance_key(address: bytes) -> bytes:
    return b"bal/" + address


def assert_headers_match(producer: Client, follower: Client) -> int:
    """The follower reaches the producer's current head, and its blocks 1 .. that height
    have the producer's state roots and hashes; the height."""
    height = producer.head()["height"]
    wait_height(follower, height)
    for first in range(1, height + 1, 200):
        heights = range(first, min(first + 200, height + 1))
        theirs = producer.batch([("svm_getBlock", [h]) for h in heights])
        ours = follower.batch([("svm_getBlock", [h]) for h in heights])
        for h, a, b in zip(heights, theirs, ours, strict=True):
            assert isinstance(a, dict) and isinstance(b, dict), (h, a, b)
            assert (a["state_root"], a["hash"]) == (b["state_root"], b["hash"]), h
            assert a == b, f"block {h} differs: {a} vs {b}"
    return height


def assert_resumes(follower: Follower, producer: Client) -> None:
    """kill -9 and a restart: the follower resumes from its store and reaches the new head."""
    before = follower.client().head()["height"]
    follower.restart_after_kill()
    status = wait_state(follower.client(), "following")
    assert status["height"] >= before, (status, before)
    target = producer.head()["height"]
    assert target > before, "the producer made no block meanwhile"
    wait_height(follower.client(), target)
    block = producer.get_block(target)
    assert block is not None
    assert follower.client().get_block(target) == block


def wait_head(client: Client, height: int) -> dict[str, Any]:
    """Poll ``svm_head`` (all a light node promises) until it is at ``height`` or above."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        head: dict[str, Any] = client.head()
        if head["height"] >= height:
            return head
        assert time.monotonic() < deadline, f"stuck at {head['height']}, waiting for {height}"
        time.sleep(0.05)


def assert_light_headers(producer: Client, light: Client, height: int) -> None:
    """The light node's headers 1 .. ``height`` (``svm_getBlock``) have the producer's
    hashes, parents and roots."""
    fields = ("height", "hash", "parent_hash", "timestamp", "state_root", "transactions_root")
    for first in range(1, height + 1, 200):
        heights = range(first, min(first + 200, height + 1))
        theirs = producer.batch([("svm_getBlock", [h]) for h in heights])
        ours = light.batch([("svm_getBlock", [h]) for h in heights])
        for h, a, b in zip(heights, theirs, ours, strict=True):
            assert isinstance(a, dict) and isinstance(b, dict), (h, a, b)
            assert {f: a[f] for f in fields} == {f: b[f] for f in fields}, (h, a, b)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_the_archive_follows_and_answers_at_height_1_with_a_proof(tiers: Tiers) -> None:
    producer = tiers.producer.client()
    archive = tiers.followers["archive"].client()
    assert_headers_match(producer, archive)
    key = balance_key(tiers.workload.senders[0].address)
    header = producer.get_block(1)
    assert header is not None
    answer = archive.get_state(TOKEN, key, height=1, proof=True)
    assert answer["height"] == 1 and answer["state_root"] == header["state_root"]
    assert answer["value"] == producer.get_state(TOKEN, key, height=1)["value"]
    assert answer["value"] is not None
    assert verify_state_proof(answer, TOKEN, key, bytes.fromhex(header["state_root"]))
    assert_resumes(tiers.followers["archive"], producer)
    # (a new process, on a new port)
    assert_headers_match(producer, tiers.followers["archive"].client())


def test_the_pruned_node_refuses_below_its_horizon_and_answers_at_its_head(
    tiers: Tiers,
) -> None:
    producer = tiers.producer.client()
    pruned = tiers.followers["pruned"].client()
    height = assert_headers_match(producer, pruned)
    assert height > KEEP_BLOCKS + 1
    key = balance_key(tiers.workload.senders[0].address)
    # Pruning runs in the background: block 1's state goes some time after the horizon
    # passes it.
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        try:
            pruned.get_state(TOKEN, key, height=1)
        except RpcError as exc:
            assert exc.code == -32010 and exc.reason == "pruned_height", exc
            assert isinstance(exc.data, dict) and exc.data["height"] == 1, exc.data
            assert exc.data["horizon"] > 1, exc.data
            break
        assert time.monotonic() < deadline, "block 1's state was never pruned"
        time.sleep(0.2)
    head = pruned.head()["height"]
    answer = pruned.get_state(TOKEN, key, height=head)
    assert answer["height"] == head
    assert answer == producer.get_state(TOKEN, key, height=head)
    assert answer["value"] is not None
    assert_resumes(tiers.followers["pruned"], producer)
    # (a new process, on a new port)
    assert_headers_match(producer, tiers.followers["pruned"].client())


def test_the_edge_node_answers_balance_reads_from_its_cache(tiers: Tiers) -> None:
    producer = tiers.producer.client()
    edge = tiers.followers["edge"].client()
    assert_headers_match(producer, edge)
    keys = [balance_key(key.address) for key in tiers.workload.senders]
    before = get_text(tiers.followers["edge"].node.url + "/metrics")
    hits0 = metric(before, "supervm_cache_hits_total")
    misses0 = metric(before, "supervm_cache_misses_total")
    answers: list[tuple[bytes, dict[str, Any]]] = []
    latencies: list[float] = []
    with Client(edge.url, timeout=30) as reader:
        for i in range(EDGE_READS):
            key = keys[i % len(keys)]
            start = time.perf_counter()
            answer = reader.get_state(TOKEN, key)
            latencies.append(time.perf_counter() - start)
            answers.append((key, answer))
    after = get_text(tiers.followers["edge"].node.url + "/metrics")
    hits = metric(after, "supervm_cache_hits_total") - hits0
    misses = metric(after, "supervm_cache_misses_total") - misses0
    assert metric(after, "supervm_cache_hits_total") > 0
    # Each value equals the producer's at the height the edge node answered for.
    expected = producer.batch(
        [("svm_getState", [TOKEN.hex(), key.hex(), answer["height"]]) for key, answer in answers]
    )
    for (key, answer), theirs in zip(answers, expected, strict=True):
        assert isinstance(theirs, dict), theirs
        assert answer["value"] is not None and answer == theirs, (key, answer, theirs)
    rate = hits / (hits + misses) if hits + misses else 0.0
    print(
        f"\nedge svm_getState x{EDGE_READS}: p50 {statistics.median(latencies) * 1e3:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms; cache hits {hits:.0f}, "
        f"misses {misses:.0f}, hit rate {rate:.1%} (the store's gets during the reads, "
        "following included)"
    )
    assert_resumes(tiers.followers["edge"], producer)
    # (a new process, on a new port)
    assert_headers_match(producer, tiers.followers["edge"].client())


def test_the_light_node_follows_headers_and_answers_verified_values(tiers: Tiers) -> None:
    producer = tiers.producer.client()
    light = Follower.start(
        f"sqlite:///{tiers.tmp / 'light.sqlite'}",
        tiers.tmp / "light.log",
        "--follow", tiers.producer.url, "--profile", "light",
    )  # fmt: skip
    try:
        for round_ in range(2):
            head = wait_head(light.client(), producer.head()["height"])
            block = producer.get_block(head["height"])
            assert block is not None and head["hash"] == block["hash"], (head, block)
            assert head["state_root"] == block["state_root"]
            assert_light_headers(producer, light.client(), head["height"])
            for sender in tiers.workload.senders[:3]:
                key = balance_key(sender.address)
                answer = light.client().get_state(TOKEN, key, height=head["height"])
                theirs = producer.get_state(TOKEN, key, height=head["height"])
                assert answer["value"] == theirs["value"] and answer["value"] is not None
            # kill -9 on the first round, then the second round checks it caught up.
            if round_ == 0:
                before = head["height"]
                light.restart_after_kill()
                assert light.client().head()["height"] >= before
    finally:
        light.node.kill()
