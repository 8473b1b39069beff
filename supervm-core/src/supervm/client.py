"""A client for a SuperVM node's JSON-RPC API (docs/rpc.md), on the standard library only.

:class:`Client` keeps one keep-alive HTTP connection per thread, replaced before a request
when the node has closed it while idle. A read whose connection dropped during the exchange
is sent again once on a new connection; ``svm_sendTransaction`` never is (whether the node
took the transaction is unknown): :class:`RpcConnectionError` says so instead.
:func:`verify_state_proof` checks a ``svm_getState`` answer against a state root the
caller trusts.
"""

from __future__ import annotations

import http.client
import itertools
import json
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from supervm.chain.block import Transaction
from supervm.chain.proofs import StateProof
from supervm.errors import SuperVMError
from supervm.layout import state_key

__all__ = ["Client", "RpcConnectionError", "RpcError", "verify_state_proof"]

#: Methods that change the node's state: never sent twice by the client itself.
_NOT_IDEMPOTENT = frozenset({"svm_sendTransaction"})
_DROPPED = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class RpcError(SuperVMError):
    """The node answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def reason(self) -> str | None:
        """The node's reason (``error.data.reason``, e.g. ``"nonce_too_low"``), if any."""
        if isinstance(self.data, dict):
            reason = self.data.get("reason")
            return reason if isinstance(reason, str) else None
        return None

    @classmethod
    def from_json(cls, error: object) -> RpcError:
        """The error in a response's ``error`` member."""
        if not isinstance(error, dict):
            return cls(-32603, f"malformed error in the node's answer: {error!r}")
        code = error.get("code")
        message = error.get("message")
        return cls(
            code if type(code) is int else -32603,
            message if isinstance(message, str) else repr(message),
            error.get("data"),
        )


class RpcConnectionError(SuperVMError, ConnectionError):
    """The node could not be reached, or its answer was not JSON-RPC over HTTP."""


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle keep-alive connection was closed by the other end (it reads as ready)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _hex(data: bytes) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    return bytes(data).hex()


class Client:
    """A node's JSON-RPC API at ``url`` (e.g. ``http://127.0.0.1:8645``; no path: ``/rpc``).

    ``timeout`` bounds each HTTP exchange in seconds (``wait_for_block`` waits longer
    when its own wait asks for it). A client may be shared by threads.
    """

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"a node URL is http:// or https://, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"a node URL names a host: {url!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"a node URL's port is a number in 0-65535: {url!r}") from exc
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._path = (parts.path or "/rpc") + (f"?{parts.query}" if parts.query else "")
        self._local = threading.local()
        self._ids = itertools.count(1)

    # -- transport -----------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if conn.sock is None:
                return conn, False  # http.client opens a new one
            if not _closed_by_peer(conn.sock):
                return conn, True
            self.close()  # the node closed it while idle: nothing was lost
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, body: bytes, *, idempotent: bool, timeout: float | None = None) -> object:
        """The decoded JSON answer to ``body`` (``None``: no content)."""
        while True:
            conn, reused = self._connection()
            wait = self.timeout if timeout is None else timeout
            conn.timeout = wait
            if conn.sock is not None:
                conn.sock.settimeout(wait)
            try:
                conn.request(
                    "POST",
                    self._path,
                    body,
                    {"Content-Type": "application/json", "Accept": "application/json"},
                )
                response = conn.getresponse()
                data = response.read()
            except _DROPPED as exc:
                self.close()
                if reused and idempotent:
                    continue  # a kept-alive connection the node closed: once more, afresh
                if not idempotent:
                    raise RpcConnectionError(
                        f"the connection to {self.url} dropped during svm_sendTransaction: "
                        "the node may or may not have taken the transaction (look it up "
                        f"with get_transaction before sending it again): {exc!r}"
                    ) from exc
                raise RpcConnectionError(f"the connection to {self.url} dropped: {exc!r}") from exc
            except TimeoutError as exc:
                self.close()
                raise RpcConnectionError(f"{self.url} did not answer within {wait:g} s") from exc
            except OSError as exc:
                self.close()
                raise RpcConnectionError(f"cannot reach {self.url}: {exc}") from exc
            if response.will_close:
                self.close()
            return self._decode(response.status, response.getheader("Content-Type"), data)

    def _decode(self, status: int, content_type: str | None, data: bytes) -> object:
        if status == 204 and not data:
            return None
        if content_type is None or not content_type.startswith("application/json"):
            raise RpcConnectionError(
                f"{self.url} answered HTTP {status} with {content_type or 'no content type'}, "
                "not JSON-RPC"
            )
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise RpcConnectionError(f"{self.url} answered malformed JSON: {exc}") from exc
        if status != 200 and not (isinstance(answer, dict) and "error" in answer):
            raise RpcConnectionError(f"{self.url} answered HTTP {status}")
        return answer

    def _request(self, method: str, params: object) -> dict[str, object]:
        request: dict[str, object] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params:
            request["params"] = params
        return request

    # -- calls ---------------------------------------------------------------------------

    def call(self, method: str, /, *params: object, **named: object) -> Any:
        """The result of ``method`` with positional or named params; RpcError if it fails."""
        return self._call(method, params, named)

    def _call(
        self,
        method: str,
        params: Sequence[object],
        named: dict[str, object],
        *,
        timeout: float | None = None,
    ) -> Any:
        if params and named:
            raise TypeError("JSON-RPC params are positional or named, not both")
        request = self._request(method, named or list(params))
        answer = self._post(
            json.dumps(request).encode(),
            idempotent=method not in _NOT_IDEMPOTENT,
            timeout=timeout,
        )
        if not isinstance(answer, dict):
            raise RpcConnectionError(f"{self.url} answered {answer!r}, not a response object")
        if "error" in answer:
            raise RpcError.from_json(answer["error"])
        if answer.get("id") != request["id"] or "result" not in answer:
            raise RpcConnectionError(f"{self.url} answered another request: {answer!r}")
        return answer["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[object] | dict[str, object]]]) -> list[Any]:
        """Send ``(method, params)`` calls as one batch: each one's result or RpcError, in order.

        An error that concerns the whole batch (e.g. one too long) is raised.
        """
        if not calls:
            return []
        requests = [
            self._request(method, params if isinstance(params, dict) else list(params))
            for method, params in calls
        ]
        idempotent = all(method not in _NOT_IDEMPOTENT for method, _ in calls)
        answer = self._post(json.dumps(requests).encode(), idempotent=idempotent)
        if isinstance(answer, dict) and "error" in answer:
            raise RpcError.from_json(answer["error"])
        if not isinstance(answer, list):
            raise RpcConnectionError(f"{self.url} answered {answer!r}, not a batch")
        by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
        results: list[Any] = []
        for request in requests:
            item = by_id.get(request["id"])
            if item is None:
                raise RpcConnectionError(f"{self.url} left request {request['id']} unanswered")
            results.append(
                RpcError.from_json(item["error"]) if "error" in item else item.get("result")
            )
        return results

    # -- typed helpers ---------------------------------------------------------------------

    def chain_id(self) -> int:
        """The node's chain id."""
        return int(self.call("svm_chainId"))

    def head(self) -> dict[str, Any]:
        """``{height, hash, state_root, timestamp}`` of the node's head."""
        result: dict[str, Any] = self.call("svm_head")
        return result

    def send_transaction(self, tx: Transaction | bytes) -> bytes:
        """Hand a signed transaction (or its encoding) to the node; its hash."""
        encoded = tx.encode() if isinstance(tx, Transaction) else tx
        return bytes.fromhex(self.call("svm_sendTransaction", _hex(encoded))["hash"])

    def send_transactions(self, txs: Sequence[Transaction | bytes]) -> list[bytes | RpcError]:
        """Hand transactions to the node in one batch: each one's hash or RpcError, in order."""
        calls: list[tuple[str, Sequence[object] | dict[str, object]]] = [
            ("svm_sendTransaction", [_hex(tx.encode() if isinstance(tx, Transaction) else tx)])
            for tx in txs
        ]
        return [
            r if isinstance(r, RpcError) else bytes.fromhex(r["hash"]) for r in self.batch(calls)
        ]

    def get_transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The transaction ``{hash, status, height, index, block_hash, transaction, receipt}``."""
        result: dict[str, Any] | None = self.call("svm_getTransaction", _hex(tx_hash))
        return result

    def wait_for_receipt(
        self, tx_hash: bytes, timeout: float = 30.0, poll: float = 0.05
    ) -> dict[str, Any]:
        """The transaction (as :meth:`get_transaction`) once a block includes it.

        Between lookups it long-polls for a new block, at most ``poll`` seconds at a time.
        Raises TimeoutError naming the hash if no block includes it within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        height = int(self.head()["height"])
        while True:
            info = self.get_transaction(tx_hash)
            if info is not None and info.get("status") == "included":
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = "unknown to the node" if info is None else "still pending"
                raise TimeoutError(
                    f"transaction {_hex(tx_hash)} is not in a block after {timeout:g} s ({state})"
                )
            wait_ms = max(1, min(int(min(remaining, poll) * 1000), 30_000))
            height = int(self.wait_for_block(height, timeout_ms=wait_ms)["height"])

    def get_block(self, block: int | bytes, full: bool = False) -> dict[str, Any] | None:
        """The block at a height or with a hash (``None``: none); ``full``: with transactions."""
        ref: object = block if isinstance(block, int) else _hex(block)
        result: dict[str, Any] | None = self.call("svm_getBlock", ref, full)
        return result

    def get_state(
        self, contract: bytes, key: bytes, height: int | None = None, proof: bool = False
    ) -> dict[str, Any]:
        """``{height, state_root, value}`` of a contract's key (with ``proof``: and a proof)."""
        result: dict[str, Any] = self.call("svm_getState", _hex(contract), _hex(key), height, proof)
        return result

    def call_contract(
        self,
        contract: bytes,
        method: str,
        input: bytes = b"",
        sender: bytes | None = None,
        height: int | None = None,
        gas_limit: int | None = None,
    ) -> dict[str, Any]:
        """A read-only call's receipt ``{status, return_data, gas_used, error, events}``."""
        result: dict[str, Any] = self.call(
            "svm_call",
            _hex(contract),
            method,
            _hex(input),
            None if sender is None else _hex(sender),
            height,
            gas_limit,
        )
        return result

    def nonce(self, address: bytes) -> dict[str, Any]:
        """``{nonce, next}``: the nonce the chain expects from ``address``, and the mempool's."""
        result: dict[str, Any] = self.call("svm_getNonce", _hex(address))
        return result

    def wait_for_block(self, after: int, timeout_ms: int = 10_000) -> dict[str, Any]:
        """The head once its height is above ``after``, or at the timeout (as :meth:`head`)."""
        result: dict[str, Any] = self._call(
            "svm_waitForBlock",
            [after, timeout_ms],
            {},
            timeout=max(self.timeout, timeout_ms / 1000 + 5.0),
        )
        return result

    def mempool(self) -> dict[str, Any]:
        """``{count, bytes, max_count, max_bytes}`` of the node's mempool."""
        result: dict[str, Any] = self.call("svm_mempool")
        return result

    def status(self) -> dict[str, Any]:
        """``{chain_id, head, mempool, recent_blocks}``."""
        result: dict[str, Any] = self.call("svm_status")
        return result


def verify_state_proof(
    result: dict[str, Any], contract: bytes, key: bytes, state_root: bytes
) -> bool:
    """Whether a ``svm_getState`` answer with ``proof`` shows its value for ``contract``'s
    ``key`` under the trusted ``state_root``.

    ValueError if ``result`` holds no proof.
    """
    encoded = result.get("proof")
    if not isinstance(encoded, str):
        raise ValueError("the answer holds no proof: ask for it with get_state(..., proof=True)")
    try:
        proof = StateProof.decode(bytes.fromhex(encoded))
        value = result.get("value")
        expected = None if value is None else bytes.fromhex(value)
    except (ValueError, TypeError):
        return False
    if proof.key != state_key(contract, key) or proof.value != expected:
        return False
    if result.get("height") != proof.height:
        return False
    return proof.verify(state_root)
