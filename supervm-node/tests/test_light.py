"""The light client against a real node over real HTTP, with its headers in a SQLite file.

One producer (chain 11, blocks of at most 4 transactions) holds the workload's token and
tens of blocks of transfers. The light client syncs from it directly, or through a
tampering proxy (a Starlette app forwarding JSON-RPC to the node with http.client) that
alters the node's answers: every alteration is refused and nothing false is stored.
"""

from __future__ import annotations

import http.client
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervm import open_storage
from supervm.chain.header import BlockHeader
from supervm.chain.proofs import StateProof
from supervm.client import Client
from supervm.layout import LAYOUT_KEY, LIGHT_PREFIX
from supervm_node.light import LightClient, LightClientError
from supervm_node.node import Node
from supervm_node.rpc import BackgroundServer, create_app
from supervm_node.workload import TOKEN, Workload

CHAIN_ID = 11
BATCH = 7

#: (request, answer) -> None: alters one JSON-RPC answer in place.
Tamper = Callable[[dict[str, Any], dict[str, Any]], None]
#: request -> None: alters one JSON-RPC request in place before it is forwarded.
Rewrite = Callable[[dict[str, Any]], None]


def bal(address: bytes) -> bytes:
    return b"bal/" + address


class Proxy:
    """Forwards JSON-RPC to a node; ``rewrite`` and ``tamper`` alter requests and answers."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.rewrite: Rewrite | None = None
        self.tamper: Tamper | None = None
        #: The methods of each request body forwarded (one list per HTTP request).
        self.seen: list[list[str]] = []

    def forward(self, body: bytes) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        try:
            conn.request("POST", "/rpc", body, {"Content-Type": "application/json"})
            return conn.getresponse().read()
        finally:
            conn.close()

    async def rpc(self, request: Request) -> Response:
        message = json.loads(await request.body())
        requests = message if isinstance(message, list) else [message]
        self.seen.append([r["method"] for r in requests])
        if self.rewrite is not None:
            for r in requests:
                self.rewrite(r)
        answer = json.loads(await run_in_threadpool(self.forward, json.dumps(message).encode()))
        if self.tamper is not None:
            answers = answer if isinstance(answer, list) else [answer]
            by_id = {r["id"]: r for r in requests}
            for a in answers:
                self.tamper(by_id[a["id"]], a)
        return Response(json.dumps(answer), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/rpc", self.rpc, methods=["POST"])])


@dataclass
class Env:
    node: Node
    url: str
    proxy: Proxy
    proxy_url: str
    workload: Workload
    #: The height at which every mint is included and no transfer yet.
    minted: int
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = Client(self.url)

    @property
    def head(self) -> int:
        return int(self.client.head()["height"])

    def balance(self, address: bytes, height: int | None = None) -> int:
        receipt = self.client.call_contract(TOKEN, "balance", address, height=height)
        assert receipt["status"] == "ok", receipt
        return int.from_bytes(bytes.fromhex(receipt["return_data"]), "little")


def _send_all(client: Client, txs: list[Any]) -> int:
    """Send transactions, wait until each sender's last one is included; that height."""
    for result in client.send_transactions(txs):
        assert isinstance(result, bytes), result
    last: dict[bytes, Any] = {tx.sender: tx for tx in txs}
    heights = [client.wait_for_receipt(tx.hash, timeout=60)["height"] for tx in last.values()]
    return int(max(heights))


def _producer(chain_id: int = CHAIN_ID) -> Node:
    return Node(open_storage("memory://"), chain_id=chain_id, block_time_ms=10, max_block_txs=4)


def _fill(url: str, chain_id: int, seed: int, senders: int, transfers: int) -> tuple[Workload, int]:
    """The workload's setup, then ``transfers`` per sender; the workload and the mint height."""
    workload = Workload(senders, chain_id=chain_id, seed=seed)
    with Client(url) as client:
        minted = _send_all(client, workload.setup())
        if transfers:
            txs = [
                tx
                for i, key in enumerate(workload.senders)
                for tx in workload.transfers(key, transfers, seed=i)
            ]
            _send_all(client, txs)
    return workload, minted


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    node = _producer()
    with BackgroundServer(create_app(node)) as server:
        workload, minted = _fill(server.url, CHAIN_ID, seed=1, senders=4, transfers=30)
        proxy = Proxy(server.port)
        with BackgroundServer(proxy.app()) as proxied:
            e = Env(node, server.url, proxy, proxied.url, workload, minted)
            assert e.head >= 30, e.head
            yield e
            e.client.close()


@pytest.fixture
def proxy(env: Env) -> Iterator[Proxy]:
    env.proxy.rewrite = env.proxy.tamper = None
    env.proxy.seen.clear()
    yield env.proxy
    env.proxy.rewrite = env.proxy.tamper = None


def open_light(path: Path, peer: str, batch: int = BATCH) -> LightClient:
    return LightClient(open_storage(f"sqlite:///{path}"), peer, batch=batch)


@pytest.fixture
def light(tmp_path: Path, env: Env) -> Iterator[LightClient]:
    """A light client synced to the producer's head."""
    client = open_light(tmp_path / "light.db", env.url)
    client.sync()
    yield client
    client.close()


def stored_heights(path: Path) -> list[int]:
    store = open_storage(f"sqlite:///{path}")
    try:
        prefix = LIGHT_PREFIX + b"header/"
        return [struct.unpack(">Q", k[len(prefix) :])[0] for k, _ in store.scan(prefix)]
    finally:
        store.close()


def flip_hex(text: str, at: int) -> str:
    """``text`` (hex) with the hex digit at ``at`` changed."""
    digit = "0123456789abcdef"[int(text[at], 16) ^ 1]
    return text[:at] + digit + text[at + 1 :]


def node_header(env: Env, height: int) -> BlockHeader:
    header = env.node.chain.header(height)
    assert header is not None
    return header


# -- syncing -------------------------------------------------------------------------------


def test_syncs_in_batches_to_the_head(tmp_path: Path, env: Env, proxy: Proxy) -> None:
    head = env.head
    progress: list[tuple[int, int]] = []
    with open_light(tmp_path / "light.db", env.proxy_url) as light:
        assert light.head() is None and light.height == 0
        assert light.sync(progress=lambda h, t: progress.append((h, t))) == head
        assert light.height == head and light.chain_id == CHAIN_ID
        for height in range(1, head + 1):
            assert light.header(height) == node_header(env, height)
        assert light.head() == node_header(env, head)
        assert light.header(head + 1) is None
        assert light.stats.headers_synced == head and light.stats.sync_rate > 0
        assert light.sync() == 0
    batches = [m for m in proxy.seen if m[0] == "svm_getBlock" and len(set(m)) == 1]
    assert sum(len(b) for b in batches) == head
    assert max(len(b) for b in batches) == BATCH
    # Each stored batch's headers but the last wait for their successor: the last is the head.
    assert [t for _, t in progress] == [head] * len(progress)
    assert progress[-1][0] == head
    assert [h for h, _ in progress] == sorted(h for h, _ in progress)
    assert stored_heights(tmp_path / "light.db") == list(range(1, head + 1))


def test_reopening_resumes_at_its_height(tmp_path: Path, env: Env) -> None:
    path = tmp_path / "light.db"
    with open_light(path, env.url) as light:
        assert light.sync(max_headers=10) == 10
        assert light.sync(max_headers=0) == 0
        assert light.height == 10
    with open_light(path, env.url) as light:
        assert light.height == 10 and light.head() == node_header(env, 10)
        assert light.chain_id == CHAIN_ID
        assert light.sync() == env.head - 10
        assert light.head() == node_header(env, env.head)
    store = open_storage(f"sqlite:///{path}")
    try:
        keys = [k for k, _ in store.scan(b"")]
    finally:
        store.close()
    others = [k for k in keys if not k.startswith(LIGHT_PREFIX + b"header/")]
    assert sorted(others) == sorted(
        [LAYOUT_KEY, LIGHT_PREFIX + b"height", LIGHT_PREFIX + b"chain_id"]
    )


def test_a_peer_on_another_chain_id_is_refused(tmp_path: Path, env: Env) -> None:
    other = _producer(CHAIN_ID + 1)
    with BackgroundServer(create_app(other)) as server:
        _fill(server.url, CHAIN_ID + 1, seed=1, senders=1, transfers=0)
        path = tmp_path / "light.db"
        with open_light(path, env.url) as light:
            light.sync(max_headers=3)
        with open_light(path, server.url) as light, pytest.raises(LightClientError) as caught:
            light.sync()
        assert caught.value.reason == "wrong chain"
    assert stored_heights(path) == [1, 2, 3]


def test_a_fork_is_refused_whether_the_peer_is_behind_or_ahead(tmp_path: Path, env: Env) -> None:
    """Another chain with the same id, its head level with the light client's, ahead of
    it or behind it: its header at a stored height differs."""
    fork = _producer()
    with BackgroundServer(create_app(fork)) as server:
        _fill(server.url, CHAIN_ID, seed=2, senders=2, transfers=0)
        fork_head = int(Client(server.url).head()["height"])
        assert fork_head < env.head
        cases = {"level": fork_head, "ahead": 1, "behind": env.head}  # the light client's
        for name, height in cases.items():
            with open_light(tmp_path / f"{name}.db", env.url) as light:
                light.sync(max_headers=height)
            with open_light(tmp_path / f"{name}.db", server.url) as light:
                before = light.head()
                with pytest.raises(LightClientError) as caught:
                    light.sync()
                assert caught.value.reason == "fork", name
                assert caught.value.height == min(height, fork_head), name
                assert "differs" in str(caught.value)
                assert light.head() == before and light.stats.headers_refused == 1
            assert stored_heights(tmp_path / f"{name}.db") == list(range(1, height + 1))


# -- values --------------------------------------------------------------------------------


def test_balances_are_proven_against_the_own_headers(light: LightClient, env: Env) -> None:
    for key in env.workload.senders:
        raw = light.get_state(TOKEN, bal(key.address))
        assert raw is not None
        balance = struct.unpack("<Q", raw)[0]
        assert balance == env.balance(key.address) == env.workload.balances[key.address]
    assert light.verify_count == len(env.workload.senders)
    assert light.stats.proofs_refused == 0


def test_older_heights_are_proven_against_their_headers(light: LightClient, env: Env) -> None:
    for height in range(1, env.minted + 3):
        for key in env.workload.senders:
            raw = light.get_state(TOKEN, bal(key.address), height=height)
            got = 0 if raw is None else struct.unpack("<Q", raw)[0]
            assert got == env.balance(key.address, height), (height, key)
    # Five setup transactions, at most four a block: the last mint is not in block 1.
    assert light.get_state(TOKEN, bal(env.workload.senders[-1].address), height=1) is None
    key = env.workload.senders[0]
    raw = light.get_state(TOKEN, bal(key.address), height=env.minted)
    assert raw == struct.pack("<Q", env.workload.mint)


def test_an_absent_key_is_none_with_an_exclusion_proof(light: LightClient, env: Env) -> None:
    nobody = os.urandom(20)
    assert light.get_state(TOKEN, bal(nobody)) is None
    assert light.get_state(os.urandom(20), b"k") is None  # no such contract
    answer = env.client.get_state(TOKEN, bal(nobody), light.height, proof=True)
    proof = StateProof.decode(bytes.fromhex(answer["proof"]))
    head = light.head()
    assert head is not None and proof.value is None and proof.verify(head.state_root)
    assert light.verify_count == 2


def test_a_height_not_synced_is_refused(tmp_path: Path, env: Env) -> None:
    with open_light(tmp_path / "light.db", env.url) as light:
        for height in (None, 1):
            with pytest.raises(LightClientError) as caught:
                light.get_state(TOKEN, b"bal/", height)
            assert caught.value.reason == "height not synced"
        light.sync(max_headers=5)
        for height in (0, 6, env.head):
            with pytest.raises(LightClientError) as caught:
                light.get_state(TOKEN, b"bal/", height)
            assert caught.value.reason == "height not synced"
        assert light.get_state(TOKEN, b"bal/") is None


def test_threads_share_a_light_client(light: LightClient, env: Env) -> None:
    keys = env.workload.senders
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for key in keys * 5:
                assert light.get_state(TOKEN, bal(key.address)) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and light.verify_count == 4 * 5 * len(keys)


# -- a tampering peer: values --------------------------------------------------------------


def on(method: str, change: Callable[[dict[str, Any]], None]) -> Tamper:
    """A tamper that changes the results of ``method`` only."""

    def tamper(request: dict[str, Any], answer: dict[str, Any]) -> None:
        if request["method"] == method and isinstance(answer.get("result"), dict):
            change(answer["result"])

    return tamper


def refused(light: LightClient, key: bytes, height: int | None = None) -> LightClientError:
    before = light.stats.proofs_refused
    with pytest.raises(LightClientError) as caught:
        light.get_state(TOKEN, key, height)
    assert light.stats.proofs_refused == before + 1
    return caught.value


@pytest.fixture
def proxied(tmp_path: Path, env: Env, proxy: Proxy) -> Iterator[LightClient]:
    """A light client synced to the head, reading through the proxy."""
    client = open_light(tmp_path / "light.db", env.proxy_url)
    client.sync()
    yield client
    client.close()


def test_a_flipped_value_is_refused(proxied: LightClient, env: Env, proxy: Proxy) -> None:
    key = bal(env.workload.senders[0].address)
    proxy.tamper = on("svm_getState", lambda r: r.update(value=flip_hex(r["value"], 3)))
    assert refused(proxied, key).reason == "value differs from proof"
    proxy.tamper = on("svm_getState", lambda r: r.update(value=None))
    assert refused(proxied, key).reason == "value differs from proof"
    proxy.tamper = on("svm_getState", lambda r: r.pop("proof"))
    assert refused(proxied, key).reason == "tampered proof"
    proxy.tamper = None
    assert proxied.get_state(TOKEN, key) is not None


def test_every_flipped_proof_byte_is_refused(proxied: LightClient, env: Env, proxy: Proxy) -> None:
    key = bal(env.workload.senders[1].address)
    size = len(env.client.get_state(TOKEN, key, proxied.height, proof=True)["proof"])
    reasons: set[str] = set()

    def flipper(at: int) -> Callable[[dict[str, Any]], None]:
        return lambda result: result.update(proof=flip_hex(result["proof"], at))

    for at in range(0, size, 2):  # the high digit of every byte
        proxy.tamper = on("svm_getState", flipper(at))
        reasons.add(refused(proxied, key).reason)
    assert reasons == {"tampered proof", "value differs from proof", "root mismatch"}
    assert proxied.stats.proofs_refused == size // 2 and proxied.verify_count == 0


def test_a_consistent_lie_about_the_value_is_refused(
    proxied: LightClient, env: Env, proxy: Proxy
) -> None:
    """The value changed in the answer and in the proof alike: the tree path does not agree."""
    key = bal(env.workload.senders[0].address)
    lie = struct.pack("<Q", 10**12)

    def lie_about(result: dict[str, Any]) -> None:
        proof = StateProof.decode(bytes.fromhex(result["proof"]))
        result.update(value=lie.hex(), proof=replace(proof, value=lie).encode().hex())

    proxy.tamper = on("svm_getState", lie_about)
    error = refused(proxied, key)
    assert error.reason == "tampered proof" and "does not verify" in str(error)


def test_the_node_s_claimed_root_is_never_used(
    proxied: LightClient, env: Env, proxy: Proxy
) -> None:
    key = bal(env.workload.senders[0].address)
    proxy.tamper = on("svm_getState", lambda r: r.update(state_root="00" * 32))
    assert proxied.get_state(TOKEN, key) is not None


def test_a_proof_at_another_height_is_refused(proxied: LightClient, env: Env, proxy: Proxy) -> None:
    """The node is asked for an older height: labelled as such, and relabelled as asked."""
    key = bal(env.workload.senders[0].address)
    head = proxied.height

    def older(request: dict[str, Any]) -> None:
        if request["method"] == "svm_getState":
            request["params"][2] = env.minted

    proxy.rewrite = older
    assert refused(proxied, key).reason == "tampered proof"

    def relabel(result: dict[str, Any]) -> None:
        proof = StateProof.decode(bytes.fromhex(result["proof"]))
        assert proof.verify()  # consistent with the root it names: another height's
        result.update(height=head, proof=replace(proof, height=head).encode().hex())

    proxy.tamper = on("svm_getState", relabel)
    error = refused(proxied, key)
    assert error.reason == "root mismatch" and error.height == head


def test_a_proof_of_another_key_is_refused(proxied: LightClient, env: Env, proxy: Proxy) -> None:
    mine, other = (bal(k.address) for k in env.workload.senders[:2])

    def swap(request: dict[str, Any]) -> None:
        if request["method"] == "svm_getState":
            request["params"][1] = other.hex()

    proxy.rewrite = swap
    error = refused(proxied, mine)
    assert error.reason == "tampered proof" and "for key" in str(error)


# -- a tampering peer: headers -------------------------------------------------------------


def at_height(height: int, change: Callable[[dict[str, Any]], None]) -> Tamper:
    """Changes the ``svm_getBlock`` answer for ``height`` only."""

    def tamper(request: dict[str, Any], answer: dict[str, Any]) -> None:
        if request["method"] == "svm_getBlock" and request["params"][0] == height:
            change(answer)

    return tamper


def rehashed(result: dict[str, Any], **fields: bytes) -> None:
    """Change header fields and put the hash of the header they make."""
    header = BlockHeader(
        result["height"],
        fields.get("parent_hash", bytes.fromhex(result["parent_hash"])),
        result["timestamp"],
        bytes.fromhex(result["transactions_root"]),
        fields.get("state_root", bytes.fromhex(result["state_root"])),
        bytes.fromhex(result["receipts_root"]),
    )
    result.update(header.to_json())


def refused_sync(
    path: Path, env: Env, tamper: Tamper, reason: str, at: int, kept: int
) -> LightClient:
    """Sync through the proxy with ``tamper``: refused at ``at``, headers 1 to ``kept`` kept."""
    env.proxy.tamper = tamper
    light = open_light(path, env.proxy_url)
    with pytest.raises(LightClientError) as caught:
        light.sync()
    assert caught.value.reason == reason and caught.value.height == at, caught.value
    assert light.height == kept and light.head() == node_header(env, kept)
    assert light.stats.headers_refused == 1 and light.stats.headers_synced == kept
    assert stored_heights(path) == list(range(1, kept + 1))
    return light


@pytest.mark.parametrize("name", ["state_root", "parent_hash", "timestamp"])
def test_a_changed_header_field_is_refused(
    tmp_path: Path, env: Env, proxy: Proxy, name: str
) -> None:
    """Nothing recomputed: the hash does not match; the headers before it are kept."""

    def change(answer: dict[str, Any]) -> None:
        result = answer["result"]
        result[name] = result[name] + 1 if name == "timestamp" else flip_hex(result[name], 0)

    path = tmp_path / "light.db"
    light = refused_sync(path, env, at_height(10, change), "hash mismatch", at=10, kept=9)
    proxy.tamper = None  # the honest answers continue the chain
    assert light.sync() == env.head - 9
    assert light.head() == node_header(env, env.head)
    light.close()


@pytest.mark.parametrize("height", [10, BATCH, BATCH + 1])
def test_a_rehashed_state_root_breaks_the_next_link(
    tmp_path: Path, env: Env, proxy: Proxy, height: int
) -> None:
    """The changed header hashes right: its successor's parent hash refuses it, and it is
    not kept, in a batch's middle, at its end or at its start."""
    lie = at_height(height, lambda a: rehashed(a["result"], state_root=os.urandom(32)))
    light = refused_sync(tmp_path / "l.db", env, lie, "broken link", at=height + 1, kept=height - 1)
    light.close()


def test_a_sync_stopped_below_the_head_checks_its_last_header(
    tmp_path: Path, env: Env, proxy: Proxy
) -> None:
    """``max_headers`` stops below the peer's head: the successor of the last header is
    fetched to check it, and not stored."""
    path = tmp_path / "light.db"
    proxy.tamper = at_height(BATCH, lambda a: rehashed(a["result"], state_root=os.urandom(32)))
    with open_light(path, env.proxy_url) as light:
        with pytest.raises(LightClientError) as caught:
            light.sync(max_headers=BATCH)
        assert caught.value.reason == "broken link" and caught.value.height == BATCH + 1
        assert light.height == BATCH - 1
        proxy.tamper = None
        assert light.sync(max_headers=BATCH) == BATCH and light.height == 2 * BATCH - 1
    assert stored_heights(path) == list(range(1, 2 * BATCH))
    assert all(len(methods) <= BATCH for methods in proxy.seen)


def test_a_rehashed_parent_hash_keeps_neither_side_of_the_link(
    tmp_path: Path, env: Env, proxy: Proxy
) -> None:
    lie = at_height(10, lambda a: rehashed(a["result"], parent_hash=os.urandom(32)))
    refused_sync(tmp_path / "light.db", env, lie, "broken link", at=10, kept=8).close()


def test_a_lie_at_the_head_is_refused_by_the_next_sync(
    tmp_path: Path, env: Env, proxy: Proxy
) -> None:
    """A header with no successor yet cannot be checked by its link: once stored, the
    honest peer's header at that height differs from it."""
    path, head = tmp_path / "light.db", env.head
    proxy.tamper = at_height(head, lambda a: rehashed(a["result"], state_root=os.urandom(32)))
    with open_light(path, env.proxy_url) as light:
        assert light.sync() == head
        assert light.head() != node_header(env, head)
    with open_light(path, env.url) as light, pytest.raises(LightClientError) as caught:
        light.sync()
    assert caught.value.reason == "fork" and caught.value.height == head


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda a: a.update(result=None), "missing block"),
        (lambda a: a["result"].update(height=3), "wrong height"),
        (lambda a: a["result"].update(state_root="zz"), "malformed header"),
        (lambda a: a["result"].pop("receipts_root"), "malformed header"),
        (lambda a: a.update(result="block"), "malformed header"),
        (
            lambda a: (a.pop("result"), a.update(error={"code": -32603, "message": "no"})),
            "peer error",
        ),
    ],
)
def test_a_malformed_block_answer_is_refused(
    tmp_path: Path, env: Env, proxy: Proxy, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    refused_sync(tmp_path / "light.db", env, at_height(12, change), reason, at=12, kept=11).close()
