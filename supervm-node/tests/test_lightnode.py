"""The light profile as a process: ``supervm node --profile light`` on SQLite follows a
producer's headers, answers verified reads, resumes after kill -9, and stops following a
peer that lies about a header."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from supervm.client import Client, RpcError
from supervm_node.rpc import BackgroundServer

from .node_process import TOKEN, NodeProcess, Workload
from .test_light import Proxy

#: How long a test waits for the light node to reach a height (a hang, not a timing check).
WAIT = 60.0


def wait_height(client: Client, height: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        head: dict[str, Any] = client.head()
        if head["height"] >= height:
            return head
        assert time.monotonic() < deadline, f"stuck at {head['height']}, waiting for {height}"
        time.sleep(0.05)


def stream(producer: NodeProcess, workload: Workload, rounds: int) -> None:
    with producer.client() as client:
        for round_ in range(rounds):
            txs = [tx for i, key in enumerate(workload.senders)
                   for tx in workload.transfers(key, 5, round_ * 10 + i)]  # fmt: skip
            for answer in client.send_transactions(txs):
                assert isinstance(answer, bytes), answer
            time.sleep(0.05)


def wait_included(workload: Workload, client: Client) -> None:
    """Until the chain's nonce of every key is the workload's: all it signed is included."""
    deadline = time.monotonic() + WAIT
    for key in workload.keys:
        while client.nonce(key.address)["nonce"] < workload.nonces[key.address]:
            assert time.monotonic() < deadline, "transactions not included"
            time.sleep(0.05)


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_light_node_follows_verifies_and_resumes(tmp_path: Path) -> None:
    producer = NodeProcess(f"rocksdb://{tmp_path}/p.db", tmp_path / "p.log", "--block-time", "30")
    workload = Workload(senders=4)
    pc = producer.client()
    for answer in pc.send_transactions(workload.setup()):
        assert isinstance(answer, bytes)
    store = f"sqlite:///{tmp_path}/light.db"
    light = NodeProcess(store, tmp_path / "l.log", "--profile", "light", "--follow", producer.url)
    sender = threading.Thread(target=stream, args=(producer, workload, 20))
    sender.start()
    lc = light.client()
    sender.join()
    wait_included(workload, pc)
    final = pc.head()
    head = wait_height(lc, final["height"])
    assert head["hash"] == final["hash"]
    for height in range(1, final["height"] + 1):
        mine, theirs = lc.get_block(height), pc.get_block(height)
        assert mine is not None and theirs is not None
        assert mine["hash"] == theirs["hash"] and mine["state_root"] == theirs["state_root"]
    for key in workload.senders:
        answer = lc.get_state(TOKEN, b"bal/" + key.address)
        assert answer["verified"] is True
        assert answer["value"] == pc.get_state(TOKEN, b"bal/" + key.address)["value"]
        old = lc.get_state(TOKEN, b"bal/" + key.address, height=2)
        assert old["value"] == pc.get_state(TOKEN, b"bal/" + key.address, height=2)["value"]
    with pytest.raises(RpcError) as above:
        lc.get_state(TOKEN, b"bal/" + workload.senders[0].address, height=final["height"] + 50)
    assert above.value.code == -32011
    with pytest.raises(RpcError) as unknown:
        lc.call("svm_sendTransaction", "00")
    assert unknown.value.code == -32601
    status = lc.call("svm_syncStatus")
    assert status["role"] == "light" and status["lag"] == 0 and status["state"] == "following"
    code, report = health(light.url)
    assert code == 200 and report["ok"] is True
    with urllib.request.urlopen(light.url + "/metrics", timeout=10) as page:
        metrics = page.read().decode()
    assert "supervm_light_proofs_verified_total" in metrics
    # kill -9, more blocks, restart: it resumes at its height and catches up.
    light.kill()
    stream(producer, workload, 5)
    wait_included(workload, pc)
    light = NodeProcess(store, tmp_path / "l.log", "--profile", "light", "--follow", producer.url)
    lc = light.client()
    target = pc.head()
    assert wait_height(lc, target["height"])["hash"] == pc.get_block(lc.head()["height"])["hash"]
    assert light.stop() == 0
    assert producer.stop() == 0


def test_a_light_node_stops_following_a_peer_that_lies_about_a_header(tmp_path: Path) -> None:
    producer = NodeProcess(f"rocksdb://{tmp_path}/p.db", tmp_path / "p.log", "--block-time", "30")
    workload = Workload(senders=2)
    pc = producer.client()
    for answer in pc.send_transactions(workload.setup()):
        assert isinstance(answer, bytes)
    stream(producer, workload, 6)
    wait_included(workload, pc)
    honest = pc.head()["height"]
    assert honest >= 3
    lie_at = honest  # the head's header is altered: its hash no longer matches its fields

    proxy = Proxy(producer.port)

    def tamper(request: dict[str, Any], answer: dict[str, Any]) -> None:
        result = answer.get("result")
        if (
            request["method"] == "svm_getBlock"
            and isinstance(result, dict)
            and result["height"] == lie_at
        ):
            result["state_root"] = "ab" * 32

    proxy.tamper = tamper
    with BackgroundServer(proxy.app()) as server:
        store = f"sqlite:///{tmp_path}/light.db"
        light = NodeProcess(
            store, tmp_path / "l.log", "--profile", "light", "--follow", server.url, healthy=False
        )
        lc = light.client()
        deadline = time.monotonic() + WAIT
        while lc.call("svm_syncStatus")["state"] != "refused":
            assert time.monotonic() < deadline, "the lie was not refused"
            time.sleep(0.05)
        assert lc.head()["height"] < lie_at
        code, report = health(light.url)
        assert code == 503 and not report["ok"] and "hash" in (report["error"] or "")
        assert light.stop() == 0
    assert producer.stop() == 0
