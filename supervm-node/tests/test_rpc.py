"""The node's JSON-RPC API (docs/rpc.md) over real HTTP: a real node served by uvicorn.

One node (chain 7, 50 ms blocks) serves most tests: a token is deployed, minted and
transferred once, and every method and every refusal is checked against it. Nodes of
their own cover what needs other settings (pruning, a small mempool, a stopped producer).
"""

from __future__ import annotations

import http.client
import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervm import open_storage
from supervm.chain import Transaction
from supervm.chain.workload import token_code
from supervm.client import Client, RpcError, verify_state_proof
from supervm.layout import header_key
from supervm.vm.runtime import DEPLOY_ADDRESS, DEPLOY_METHOD, contract_address, deploy_input
from supervm_node.keys import KeyPair
from supervm_node.mempool import MempoolLimits
from supervm_node.node import Node
from supervm_node.rpc import BackgroundServer, create_app
from supervm_node.signing import sign_transaction

CHAIN_ID = 7
SALT = b"rpc-tests"


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


@dataclass
class Env:
    node: Node
    server: BackgroundServer
    client: Client
    alice: KeyPair
    bob: KeyPair
    token: bytes
    #: The hashes of the deploy, the mint and the transfer, in order.
    hashes: list[bytes]
    nonces: dict[bytes, int]

    def sign(self, key: KeyPair, method: str, input: bytes, **kw: Any) -> Transaction:
        """A token call from ``key`` with its next nonce (which it then counts as used)."""
        nonce = kw.pop("nonce", None)
        if nonce is None:
            nonce = self.nonces.get(key.address, 0)
            self.nonces[key.address] = nonce + 1
        return sign_transaction(
            key,
            chain_id=kw.pop("chain_id", CHAIN_ID),
            nonce=nonce,
            contract=kw.pop("contract", self.token),
            method=method,
            input=input,
            **kw,
        )

    def balance(self, who: bytes) -> int:
        receipt = self.client.call_contract(self.token, "balance", who)
        assert receipt["status"] == "ok", receipt
        return int.from_bytes(bytes.fromhex(receipt["return_data"]), "little")


def _deploy(key: KeyPair, nonce: int = 0, salt: bytes = SALT) -> tuple[Transaction, bytes]:
    code = token_code()
    tx = sign_transaction(
        key,
        chain_id=CHAIN_ID,
        nonce=nonce,
        contract=DEPLOY_ADDRESS,
        method=DEPLOY_METHOD,
        input=deploy_input(code, salt),
    )
    return tx, contract_address(code, salt)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    node = Node(open_storage("memory://"), chain_id=CHAIN_ID, block_time_ms=50)
    alice, bob = KeyPair.generate(), KeyPair.generate()
    with BackgroundServer(create_app(node)) as server:
        client = Client(server.url)
        deploy, token = _deploy(alice)
        e = Env(node, server, client, alice, bob, token, [], {alice.address: 1})
        mint = e.sign(alice, "mint", alice.address + u64(1000))
        transfer = e.sign(alice, "transfer", bob.address + u64(250))
        for tx in (deploy, mint, transfer):  # one block each: heights 1, 2 and 3
            e.hashes.append(client.send_transaction(tx))
            info = client.wait_for_receipt(e.hashes[-1], timeout=30)
            assert info["receipt"]["status"] == "ok", info
        assert client.head()["height"] == 3
        yield e
        client.close()


def post(server: BackgroundServer, body: bytes, path: str = "/rpc") -> tuple[int, Any]:
    """POST raw bytes; the HTTP status and the decoded JSON answer (None: no content)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def get(server: BackgroundServer, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def request(method: str, params: object = None, id_: object = 1) -> dict[str, object]:
    out: dict[str, object] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        out["params"] = params
    return out


def rpc_error(env: Env, method: str, /, *params: object, **named: object) -> RpcError:
    with pytest.raises(RpcError) as caught:
        env.client.call(method, *params, **named)
    return caught.value


@pytest.fixture
def unchanged(env: Env) -> Iterator[None]:
    """The test refuses things: the head, the mempool and the nonces stay as they were."""
    head, mempool = env.client.head(), env.client.mempool()
    nonces = [env.client.nonce(k.address) for k in (env.alice, env.bob)]
    balances = [env.balance(k.address) for k in (env.alice, env.bob)]
    yield
    assert env.client.head() == head
    assert env.client.mempool() == mempool
    assert [env.client.nonce(k.address) for k in (env.alice, env.bob)] == nonces
    assert [env.balance(k.address) for k in (env.alice, env.bob)] == balances


# -- methods ---------------------------------------------------------------------------------


def test_chain_id_head_mempool_and_status(env: Env) -> None:
    client = env.client
    assert client.chain_id() == CHAIN_ID
    head = client.head()
    assert set(head) == {"height", "hash", "state_root", "timestamp"}
    assert head["height"] >= 1
    header = env.node.chain.header(head["height"])
    assert header is not None
    assert head["hash"] == header.hash.hex() and head["state_root"] == header.state_root.hex()
    assert head["timestamp"] == header.timestamp
    assert client.mempool() == {
        "count": 0,
        "bytes": 0,
        "max_count": env.node.mempool.max_count,
        "max_bytes": env.node.mempool.max_bytes,
    }
    status = client.status()
    assert status["chain_id"] == CHAIN_ID and status["head"] == head
    assert status["mempool"] == client.mempool()
    recent = status["recent_blocks"]
    assert [b["height"] for b in recent] == list(range(head["height"], 0, -1))[:10]
    assert recent[0]["hash"] == head["hash"]


def test_the_token_was_deployed_minted_and_transferred(env: Env) -> None:
    assert env.balance(env.alice.address) == 750
    assert env.balance(env.bob.address) == 250
    receipt = env.client.call_contract(env.token, "balance", b"\x0c" * 20)
    assert receipt["return_data"] == u64(0).hex()
    deploy = env.client.get_transaction(env.hashes[0])
    assert deploy is not None
    assert deploy["receipt"]["return_data"] == env.token.hex()


def test_svm_call_runs_at_a_height_and_changes_nothing(env: Env, unchanged: None) -> None:
    before = env.client.call_contract(env.token, "balance", env.bob.address, height=2)
    assert before["return_data"] == u64(0).hex()
    at_deploy = env.client.call_contract(env.token, "balance", env.alice.address, height=1)
    assert at_deploy["return_data"] == u64(0).hex()
    # A transfer as a read-only call: ok, with events, and no balance moves.
    call = env.client.call_contract(
        env.token, "transfer", env.bob.address + u64(5), sender=env.alice.address
    )
    assert call["status"] == "ok" and call["gas_used"] > 0 and call["error"] is None
    assert set(call) == {"status", "return_data", "gas_used", "error", "events"}
    # Named params and a gas limit too small to run.
    starved = env.client.call(
        "svm_call", contract=env.token.hex(), method="balance", input="0X" + "AB" * 20,
        gas_limit=1,
    )  # fmt: skip
    assert starved["status"] != "ok"


def test_get_transaction_reports_an_included_transaction(env: Env) -> None:
    info = env.client.get_transaction(env.hashes[2])
    assert info is not None
    assert info["hash"] == env.hashes[2].hex() and info["status"] == "included"
    block = env.client.get_block(info["height"])
    assert block is not None and info["block_hash"] == block["hash"]
    assert block["transactions"][info["index"]] == info["hash"]
    tx = info["transaction"]
    assert tx["sender"] == env.alice.address.hex()
    assert tx["public_key"] == env.alice.public_key.hex()
    assert (tx["chain_id"], tx["nonce"], tx["method"]) == (CHAIN_ID, 2, "transfer")
    assert tx["contract"] == env.token.hex()
    assert tx["input"] == (env.bob.address + u64(250)).hex()
    assert len(bytes.fromhex(tx["signature"])) == 64 and tx["owned"] is False
    assert set(info["receipt"]) == {"status", "return_data", "gas_used", "error", "events"}
    # Hashes in any case, with or without 0x.
    upper = env.client.call("svm_getTransaction", "0x" + env.hashes[2].hex().upper())
    assert upper == info
    assert env.client.get_transaction(b"\x00" * 32) is None


def test_get_block_by_height_and_by_hash_with_and_without_transactions(env: Env) -> None:
    height = 1  # the deploy's block
    header = env.node.chain.header(height)
    assert header is not None
    by_height = env.client.get_block(height)
    assert by_height is not None
    assert by_height == {**header.to_json(), "transactions": [env.hashes[0].hex()]}
    by_hash = env.client.get_block(header.hash)
    assert by_hash == by_height
    full = env.client.get_block(header.hash, full=True)
    assert full is not None
    assert [t["hash"] for t in full["transactions"]] == by_height["transactions"]
    assert full["transactions"][0]["method"] == DEPLOY_METHOD
    assert env.client.get_block(0) is None
    assert env.client.get_block(10**9) is None
    assert env.client.get_block(b"\x11" * 32) is None


def test_get_state_gives_values_and_proofs_a_light_client_checks(env: Env) -> None:
    head = env.client.head()
    root = bytes.fromhex(head["state_root"])
    key = b"bal/" + env.bob.address
    plain = env.client.get_state(env.token, key)
    assert plain == {"height": head["height"], "state_root": head["state_root"],
                     "value": u64(250).hex()}  # fmt: skip
    proved = env.client.get_state(env.token, key, proof=True)
    assert {k: proved[k] for k in plain} == plain
    assert verify_state_proof(proved, env.token, key, root)
    assert not verify_state_proof(proved, env.token, key, b"\x01" * 32)
    assert not verify_state_proof(proved, env.token, b"bal/" + env.alice.address, root)
    absent = env.client.get_state(env.token, b"bal/" + b"\x0d" * 20, proof=True)
    assert absent["value"] is None
    assert verify_state_proof(absent, env.token, b"bal/" + b"\x0d" * 20, root)
    # At an earlier height: bob had nothing before the transfer's block.
    transfer_height = 3
    before = env.client.get_state(env.token, key, height=transfer_height - 1, proof=True)
    assert before["value"] is None and before["height"] == transfer_height - 1
    block = env.client.get_block(transfer_height - 1)
    assert block is not None and before["state_root"] == block["state_root"]
    assert verify_state_proof(before, env.token, key, bytes.fromhex(block["state_root"]))


def test_get_nonce_gives_the_chains_and_the_mempools_next_nonce(env: Env) -> None:
    assert env.client.nonce(env.alice.address) == {"nonce": 3, "next": 3}
    assert env.client.nonce(b"\x0e" * 20) == {"nonce": 0, "next": 0}


def test_wait_for_block_returns_on_a_new_block(env: Env) -> None:
    start_height = env.client.head()["height"]
    answer: dict[str, Any] = {}

    def wait() -> None:
        with Client(env.server.url) as other:
            started = time.monotonic()
            answer["head"] = other.wait_for_block(start_height, timeout_ms=20_000)
            answer["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    tx = env.sign(env.alice, "transfer", env.bob.address + u64(1))
    tx_hash = env.client.send_transaction(tx)
    waiter.join(30)
    assert not waiter.is_alive()
    assert answer["head"]["height"] > start_height and answer["seconds"] < 15
    assert env.client.wait_for_receipt(tx_hash)["height"] == start_height + 1
    assert env.balance(env.bob.address) == 251


def test_wait_for_block_returns_the_head_at_its_timeout(env: Env) -> None:
    head = env.client.head()
    started = time.monotonic()
    assert env.client.wait_for_block(head["height"], timeout_ms=200) == head
    assert time.monotonic() - started >= 0.2
    assert env.client.wait_for_block(head["height"] - 1, timeout_ms=20_000) == head


def test_a_pending_transaction_and_a_full_mempool() -> None:
    node = Node(open_storage("memory://"), chain_id=CHAIN_ID, mempool=MempoolLimits(max_count=2))
    key = KeyPair.generate()
    # Not started: the producer cuts no block, so what is sent stays pending.
    with BackgroundServer(create_app(node), lifespan="off") as server, Client(server.url) as c:
        deploy, token = _deploy(key)
        first = c.send_transaction(deploy)
        info = c.get_transaction(first)
        assert info is not None and info["status"] == "pending"
        assert (info["height"], info["index"], info["block_hash"], info["receipt"]) == (None,) * 4
        assert info["transaction"]["hash"] == first.hex()
        mint = sign_transaction(key, chain_id=CHAIN_ID, nonce=1, contract=token,
                                method="mint", input=key.address + u64(5))  # fmt: skip
        c.send_transaction(mint)
        assert c.nonce(key.address) == {"nonce": 0, "next": 2}
        assert c.mempool()["count"] == 2
        third = sign_transaction(key, chain_id=CHAIN_ID, nonce=2, contract=token,
                                 method="mint", input=key.address + u64(5))  # fmt: skip
        with pytest.raises(RpcError) as caught:
            c.send_transaction(third)
        assert (caught.value.code, caught.value.reason) == (-32001, "mempool_full")
        assert c.mempool()["count"] == 2 and c.get_transaction(third.hash) is None
        status, health = get(server, "/health")[0], json.loads(get(server, "/health")[2])
        assert status == 503 and health["ok"] is False
        assert c.head()["height"] == 0


def test_the_app_starts_and_stops_its_node() -> None:
    node = Node(open_storage("memory://"), chain_id=CHAIN_ID, block_time_ms=50)
    assert not node.producing
    with BackgroundServer(create_app(node)) as server:
        assert node.producing
        status, _, body = get(server, "/health")
        assert status == 200 and json.loads(body)["ok"] is True
    assert not node.producing


# -- HTTP ------------------------------------------------------------------------------------


def test_post_to_root_speaks_jsonrpc_too(env: Env) -> None:
    status, answer = post(env.server, json.dumps(request("svm_chainId")).encode(), path="/")
    assert status == 200 and answer == {"jsonrpc": "2.0", "id": 1, "result": CHAIN_ID}


def test_get_root_serves_the_status_page(env: Env, tmp_path: Path) -> None:
    status, content_type, body = get(env.server, "/")
    assert status == 200 and content_type.startswith("text/html") and b"<html" in body.lower()
    page = tmp_path / "page.html"
    page.write_text("<html><body>a page of our own</body></html>")
    app = create_app(env.node, status_page=page)
    with BackgroundServer(app, lifespan="off") as other:
        status, content_type, body = get(other, "/")
        assert status == 200 and b"a page of our own" in body
    app = create_app(env.node, status_page=tmp_path / "missing.html")
    with BackgroundServer(app, lifespan="off") as other:
        assert get(other, "/")[0] == 404


def test_metrics_count_requests_by_method_and_outcome(env: Env) -> None:
    env.client.chain_id()
    with pytest.raises(RpcError):
        env.client.call("svm_nothing")
    with pytest.raises(RpcError):
        env.client.send_transaction(b"\xff")
    status, content_type, body = get(env.server, "/metrics")
    text = body.decode()
    assert status == 200 and content_type.startswith("text/plain")
    assert 'supervm_rpc_requests_total{method="svm_chainId",outcome="ok"}' in text
    assert 'supervm_rpc_requests_total{method="unknown",outcome="method_not_found"}' in text
    assert (
        'supervm_rpc_requests_total{method="svm_sendTransaction",outcome="invalid_params"}' in text
    )
    assert 'supervm_rpc_request_seconds_count{method="svm_chainId"}' in text
    assert 'supervm_rpc_http_requests_total{path="/rpc",status="200"}' in text


def test_health_is_200_while_the_node_produces(env: Env) -> None:
    status, content_type, body = get(env.server, "/health")
    health = json.loads(body)
    assert status == 200 and content_type == "application/json"
    assert health["ok"] is True and health["producing"] is True
    assert health["height"] == env.client.head()["height"]


def test_notifications_get_no_answer(env: Env) -> None:
    note = {"jsonrpc": "2.0", "method": "svm_chainId"}
    assert post(env.server, json.dumps(note).encode()) == (204, None)
    assert post(env.server, json.dumps([note, note]).encode()) == (204, None)
    status, answer = post(env.server, json.dumps([note, request("svm_chainId", id_="a")]).encode())
    assert status == 200 and answer == [{"jsonrpc": "2.0", "id": "a", "result": CHAIN_ID}]


def test_a_batch_answers_each_request_by_id(env: Env) -> None:
    batch = [request("svm_chainId", id_=1), request("svm_nothing", id_=2), 5,
             request("svm_getNonce", [env.bob.address.hex()], id_=3)]  # fmt: skip
    status, answer = post(env.server, json.dumps(batch).encode())
    assert status == 200 and len(answer) == 4
    assert answer[0]["result"] == CHAIN_ID
    assert answer[1]["error"]["code"] == -32601 and answer[1]["id"] == 2
    assert answer[2]["error"]["code"] == -32600 and answer[2]["id"] is None
    assert answer[3]["result"] == {"nonce": 0, "next": 0}


# -- errors ----------------------------------------------------------------------------------


def test_malformed_json_is_a_parse_error(env: Env) -> None:
    status, answer = post(env.server, b'{"jsonrpc": "2.0", "method": ')
    assert status == 200
    assert answer["id"] is None and answer["error"]["code"] == -32700


@pytest.mark.parametrize(
    "body",
    [
        b"5",
        b'"svm_chainId"',
        b"null",
        b'{"id": 1, "method": "svm_chainId"}',
        b'{"jsonrpc": "1.0", "id": 1, "method": "svm_chainId"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "svm_chainId", "params": 5}',
        b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "svm_chainId"}',
    ],
)
def test_what_is_not_a_request_object_is_an_invalid_request(env: Env, body: bytes) -> None:
    status, answer = post(env.server, body)
    assert status == 200 and answer["error"]["code"] == -32600


def test_an_empty_batch_is_an_invalid_request(env: Env) -> None:
    status, answer = post(env.server, b"[]")
    assert (
        status == 200
        and answer["error"]["code"] == -32600
        and "empty" in answer["error"]["message"]
    )


def test_a_batch_too_long_gets_one_error_and_nothing_runs(env: Env, unchanged: None) -> None:
    tx = env.sign(
        env.alice, "transfer", env.bob.address + u64(1), nonce=env.nonces[env.alice.address]
    )
    batch = [request("svm_sendTransaction", [tx.encode().hex()], id_=0)]
    batch += [request("svm_chainId", id_=i) for i in range(1, 1001)]
    status, answer = post(env.server, json.dumps(batch).encode())
    assert status == 200 and isinstance(answer, dict)
    assert answer["error"]["code"] == -32600 and "1000" in answer["error"]["message"]
    assert env.client.get_transaction(tx.hash) is None
    with BackgroundServer(create_app(env.node, max_batch=2), lifespan="off") as small:
        refused = Client(small.url)
        with pytest.raises(RpcError, match="at most 2"):
            refused.batch([("svm_chainId", [])] * 3)
        assert refused.batch([("svm_chainId", [])] * 2) == [CHAIN_ID, CHAIN_ID]


def test_a_body_over_the_limit_is_refused_with_413_unread(env: Env, unchanged: None) -> None:
    tx = env.sign(
        env.alice, "transfer", env.bob.address + u64(1), nonce=env.nonces[env.alice.address]
    )
    body = json.dumps(request("svm_sendTransaction", [tx.encode().hex()])).encode()
    body += b" " * (2 << 20)  # valid JSON of 2 MiB
    status, answer = post(env.server, body)
    assert status == 413
    assert answer["error"]["code"] == -32600 and str(1 << 20) in answer["error"]["message"]
    assert env.client.get_transaction(tx.hash) is None
    # Without a Content-Length (chunked): refused once the limit is passed.
    conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        chunks = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
        conn.request("POST", "/rpc", chunks, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == -32600
    finally:
        conn.close()


def test_an_unknown_method_is_named_in_its_error(env: Env) -> None:
    error = rpc_error(env, "svm_mintMoney", 1)
    assert error.code == -32601 and "svm_mintMoney" in error.message


@pytest.mark.parametrize(
    ("method", "params", "named", "words"),
    [
        ("svm_getTransaction", [], {}, ["'hash'", "missing"]),
        ("svm_getTransaction", ["xyz"], {}, ["'hash'", "not hex"]),
        ("svm_getTransaction", ["abc"], {}, ["'hash'", "not hex"]),
        ("svm_getTransaction", ["ab cd"], {}, ["'hash'", "not hex"]),
        ("svm_getTransaction", ["abcd"], {}, ["'hash'", "32 bytes"]),
        ("svm_getTransaction", [5], {}, ["'hash'", "hex string"]),
        ("svm_getTransaction", [], {"hash": "00" * 32, "full": True}, ["unknown", "'full'"]),
        ("svm_getTransaction", ["00" * 32, 1], {}, ["at most 1"]),
        ("svm_getBlock", [True], {}, ["'block'", "height"]),
        ("svm_getBlock", [-1], {}, ["'block'", ">= 0"]),
        ("svm_getBlock", [1, "yes"], {}, ["'full'", "true or false"]),
        ("svm_getState", ["00" * 20], {}, ["'key'", "missing"]),
        ("svm_getState", ["00" * 20, "00", 1.5], {}, ["'height'", "integer"]),
        ("svm_call", ["00" * 20, 7], {}, ["'method'", "string"]),
        ("svm_call", [], {"contract": "00" * 20, "method": "m", "sender": "00"}, ["'sender'"]),
        ("svm_getNonce", ["00" * 19], {}, ["'address'", "20 bytes"]),
        ("svm_waitForBlock", [1, 30_001], {}, ["'timeout_ms'", "30000"]),
        ("svm_waitForBlock", ["1"], {}, ["'after'", "integer"]),
        ("svm_sendTransaction", [], {}, ["'tx'", "missing"]),
        ("svm_sendTransaction", ["0x02ff"], {}, ["'tx'", "not a transaction"]),
        ("svm_sendTransaction", ["09"], {}, ["'tx'", "not a transaction"]),
    ],
)
def test_bad_params_are_named_in_their_error(
    env: Env, method: str, params: list[object], named: dict[str, object], words: list[str]
) -> None:
    error = rpc_error(env, method, *params, **named)
    assert error.code == -32602
    for word in words:
        assert word in error.message


def test_a_forged_signature_is_refused(env: Env, unchanged: None) -> None:
    tx = env.sign(
        env.alice, "transfer", env.bob.address + u64(100), nonce=env.nonces[env.alice.address]
    )
    forged = tx.with_signature(bytes([tx.signature[0] ^ 1]) + tx.signature[1:])
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(forged)
    assert (caught.value.code, caught.value.reason) == (-32006, "bad_signature")
    # Another's signature over the same call: the key does not match.
    mallory = KeyPair.generate()
    stolen = Transaction(
        tx.contract, tx.method, tx.input, gas_limit=tx.gas_limit, nonce=tx.nonce,
        chain_id=CHAIN_ID, public_key=env.alice.public_key,
        signature=mallory.sign(tx.signing_payload()),
    )  # fmt: skip
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(stolen)
    assert caught.value.code == -32006
    unsigned = Transaction(
        env.token, "transfer", env.bob.address + u64(1), sender=env.alice.address
    )
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(unsigned)
    assert caught.value.code == -32006


def test_a_replay_and_a_duplicate_are_refused(env: Env, unchanged: None) -> None:
    included = env.node.lookup(env.hashes[2])
    assert included is not None and included.status == "included"
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(included.transaction)
    assert (caught.value.code, caught.value.reason) == (-32002, "duplicate")
    # Nonce 1 again, another call: a replay of a used nonce.
    replay = env.sign(env.alice, "transfer", env.bob.address + u64(2), nonce=1)
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(replay)
    assert (caught.value.code, caught.value.reason) == (-32003, "nonce_too_low")
    far = env.sign(env.alice, "transfer", env.bob.address + u64(2),
                   nonce=env.nonces[env.alice.address] + 1000)  # fmt: skip
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(far)
    assert (caught.value.code, caught.value.reason) == (-32004, "nonce_too_high")


def test_a_transaction_for_another_chain_is_refused(env: Env, unchanged: None) -> None:
    tx = env.sign(env.alice, "transfer", env.bob.address + u64(3),
                  nonce=env.nonces[env.alice.address], chain_id=CHAIN_ID + 1)  # fmt: skip
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(tx)
    assert (caught.value.code, caught.value.reason) == (-32005, "wrong_chain")
    assert caught.value.data == {"reason": "wrong_chain", "expected": CHAIN_ID}


def test_oversized_and_contractless_transactions_are_refused(env: Env, unchanged: None) -> None:
    nonce = env.nonces[env.alice.address]
    big = env.sign(env.alice, "transfer", b"\0" * (130 * 1024), nonce=nonce)
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(big)
    assert (caught.value.code, caught.value.reason) == (-32007, "oversized")
    nowhere = env.sign(env.alice, "transfer", b"", nonce=nonce, contract=b"\x42" * 20)
    with pytest.raises(RpcError) as caught:
        env.client.send_transaction(nowhere)
    assert (caught.value.code, caught.value.reason) == (-32008, "no_contract")


def test_a_refusal_is_logged_with_its_method_and_code(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    tx = env.sign(env.alice, "transfer", env.bob.address, nonce=0)
    with caplog.at_level(logging.INFO, logger="supervm_node.rpc"), pytest.raises(RpcError):
        env.client.send_transaction(tx)
    records = [r for r in caplog.records if r.name == "supervm_node.rpc"]
    assert any(
        getattr(r, "method", None) == "svm_sendTransaction" and getattr(r, "code", None) == -32003
        for r in records
    )


def test_reads_above_the_head_are_refused(env: Env) -> None:
    height = env.client.head()["height"] + 1
    for method, params in (
        ("svm_getState", [env.token.hex(), "00", height]),
        ("svm_call", [env.token.hex(), "balance", env.bob.address.hex(), None, height]),
    ):
        error = rpc_error(env, method, *params)
        assert (error.code, error.reason) == (-32011, "height_above_head")
        assert isinstance(error.data, dict) and error.data["height"] == height


def test_reads_below_the_pruned_horizon_are_refused() -> None:
    node = Node(open_storage("memory://"), chain_id=CHAIN_ID, block_time_ms=50, keep_blocks=1)
    key = KeyPair.generate()
    with BackgroundServer(create_app(node)) as server, Client(server.url) as c:
        deploy, token = _deploy(key)
        c.wait_for_receipt(c.send_transaction(deploy))
        for nonce in (1, 2):
            mint = sign_transaction(key, chain_id=CHAIN_ID, nonce=nonce, contract=token,
                                    method="mint", input=key.address + u64(nonce))  # fmt: skip
            c.wait_for_receipt(c.send_transaction(mint))
        head = c.head()["height"]
        node.chain.prune()
        for method, params in (
            ("svm_getState", [token.hex(), "00", 1]),
            ("svm_call", [token.hex(), "balance", key.address.hex(), None, 1]),
        ):
            with pytest.raises(RpcError) as caught:
                c.call(method, *params)
            assert (caught.value.code, caught.value.reason) == (-32010, "pruned_height")
        kept = c.get_state(token, b"bal/" + key.address, height=head, proof=True)
        assert kept["value"] == u64(3).hex()


def test_a_method_that_overruns_its_timeout_answers_32030(env: Env) -> None:
    app = create_app(env.node, method_timeout=1e-9)
    with BackgroundServer(app, lifespan="off") as slow, Client(slow.url) as c:
        with pytest.raises(RpcError) as caught:
            c.call_contract(env.token, "balance", env.bob.address)
        assert (caught.value.code, caught.value.reason) == (-32030, "timeout")


def test_an_internal_error_is_logged_and_answered_without_its_insides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = Node(open_storage("memory://"), chain_id=CHAIN_ID)
    node.storage.set(header_key(1), b"not a header")  # a corrupt store
    with BackgroundServer(create_app(node), lifespan="off") as server, Client(server.url) as c:
        with (
            caplog.at_level(logging.WARNING, logger="supervm_node.rpc"),
            pytest.raises(RpcError) as caught,
        ):
            c.get_block(1)
        assert caught.value.code == -32603
        assert caught.value.message == "internal error in svm_getBlock"
        logged = [r for r in caplog.records if getattr(r, "code", None) == -32603]
        assert logged and logged[0].exc_info is not None
        assert "corrupt" in str(logged[0].exc_info[1])
        assert c.chain_id() == CHAIN_ID  # the server goes on
