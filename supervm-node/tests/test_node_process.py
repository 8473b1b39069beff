"""Real node processes on loopback: thousands of signed transfers from several client
threads checked against a replay, refusals over the wire, kill -9 during production and a
bounded load test."""

from __future__ import annotations

import http.client
import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest

import supervm
from supervm.chain import Chain
from supervm.client import Client, RpcError
from supervm.memory import MemoryStorage
from supervm_node.signing import sign_transaction

from .node_process import CHAIN_ID, TOKEN, NodeProcess, Workload, u64

#: How long a test waits for transactions to be included (a hang, not a timing check).
INCLUDE_TIMEOUT = 120.0


def rocksdb(tmp_path: Path) -> str:
    return f"rocksdb://{tmp_path / 'node.db'}"


def wait_included(client: Client, hashes: list[bytes]) -> dict[bytes, dict[str, object]]:
    """Every one of ``hashes`` as ``svm_getTransaction`` reports it once included."""
    found: dict[bytes, dict[str, object]] = {}
    deadline = time.monotonic() + INCLUDE_TIMEOUT
    waiting = list(hashes)
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} transactions never included"
        answers = client.batch([("svm_getTransaction", [h.hex()]) for h in waiting[:500]])
        for tx_hash, answer in zip(waiting[:500], answers, strict=True):
            assert not isinstance(answer, RpcError), answer
            if answer is not None and answer["status"] == "included":
                found[tx_hash] = answer
        waiting = [h for h in waiting if h not in found]
        if waiting:
            head = client.head()["height"]
            client.wait_for_block(head, timeout_ms=1000)
    return found


def send_all(client: Client, txs: list) -> list[bytes]:
    hashes = []
    for at in range(0, len(txs), 200):
        for answer in client.send_transactions(txs[at : at + 200]):
            assert not isinstance(answer, RpcError), answer
            hashes.append(answer)
    return hashes


def replay_and_compare(store_url: str, workload: Workload) -> int:
    """Re-execute every committed block on a fresh chain: equal headers; balances as
    the workload implies; every receipt ok. The height checked."""
    with supervm.open_storage(store_url) as store:
        chain = Chain(store, threads=1)
        replay = Chain(MemoryStorage(), threads=1)
        height = chain.head().height
        assert height > 0
        for h in range(1, height + 1):
            block = chain.block(h)
            assert block is not None
            result = replay.apply(block, mode="sequential")
            assert result.header == chain.header(h), f"block {h} differs from its replay"
            receipts = chain.receipts(h)
            assert receipts is not None and all(r.ok for r in receipts), receipts
        assert replay.head() == chain.head()
        for address, expected in workload.balances.items():
            receipt = chain.runtime.run(TOKEN, "balance", address, sender=address, view=store)
            assert receipt.ok
            assert int.from_bytes(receipt.return_data, "little") == expected
        chain.close()
        replay.close()
        return height


def test_signed_transfers_from_client_threads_match_a_replay(tmp_path: Path) -> None:
    url = rocksdb(tmp_path)
    node = NodeProcess(url, tmp_path / "node.log", "--block-time", "50")
    workload = Workload(senders=8)
    client = node.client()
    setup = send_all(client, workload.setup())
    wait_included(client, setup[-1:])
    per_sender = 300
    batches = [
        workload.transfers(key, per_sender, seed) for seed, key in enumerate(workload.senders)
    ]
    hashes: list[list[bytes]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def send(thread: int) -> None:
        try:
            with node.client() as mine:
                for txs in batches[thread * 2 : thread * 2 + 2]:
                    for at in range(0, len(txs), 50):
                        hashes[thread] += send_all(mine, txs[at : at + 50])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    sent = [h for part in hashes for h in part]
    assert len(sent) == 8 * per_sender
    included = wait_included(client, sent)
    assert all(info["receipt"]["status"] == "ok" for info in included.values())
    # Each sender's transactions are in nonce order along the chain.
    for txs in batches:
        places = [(included[tx.hash]["height"], included[tx.hash]["index"]) for tx in txs]
        assert places == sorted(places)
    for key in workload.keys:
        assert client.nonce(key.address)["nonce"] == workload.nonces[key.address]
    assert node.stop() == 0
    assert any(r.get("msg") == "node stopped" for r in node.log_records())
    assert replay_and_compare(url, workload) >= 2


def test_refusals_over_the_wire_change_nothing(tmp_path: Path) -> None:
    node = NodeProcess(rocksdb(tmp_path), tmp_path / "node.log", "--block-time", "50")
    workload = Workload(senders=2)
    client = node.client()
    setup = send_all(client, workload.setup())
    wait_included(client, setup[-1:])
    sender = workload.senders[0]
    good = workload.transfers(sender, 1, 0)[0]
    (good_hash,) = send_all(client, [good])
    wait_included(client, [good_hash])

    def state() -> tuple[object, ...]:
        return client.head(), client.mempool()["count"], client.nonce(sender.address)

    before = state()
    forged = good.with_signature(bytes(64))
    replay_tx = sign_transaction(
        sender, chain_id=CHAIN_ID, nonce=good.nonce or 0, contract=TOKEN, method="transfer",
        input=workload.senders[1].address + u64(5),
    )  # fmt: skip
    other_chain = sign_transaction(
        sender, chain_id=CHAIN_ID + 1, nonce=workload.nonces[sender.address], contract=TOKEN,
        method="transfer", input=workload.senders[1].address + u64(5),
    )  # fmt: skip
    for tx, reason in (
        (forged, "bad_signature"),
        (good, "duplicate"),
        (replay_tx, "nonce_too_low"),
        (other_chain, "wrong_chain"),
    ):
        with pytest.raises(RpcError) as refused:
            client.send_transaction(tx)
        assert refused.value.reason == reason
    with pytest.raises(RpcError) as unknown:
        client.call("svm_noSuchMethod")
    assert unknown.value.code == -32601

    def raw(body: bytes) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        conn.request("POST", "/rpc", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        status, data = answer.status, answer.read()
        conn.close()
        return status, json.loads(data)

    status, answer = raw(b'{"jsonrpc": "2.0", "method": "svm_head", "id": 1')
    assert answer["error"]["code"] == -32700
    status, answer = raw(
        b'{"jsonrpc":"2.0","method":"svm_head","id":1,"pad":"' + b"x" * (2 << 20) + b'"}'
    )
    assert status == 413 and answer["error"]["code"] == -32600
    assert state() == before
    assert node.stop(sig=signal.SIGINT) == 0  # Ctrl-C stops it cleanly too


def test_kill_9_during_production_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    url = rocksdb(tmp_path)
    log = tmp_path / "node.log"
    workload = Workload(senders=6)
    node = NodeProcess(url, log, "--block-time", "20", "--max-block-txs", "100")
    client = node.client()
    wait_included(client, send_all(client, workload.setup())[-1:])
    pending = {
        key.address: workload.transfers(key, 400, i) for i, key in enumerate(workload.senders)
    }
    acknowledged: dict[bytes, tuple[int, str]] = {}
    for round_ in range(2):
        stop = threading.Event()

        def send(client: Client = client, stop: threading.Event = stop) -> None:
            with client:
                for at in range(0, 400, 20):
                    for txs in pending.values():
                        if stop.is_set():
                            return
                        try:
                            client.send_transactions(txs[at : at + 20])
                        except (RpcError, OSError):
                            return

        sender_thread = threading.Thread(target=send)
        sender_thread.start()
        # Acknowledgements: what the node said was included before it died.
        deadline = time.monotonic() + rng.uniform(0.5, 2.0)
        watcher = node.client()
        while time.monotonic() < deadline:
            watched = [tx.hash for txs in pending.values() for tx in txs]
            for at in range(0, len(watched), 500):
                for tx_hash, answer in zip(
                    watched[at : at + 500],
                    watcher.batch(
                        [("svm_getTransaction", [h.hex()]) for h in watched[at : at + 500]]
                    ),
                    strict=True,
                ):
                    if isinstance(answer, dict) and answer["status"] == "included":
                        acknowledged[tx_hash] = (answer["height"], answer["block_hash"])
        node.kill()
        stop.set()
        sender_thread.join()
        assert acknowledged, "nothing was included before the kill"
        node = NodeProcess(url, log, "--block-time", "20", "--max-block-txs", "100")
        client = node.client()
        # Everything acknowledged is still there, in the same block.
        for tx_hash, (height, block_hash) in acknowledged.items():
            info = client.get_transaction(tx_hash)
            assert info is not None and info["status"] == "included", tx_hash.hex()
            assert (info["height"], info["block_hash"]) == (height, block_hash)
        print(f"round {round_}: {len(acknowledged)} acknowledged, head {client.head()['height']}")
    # The chain continues: the transactions not included are sent again and land.
    rest = []
    for key in workload.senders:
        used = client.nonce(key.address)["nonce"]
        rest += [tx for tx in pending[key.address] if (tx.nonce or 0) >= used]
    wait_included(client, send_all(client, rest))
    assert node.stop() == 0
    replay_and_compare(url, workload)


def test_bounded_load_reports_sustained_throughput(tmp_path: Path) -> None:
    """A fixed count of transfers, sent for at most a fixed duration by 4 client threads."""
    count, duration = 4000, 20.0
    url = rocksdb(tmp_path)
    node = NodeProcess(url, tmp_path / "node.log", "--block-time", "100")
    workload = Workload(senders=8)
    client = node.client()
    wait_included(client, send_all(client, workload.setup())[-1:])
    plan = [workload.transfers(key, count // 8, i) for i, key in enumerate(workload.senders)]
    sent: list[list[bytes]] = [[] for _ in range(4)]
    start = time.perf_counter()
    end = start + duration

    def send(part: int) -> None:
        with node.client() as mine:
            for txs in plan[part * 2 : part * 2 + 2]:
                for at in range(0, len(txs), 100):
                    if time.perf_counter() > end:
                        return
                    sent[part] += send_all(mine, txs[at : at + 100])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hashes = [h for part in sent for h in part]
    included = wait_included(client, hashes)
    elapsed = time.perf_counter() - start
    assert len(included) == len(hashes) > 0
    assert all(info["receipt"]["status"] == "ok" for info in included.values())
    rate = len(hashes) / elapsed
    print(f"\nload: {len(hashes)} signed transfers in {elapsed:.2f} s: {rate:,.0f} tx/s")
    assert node.stop() == 0
