"""Followers as real node processes on loopback: they catch up with a producer under a
stream of signed transfers and match it at every height (re-executing or applying write
sets), start from its snapshot, survive kill -9, and refuse blocks a lying producer (a
tampering proxy in front of a real one) sends them."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import supervm
from supervm.chain import BlockHeader, Chain, Transaction
from supervm.client import Client, RpcError
from supervm.snapshot import import_snapshot
from supervm_node.follower import Follower, download_snapshot, fast_sync
from supervm_node.rpc import BackgroundServer
from supervm_node.workload import Workload as SignedWorkload

from .node_process import CHAIN_ID, TOKEN, NodeProcess, Workload

#: How long a test waits for a follower to reach a height (a hang, not a timing check).
SYNC_TIMEOUT = 120.0


def rocksdb(tmp_path: Path, name: str) -> str:
    return f"rocksdb://{tmp_path / name}"


class Stream:
    """Signed transfers sent to a producer from a thread, in rounds, until stopped."""

    def __init__(self, client: Client, workload: SignedWorkload, per_round: int = 10) -> None:
        self.client = client
        self.workload = workload
        self.per_round = per_round
        self.sent = 0
        self.hashes: list[bytes] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with Client(self.client.url, timeout=30) as client:
                round_ = 0
                while not self._stop.is_set():
                    txs = [
                        tx
                        for i, key in enumerate(self.workload.senders)
                        for tx in self.workload.transfers(key, self.per_round, round_ + i)
                    ]
                    for answer in client.send_transactions(txs):
                        assert not isinstance(answer, RpcError), answer
                        self.hashes.append(answer)
                    self.sent += len(txs)
                    round_ += 1
                    self._stop.wait(0.05)
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending, and wait until the producer has committed all it took."""
        self._stop.set()
        self._thread.join()
        assert not self.errors, self.errors
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            head = self.client.head()["height"]
            idle = self.client.mempool()["count"] == 0
            if idle and self.client.wait_for_block(head, timeout_ms=500)["height"] == head:
                return
            assert time.monotonic() < deadline, "the producer never settled"
            self.client.wait_for_block(head, timeout_ms=500)


def start_producer(tmp_path: Path) -> NodeProcess:
    return NodeProcess(rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50")


def setup_chain(producer: NodeProcess, senders: int = 6) -> SignedWorkload:
    workload = Workload(senders=senders)
    client = producer.client()
    hashes = client.send_transactions(workload.setup())
    last = hashes[-1]
    assert isinstance(last, bytes)
    client.wait_for_receipt(last, timeout=SYNC_TIMEOUT)
    return workload


def wait_height(client: Client, height: int, timeout: float = SYNC_TIMEOUT) -> float:
    """Wait until ``client``'s node stands at ``height`` or above; the seconds it took."""
    start = time.monotonic()
    while True:
        head = client.head()["height"]
        if head >= height:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"stuck at {head}, waiting for {height}"
        client.wait_for_block(head, timeout_ms=1000)


def wait_state(client: Client, state: str, timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.call("svm_syncStatus")
        if status["state"] == state:
            return status
        assert time.monotonic() < deadline, f"never {state}: {status}"
        time.sleep(0.05)


def headers(client: Client, first: int, last: int) -> list[Any]:
    """Blocks ``first .. last`` as ``svm_getBlock`` answers (header fields, tx hashes)."""
    found: list[Any] = []
    for at in range(first, last + 1, 200):
        heights = range(at, min(at + 200, last + 1))
        found += client.batch([("svm_getBlock", [h]) for h in heights])
    return found


def assert_same_chain(producer: Client, follower: Client, first: int = 1) -> int:
    """The follower's blocks ``first ..`` its producer's head equal the producer's."""
    height = producer.head()["height"]
    wait_height(follower, height)
    theirs, ours = headers(producer, first, height), headers(follower, first, height)
    for h, (a, b) in enumerate(zip(theirs, ours, strict=True), first):
        assert isinstance(a, dict) and a == b, f"block {h} differs: {a} vs {b}"
    return height


def node_status(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "supervm", "node", "status", "--rpc", url, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        text: str = answer.read().decode()
        return text


def started_following(node: NodeProcess) -> float:
    """When the node last logged that it started following (Unix time)."""
    stamps = [r["ts"] for r in node.log_records() if r.get("msg") == "following"]
    assert stamps and isinstance(stamps[-1], str)
    return datetime.datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp()


def error_records(node: NodeProcess) -> list[dict[str, object]]:
    return [r for r in node.log_records() if r.get("level") == "error"]


def test_reexecute_and_apply_followers_match_the_producer_under_load(tmp_path: Path) -> None:
    producer = NodeProcess(
        rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50"
    )
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload).start()
    wait_height(client, 40)
    # Both followers start behind by 40+ blocks and catch up while the stream goes on.
    at_start = client.head()["height"]
    followers = {
        mode: NodeProcess(
            rocksdb(tmp_path, f"{mode}.db"),
            tmp_path / f"{mode}.log",
            "--follow",
            producer.url,
            "--sync",
            mode,
        )
        for mode in ("reexecute", "apply")
    }
    for mode, follower in followers.items():
        wait_height(follower.client(), at_start)
        seconds = time.time() - started_following(follower)
        print(f"{mode}: {at_start} blocks caught up in {seconds:.2f} s")
    time.sleep(1.0)
    stream.stop()
    for follower in followers.values():
        height = assert_same_chain(client, follower.client())
        status = follower.client().call("svm_syncStatus")
        assert status["state"] == "following" and status["lag"] == 0, status
        assert status["peer"] == producer.url and status["height"] == height
    print(f"{stream.sent} transfers in {height} blocks")
    # Re-executing keeps receipts; applying write sets keeps none.
    sample = stream.hashes[-1]
    mine = followers["reexecute"].client().get_transaction(sample)
    assert mine is not None and mine["receipt"]["status"] == "ok"
    applied = followers["apply"].client().get_transaction(sample)
    assert applied is not None and applied["status"] == "included" and applied["receipt"] is None
    # Every read works on a follower; a transaction is refused: it is read-only.
    reader = followers["apply"].client()
    owner = workload.senders[0].address
    assert reader.nonce(owner) == client.nonce(owner)
    assert reader.get_state(TOKEN, owner) == client.get_state(TOKEN, owner)
    for follower in followers.values():
        balance = follower.client().call_contract(TOKEN, "balance", owner, sender=owner)
        assert balance == client.call_contract(TOKEN, "balance", owner, sender=owner)
        assert balance["status"] == "ok"
    extra = workload.transfers(workload.senders[0], 1, 0)[0]
    for follower in followers.values():
        with pytest.raises(RpcError) as refused:
            follower.client().send_transaction(extra)
        assert refused.value.code == -32012 and refused.value.reason == "read_only"
        assert follower.client().mempool()["count"] == 0
    # Sync status from the command line, metrics and health.
    status = node_status(followers["reexecute"].url)
    assert status["role"] == "follower" and status["lag"] == 0
    assert status["state"] == "following" and status["peer"] == producer.url
    assert node_status(producer.url)["role"] == "producer"
    assert node_status(producer.url)["lag"] == 0
    text = get_text(followers["apply"].url + "/metrics")
    assert f"supervm_sync_height {float(height)}" in text
    assert "supervm_sync_lag_blocks 0.0" in text and "supervm_sync_refused_total 0.0" in text
    assert followers["apply"].health()[0] == 200
    for follower in followers.values():
        assert follower.stop() == 0
        assert not error_records(follower)
    assert producer.stop() == 0


def test_fast_sync_imports_the_snapshot_then_follows(tmp_path: Path) -> None:
    producer = NodeProcess(
        rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50"
    )
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload).start()
    wait_height(client, 32)
    follower = NodeProcess(
        rocksdb(tmp_path, "fast.db"), tmp_path / "fast.log",
        "--follow", producer.url, "--fast-sync", "--data-dir", str(tmp_path / "fast.data"),
    )  # fmt: skip
    imported = [r for r in follower.log_records() if r.get("msg") == "snapshot imported"]
    assert len(imported) == 1
    base = imported[0]["height"]
    assert isinstance(base, int) and base >= 32
    time.sleep(1.0)
    stream.stop()
    mine = follower.client()
    assert_same_chain(client, mine, first=base + 1)
    # At and below the snapshot's height the follower keeps headers only.
    with pytest.raises(RpcError) as pruned:
        mine.get_block(1)
    assert pruned.value.code == -32010
    with pytest.raises(RpcError) as pruned:
        mine.call("svm_getBlockData", 1, True)
    assert pruned.value.code == -32010
    with pytest.raises(RpcError) as pruned:
        mine.get_block(base)
    assert pruned.value.code == -32010
    assert follower.stop() == 0
    # Restarted on its store, it resumes from its head: no second import.
    follower = NodeProcess(
        rocksdb(tmp_path, "fast.db"), tmp_path / "fast.log",
        "--follow", producer.url, "--fast-sync", "--data-dir", str(tmp_path / "fast.data"),
    )  # fmt: skip
    assert len([r for r in follower.log_records() if r.get("msg") == "snapshot imported"]) == 1
    assert_same_chain(client, follower.client(), first=base + 1)
    # A follower of that follower starts from its snapshot (it keeps no block 1 to name
    # the chain by) and follows it as the producer goes on.
    second = NodeProcess(
        rocksdb(tmp_path, "second.db"), tmp_path / "second.log",
        "--follow", follower.url, "--fast-sync", "--sync", "apply",
    )  # fmt: skip
    stream = Stream(client, workload).start()
    wait_height(client, client.head()["height"] + 5)
    stream.stop()
    assert_same_chain(client, follower.client(), first=base + 1)
    second_base = second.log_records()
    assert [r for r in second_base if r.get("msg") == "snapshot imported"]
    assert_same_chain(client, second.client(), first=client.head()["height"])
    assert_same_chain(follower.client(), second.client(), first=follower.client().head()["height"])
    assert second.stop() == 0
    assert follower.stop() == 0
    assert producer.stop() == 0


def test_fast_sync_resumes_an_interrupted_import(tmp_path: Path) -> None:
    producer = start_producer(tmp_path)
    client = producer.client()
    setup_chain(producer, senders=20)
    info = client.call("svm_snapshotInfo")
    path = download_snapshot(client, info, tmp_path / "downloads")
    assert path is not None

    class Crash(Exception):
        pass

    def crash(stage: str, done: int, total: int | None) -> None:
        if stage == "importing":
            raise Crash  # as if the process died after the first chunk's batch

    with supervm.open_storage(rocksdb(tmp_path, "follower.db")) as store:
        with pytest.raises(Crash):
            import_snapshot(path, store, progress=crash)
        report = fast_sync(store, producer.url, tmp_path / "downloads")
        assert report is not None and report.resumed
        assert report.head.height == info["height"]
        assert report.head.block_hash.hex() == info["block_hash"]
        assert not path.exists()
        assert fast_sync(store, producer.url, tmp_path / "downloads") is None  # a chain already
    assert producer.stop() == 0


def test_a_snapshot_download_resumes_from_its_partial_file(tmp_path: Path) -> None:
    producer = NodeProcess(
        rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50"
    )
    client = producer.client()
    setup_chain(producer, senders=20)
    info = client.call("svm_snapshotInfo")
    assert info["height"] == client.head()["height"] and info["size"] > 0
    assert client.call("svm_snapshotInfo") == info  # exported once
    part = 512
    assert download_snapshot(client, info, tmp_path, part_size=part, max_parts=2) is None
    partial = tmp_path / f"{info['id']}.partial"
    assert partial.stat().st_size == 2 * part
    path = download_snapshot(client, info, tmp_path, part_size=part)
    assert path is not None and not partial.exists()
    whole = b"".join(
        base64.b64decode(client.call("svm_snapshotPart", info["id"], at, 1 << 20))
        for at in range(0, info["size"], 1 << 20)
    )
    assert path.read_bytes() == whole and len(whole) == info["size"]
    with supervm.open_storage(rocksdb(tmp_path, "restored.db")) as store:
        report = import_snapshot(path, store)
        assert report.head.height == info["height"]
        assert report.head.block_hash.hex() == info["block_hash"]
        assert report.head.state_root.hex() == info["state_root"]
    with pytest.raises(RpcError) as unknown:
        client.call("svm_snapshotPart", "00" * 32, 0, 10)
    assert unknown.value.code == -32602
    with pytest.raises(RpcError) as too_long:
        client.call("svm_snapshotPart", info["id"], 0, (1 << 20) + 1)
    assert too_long.value.code == -32602
    assert producer.stop() == 0


def test_a_follower_killed_with_9_resumes_and_catches_up(tmp_path: Path) -> None:
    producer = NodeProcess(
        rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50"
    )
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload, per_round=20).start()
    wait_height(client, 60)
    url = rocksdb(tmp_path, "follower.db")
    log = tmp_path / "follower.log"
    follower = NodeProcess(url, log, "--follow", producer.url, "--threads", "1")
    wait_height(follower.client(), 20)
    follower.kill()
    follower = NodeProcess(url, log, "--follow", producer.url)
    resumed = [r for r in follower.log_records() if r.get("msg") == "following"]
    assert len(resumed) == 2 and isinstance(resumed[1]["height"], int)
    assert resumed[1]["height"] >= 20
    time.sleep(0.5)
    stream.stop()
    assert_same_chain(client, follower.client())
    assert follower.stop() == 0
    assert producer.stop() == 0


# -- a lying producer ---------------------------------------------------------------------------


Tamper = Callable[[dict[str, Any]], None]


def tamper_state_root(block: dict[str, Any]) -> None:
    header = BlockHeader.decode(bytes.fromhex(block["header"]))
    lie = dataclasses.replace(header, state_root=bytes(32))
    block["header"] = lie.encode().hex()


def tamper_input(block: dict[str, Any]) -> None:
    tx = Transaction.decode(bytes.fromhex(block["transactions"][0]))
    lie = dataclasses.replace(tx, input=tx.input[:-1] + bytes([tx.input[-1] ^ 1]))
    block["transactions"][0] = lie.encode().hex()


def tampering_proxy(upstream: str, height: int, tamper: Tamper) -> Starlette:
    """Forwards JSON-RPC bodies to ``upstream``, altering block ``height`` in the answers
    to ``svm_getBlockData``."""
    target = urllib.parse.urlsplit(upstream)

    def forward(body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
        try:
            conn.request("POST", "/rpc", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def alter(request: object, answer: object) -> None:
        if not (isinstance(request, dict) and isinstance(answer, dict)):
            return
        if request.get("method") != "svm_getBlockData" or "result" not in answer:
            return
        params = request.get("params")
        asked = params[0] if isinstance(params, list) else (params or {}).get("height")
        if asked == height:
            tamper(answer["result"])

    async def rpc(request: Request) -> Response:
        body = await request.body()
        status, data = await anyio.to_thread.run_sync(forward, body)
        if status == 200 and data:
            message, answers = json.loads(body), json.loads(data)
            if isinstance(message, list) and isinstance(answers, list):
                by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
                for item in message:
                    if isinstance(item, dict):
                        alter(item, by_id.get(item.get("id")))
            else:
                alter(message, answers)
            data = json.dumps(answers).encode()
        return Response(data, status_code=status, media_type="application/json")

    return Starlette(
        routes=[Route("/rpc", rpc, methods=["POST"]), Route("/", rpc, methods=["POST"])]
    )


@pytest.mark.parametrize(
    ("mode", "tamper", "field"),
    [
        ("reexecute", tamper_state_root, "state_root"),
        ("apply", tamper_state_root, "state_root"),
        ("apply", tamper_input, "transactions_root"),
    ],
)
def test_a_lying_producer_is_refused(tmp_path: Path, mode: str, tamper: Tamper, field: str) -> None:
    producer = NodeProcess(
        rocksdb(tmp_path, "producer.db"), tmp_path / "p.log", "--block-time", "50"
    )
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload).start()
    wait_height(client, 12)
    lie = 10
    with BackgroundServer(tampering_proxy(producer.url, lie, tamper)) as proxy:
        follower = NodeProcess(
            rocksdb(tmp_path, "follower.db"), tmp_path / "follower.log",
            "--follow", proxy.url, "--sync", mode, healthy=False,
        )  # fmt: skip
        mine = follower.client()
        status = wait_state(mine, "refused")
        assert status["height"] == lie - 1 and mine.head()["height"] == lie - 1
        assert field in status["error"]
        # It stays refused at the last good block while the producer goes on.
        wait_height(client, lie + 10)
        time.sleep(0.3)
        assert mine.head()["height"] == lie - 1
        assert mine.call("svm_syncStatus")["state"] == "refused"
        code, report = follower.health()
        assert code == 503 and report["ok"] is False
        assert node_status(follower.url)["state"] == "refused"
        errors = error_records(follower)
        assert [(r["height"], r["field"]) for r in errors] == [(lie, field)], errors
        assert "supervm_sync_refused_total 1.0" in get_text(follower.url + "/metrics")
        # Blocks before the lie are the producer's own.
        assert headers(mine, 1, lie - 1) == headers(client, 1, lie - 1)
        assert follower.stop() == 0
    stream.stop()
    assert producer.stop() == 0


def test_edge_and_pruned_followers_and_the_light_profile(tmp_path: Path) -> None:
    producer = start_producer(tmp_path)
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload).start()
    wait_height(client, 5)
    edge = NodeProcess(
        rocksdb(tmp_path, "edge.db"), tmp_path / "edge.log",
        "--follow", producer.url, "--profile", "edge", "--cache", str(4 << 20),
    )  # fmt: skip
    pruned = NodeProcess(
        rocksdb(tmp_path, "pruned.db"), tmp_path / "pruned.log",
        "--follow", producer.url, "--sync", "apply", "--profile", "pruned", "--keep-blocks", "5",
    )  # fmt: skip
    wait_height(client, 30)
    stream.stop()
    assert_same_chain(client, edge.client())
    height = producer.client().head()["height"]
    wait_height(pruned.client(), height)
    owner = workload.senders[0].address
    reader = edge.client()
    for _ in range(3):
        assert reader.get_state(TOKEN, owner) == client.get_state(TOKEN, owner)
    text = get_text(edge.url + "/metrics")
    hits = [line for line in text.splitlines() if line.startswith("supervm_cache_hits_total ")]
    assert hits and float(hits[0].split()[1]) > 0, hits
    assert "supervm_cache_bytes " in text and "supervm_cache_entries " in text
    # The pruned follower drops history beyond its last 5 blocks in the background.
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        try:
            pruned.client().get_state(TOKEN, owner, height=1)
        except RpcError as exc:
            assert exc.code == -32010
            break
        assert time.monotonic() < deadline, "block 1's state was never pruned"
        time.sleep(0.2)
    assert pruned.client().get_state(TOKEN, owner) == client.get_state(TOKEN, owner)
    # A follower started with another chain id refuses the peer at once.
    other = NodeProcess(
        rocksdb(tmp_path, "other.db"), tmp_path / "other.log", "--follow", producer.url,
        chain_id=CHAIN_ID + 1, healthy=False,
    )  # fmt: skip
    status = wait_state(other.client(), "refused")
    assert status["height"] == 0 and "chain_id" in status["error"], status
    assert other.stop() == 0
    for node in (edge, pruned):
        assert node.stop() == 0
    assert producer.stop() == 0
    light = subprocess.run(
        [sys.executable, "-m", "supervm", "node", "--store", rocksdb(tmp_path, "light.db"),
         "--profile", "light"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert light.returncode != 0 and "--follow" in light.stderr
    needs_keep = subprocess.run(
        [sys.executable, "-m", "supervm", "node", "--store", rocksdb(tmp_path, "x.db"),
         "--profile", "pruned"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert needs_keep.returncode != 0 and "--keep-blocks" in needs_keep.stderr


@pytest.mark.parametrize("mode", ["reexecute", "apply"])
def test_follower_catch_up_in_process(tmp_path: Path, mode: str) -> None:
    producer = start_producer(tmp_path)
    client = producer.client()
    workload = setup_chain(producer)
    stream = Stream(client, workload).start()
    wait_height(client, 15)
    stream.stop()
    head = client.head()
    with supervm.open_storage(rocksdb(tmp_path, "follower.db")) as store:
        chain = Chain(store)
        follower = Follower(chain, producer.url, chain_id=CHAIN_ID, mode=mode, batch=4)
        assert follower.catch_up() == head["height"]
        assert follower.catch_up() == 0
        status = follower.status()
        assert (status.height, status.lag, status.state) == (head["height"], 0, "following")
        assert chain.head().block_hash.hex() == head["hash"]
        assert (chain.receipts(head["height"]) is not None) == (mode == "reexecute")
        follower.stop()
        chain.close()
    assert producer.stop() == 0
