"""supervm.client without a node: URLs, errors, batches, dropped connections, state proofs.

A small HTTP server in the test process answers what each test tells it to; the proofs
come from a real chain.
"""

from __future__ import annotations

import json
import select
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from supervm.chain import Block, Chain, Transaction
from supervm.chain.workload import token_code
from supervm.client import Client, RpcConnectionError, RpcError, verify_state_proof
from supervm.errors import SuperVMError
from supervm.memory import MemoryStorage

Answer = Callable[[Any], tuple[int, object]]


class _Server:
    """Answers each POST with ``answer(request JSON)``; keeps what it received."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.answer: Answer = lambda request: (200, {"jsonrpc": "2.0", "id": 1, "result": 0})
        #: Close the connection after each answer without saying so (a dropped keep-alive).
        self.drop_after_answer = False
        #: Close the connection on this many next requests, without answering them.
        self.drop_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                size = int(self.headers["Content-Length"])
                request = json.loads(self.rfile.read(size))
                outer.received.append(request)
                if outer.drop_next > 0:  # the connection drops with the request unanswered
                    outer.drop_next -= 1
                    self.close_connection = True
                    return
                status, body = outer.answer(request)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if outer.drop_after_answer:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/rpc"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _result(value: object) -> Answer:
    return lambda request: (200, {"jsonrpc": "2.0", "id": request["id"], "result": value})


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:8645", "127.0.0.1:8645", "http://", "http://:8645/rpc", "http://h:99999"],
)
def test_a_url_that_names_no_http_node_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        Client(url)


def test_a_call_sends_jsonrpc_2_with_positional_or_named_params(server: _Server) -> None:
    server.answer = _result(7)
    client = Client(server.url)
    assert client.call("svm_chainId") == 7
    assert client.call("svm_getState", "aa", "bb", None, True) == 7
    assert client.call("svm_call", contract="aa", method="balance") == 7
    first, positional, named = server.received
    assert first["jsonrpc"] == "2.0" and first["method"] == "svm_chainId"
    assert "params" not in first
    assert positional["params"] == ["aa", "bb", None, True]
    assert named["params"] == {"contract": "aa", "method": "balance"}
    assert len({first["id"], positional["id"], named["id"]}) == 3
    with pytest.raises(TypeError, match="positional or named"):
        client.call("svm_getState", "aa", key="bb")


def test_an_error_answer_raises_rpc_error_with_code_message_data_and_reason(
    server: _Server,
) -> None:
    error = {"code": -32003, "message": "nonce 0 is used", "data": {"reason": "nonce_too_low"}}
    server.answer = lambda request: (200, {"jsonrpc": "2.0", "id": request["id"], "error": error})
    client = Client(server.url)
    with pytest.raises(RpcError) as caught:
        client.send_transaction(b"\x02")
    assert caught.value.code == -32003
    assert caught.value.message == "nonce 0 is used"
    assert caught.value.reason == "nonce_too_low"
    assert caught.value.data == {"reason": "nonce_too_low"}
    assert isinstance(caught.value, SuperVMError)
    assert "-32003" in str(caught.value)
    plain = {"code": -32601, "message": "method not found: 'x'"}
    server.answer = lambda request: (200, {"jsonrpc": "2.0", "id": request["id"], "error": plain})
    with pytest.raises(RpcError) as caught:
        client.call("x")
    assert caught.value.reason is None and caught.value.code == -32601


def test_an_http_413_with_a_jsonrpc_error_raises_rpc_error(server: _Server) -> None:
    error = {"code": -32600, "message": "request body exceeds the limit of 10 bytes"}
    server.answer = lambda request: (413, {"jsonrpc": "2.0", "id": None, "error": error})
    with pytest.raises(RpcError, match="limit") as caught:
        Client(server.url).chain_id()
    assert caught.value.code == -32600


def test_an_answer_that_is_not_jsonrpc_raises_a_connection_error(server: _Server) -> None:
    server.answer = lambda request: (500, "oops")
    with pytest.raises(RpcConnectionError, match="500"):
        Client(server.url).chain_id()
    server.answer = lambda request: (200, {"jsonrpc": "2.0", "id": -5, "result": 1})
    with pytest.raises(RpcConnectionError, match="another request"):
        Client(server.url).chain_id()


def test_a_batch_gives_results_and_errors_in_request_order(server: _Server) -> None:
    def answer(batch: Any) -> tuple[int, object]:
        out: list[object] = []
        for request in reversed(batch):  # any order: the client matches ids
            if request["params"][0] == "bad0":
                error = {"code": -32602, "message": "invalid params: 'tx' is not hex"}
                out.append({"jsonrpc": "2.0", "id": request["id"], "error": error})
            else:
                hash_ = request["params"][0] * 16
                out.append({"jsonrpc": "2.0", "id": request["id"], "result": {"hash": hash_}})
        return 200, out

    server.answer = answer
    client = Client(server.url)
    first, second, third = client.send_transactions([b"\x01\x02", b"\xba\xd0", b"\x03\x04"])
    assert first == b"\x01\x02" * 16 and third == b"\x03\x04" * 16
    assert isinstance(second, RpcError) and second.code == -32602
    assert client.batch([]) == [] and len(server.received) == 1


def test_a_batch_refused_as_a_whole_raises(server: _Server) -> None:
    error = {"code": -32600, "message": "invalid request: a batch holds at most 1 requests"}
    server.answer = lambda request: (200, {"jsonrpc": "2.0", "id": None, "error": error})
    with pytest.raises(RpcError, match="at most"):
        Client(server.url).batch([("svm_head", []), ("svm_head", [])])


def test_a_connection_the_node_closed_while_idle_is_replaced_first(server: _Server) -> None:
    server.answer = _result(7)
    server.drop_after_answer = True
    client = Client(server.url)
    assert client.chain_id() == 7
    # The node closes the connection after answering, on its own thread: wait until the
    # close has reached the client, so that the connection is closed while idle.
    sock = client._local.conn.sock
    readable, _, _ = select.select([sock], [], [], 10)
    assert readable, "the server did not close the connection"
    server.answer = _result({"hash": "ab" * 32})
    assert client.send_transaction(b"\x02\x00") == bytes.fromhex("ab" * 32)
    assert [r["method"] for r in server.received] == ["svm_chainId", "svm_sendTransaction"]


def test_a_read_is_sent_again_once_when_its_connection_drops(server: _Server) -> None:
    server.answer = _result(7)
    client = Client(server.url)
    assert client.chain_id() == 7
    server.drop_next = 1
    assert client.chain_id() == 7  # dropped unanswered on the kept-alive connection: again
    assert [r["method"] for r in server.received] == ["svm_chainId"] * 3
    server.drop_next = 2
    with pytest.raises(RpcConnectionError, match="dropped"):
        client.chain_id()  # only once again
    assert len(server.received) == 5


def test_a_transaction_is_never_sent_twice_when_its_connection_drops(server: _Server) -> None:
    server.answer = _result(7)
    client = Client(server.url)
    assert client.chain_id() == 7
    server.answer = _result({"hash": "ab" * 32})
    server.drop_next = 1
    with pytest.raises(RpcConnectionError, match="may or may not") as caught:
        client.send_transaction(b"\x02\x00")
    assert isinstance(caught.value, ConnectionError)
    assert [r["method"] for r in server.received] == ["svm_chainId", "svm_sendTransaction"]
    assert client.send_transaction(b"\x02\x00") == bytes.fromhex("ab" * 32)  # a new connection
    assert len(server.received) == 3


def test_a_node_that_is_not_there_raises_a_connection_error() -> None:
    s = _Server()
    url = s.url
    s.close()
    with pytest.raises(RpcConnectionError, match="cannot reach"):
        Client(url, timeout=2).head()


def test_wait_for_receipt_long_polls_and_names_the_hash_at_its_timeout(server: _Server) -> None:
    def answer(request: Any) -> tuple[int, object]:
        if request["method"] == "svm_waitForBlock":
            after, timeout_ms = request["params"]
            assert timeout_ms <= 50
            head = {"height": after, "hash": "00" * 32, "state_root": "00" * 32, "timestamp": 0}
            return 200, {"jsonrpc": "2.0", "id": request["id"], "result": head}
        if request["method"] == "svm_head":
            head = {"height": 3, "hash": "00" * 32, "state_root": "00" * 32, "timestamp": 0}
            return 200, {"jsonrpc": "2.0", "id": request["id"], "result": head}
        return 200, {"jsonrpc": "2.0", "id": request["id"], "result": None}

    server.answer = answer
    with pytest.raises(TimeoutError, match="ef" * 32):
        Client(server.url).wait_for_receipt(b"\xef" * 32, timeout=0.2, poll=0.05)
    methods = [r["method"] for r in server.received]
    assert methods[0] == "svm_head" and "svm_waitForBlock" in methods


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def test_verify_state_proof_checks_key_value_height_and_the_trusted_root() -> None:
    chain = Chain(MemoryStorage(), threads=1)
    try:
        token = chain.deploy(token_code())
        alice = b"\x0a" * 20
        chain.apply(Block(2, 1, (Transaction(token, "mint", alice + _u64(1000), sender=alice),)))
        root = chain.head().state_root
        key = b"bal/" + alice
        proof = chain.prove_state(token, key)
        result: dict[str, Any] = {
            "height": 2,
            "state_root": root.hex(),
            "value": _u64(1000).hex(),
            "proof": proof.encode().hex(),
        }
        assert verify_state_proof(result, token, key, root)
        assert not verify_state_proof(result, token, key, b"\x01" * 32)
        assert not verify_state_proof(result, token, b"bal/" + b"\x0b" * 20, root)
        assert not verify_state_proof({**result, "value": _u64(999).hex()}, token, key, root)
        assert not verify_state_proof({**result, "value": None}, token, key, root)
        assert not verify_state_proof({**result, "height": 1}, token, key, root)
        assert not verify_state_proof({**result, "proof": result["proof"][:40]}, token, key, root)
        assert not verify_state_proof({**result, "proof": "zz"}, token, key, root)
        absent_key = b"bal/" + b"\x0b" * 20
        absent = chain.prove_state(token, absent_key)
        none = {**result, "value": None, "proof": absent.encode().hex()}
        assert verify_state_proof(none, token, absent_key, root)
        with pytest.raises(ValueError, match="no proof"):
            verify_state_proof({"height": 2, "value": None}, token, key, root)
    finally:
        chain.close()
