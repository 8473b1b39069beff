"""The node's JSON-RPC 2.0 API over HTTP (Starlette), as docs/rpc.md describes it.

:func:`create_app` builds the ASGI app for a :class:`~supervm_node.node.Node`: ``POST /rpc``
(and ``POST /``) take one request or a batch, ``GET /`` serves the status page,
``GET /metrics`` the Prometheus metrics and ``GET /health`` the node's health. Every method
runs in a worker thread under a timeout. :func:`serve` (from :mod:`supervm_node.serve`) runs
an app under uvicorn until SIGINT or SIGTERM; :class:`BackgroundServer` runs one in a thread
(tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervm.chain import BlockHeader, Head, PrunedHeightError, Transaction
from supervm.chain.header import BlockFormatError
from supervm.layout import state_key
from supervm.sync import block_write_set
from supervm.vm.runtime import DEFAULT_GAS_LIMIT, Receipt
from supervm_node.errors import TransactionRefused
from supervm_node.light import LightClientError
from supervm_node.serve import serve
from supervm_node.snapshots import MAX_PART, UnknownSnapshot

if TYPE_CHECKING:
    from supervm_node.lightnode import LightNode
    from supervm_node.node import Node, TxInfo

__all__ = [
    "LIGHT_METHODS",
    "MAX_WAIT_MS",
    "METHODS",
    "BackgroundServer",
    "create_app",
    "create_light_app",
    "receipt_json",
    "serve",
    "transaction_json",
]

logger = logging.getLogger("supervm_node.rpc")

#: The longest ``svm_waitForBlock`` may wait (``timeout_ms``).
MAX_WAIT_MS = 30_000
#: Headers ``svm_status`` lists.
STATUS_BLOCKS = 10
_DEFAULT_PAGE = Path(__file__).parent / "static" / "index.html"
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]*)")
_ADDRESS = 20
_HASH = 32

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PRUNED_HEIGHT = -32010
HEIGHT_ABOVE_HEAD = -32011
#: A light node could not verify the peer's answer.
LIGHT_REFUSED = -32013
TIMEOUT = -32030
_CODE_NAMES = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
}


class RpcFault(Exception):
    """A JSON-RPC error to answer with: code, message and optional data."""

    def __init__(self, code: int, message: str, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def outcome(self) -> str:
        """The metrics label: the node's reason, or the standard code's name."""
        if self.data is not None and isinstance(self.data.get("reason"), str):
            return str(self.data["reason"])
        return _CODE_NAMES.get(self.code, str(self.code))

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# -- parameters ----------------------------------------------------------------------------

_REQUIRED: Any = object()


@dataclass(frozen=True)
class _Param:
    name: str
    parse: Callable[[str, object], object]
    default: object = _REQUIRED


def _bad(name: str, what: str) -> RpcFault:
    return RpcFault(INVALID_PARAMS, f"invalid params: '{name}' {what}")


def _hex(size: int | None = None) -> Callable[[str, object], bytes]:
    def parse(name: str, value: object) -> bytes:
        if not isinstance(value, str):
            raise _bad(name, f"must be a hex string, not {_json_type(value)}")
        match = _HEX.fullmatch(value)
        if match is None or len(match.group(1)) % 2:
            raise _bad(name, f"is not hex: {_clip(value)!r}")
        data = bytes.fromhex(str(match.group(1)))
        if size is not None and len(data) != size:
            raise _bad(name, f"must be {size} bytes, not {len(data)}")
        return data

    return parse


def _int(name: str, value: object) -> int:
    if type(value) is not int:
        raise _bad(name, f"must be an integer, not {_json_type(value)}")
    if value < 0:
        raise _bad(name, f"must be >= 0, not {value}")
    return value


def _opt_int(name: str, value: object) -> int | None:
    return None if value is None else _int(name, value)


def _bool(name: str, value: object) -> bool:
    if type(value) is not bool:
        raise _bad(name, f"must be true or false, not {_json_type(value)}")
    return value


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(name, f"must be a string, not {_json_type(value)}")
    return value


def _block_ref(name: str, value: object) -> int | bytes:
    if type(value) is int:
        return _int(name, value)
    if isinstance(value, str):
        return _hex(_HASH)(name, value)
    raise _bad(name, f"must be a height (integer) or a block hash (hex), not {_json_type(value)}")


def _opt_address(name: str, value: object) -> bytes | None:
    return None if value is None else _hex(_ADDRESS)(name, value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _bind(method: str, spec: Sequence[_Param], params: object) -> dict[str, Any]:
    """The method's arguments by name, parsed from positional or named ``params``."""
    given: dict[str, object]
    if params is None:
        given = {}
    elif isinstance(params, list):
        if len(params) > len(spec):
            raise RpcFault(
                INVALID_PARAMS,
                f"invalid params: {method} takes at most {len(spec)} params, not {len(params)}",
            )
        given = {p.name: v for p, v in zip(spec, params, strict=False)}
    else:
        assert isinstance(params, dict)
        names = {p.name for p in spec}
        unknown = sorted(set(params) - names)
        if unknown:
            raise RpcFault(
                INVALID_PARAMS,
                f"invalid params: unknown param '{unknown[0]}' "
                f"({method} takes {', '.join(p.name for p in spec) or 'none'})",
            )
        given = dict(params)
    args: dict[str, Any] = {}
    for param in spec:
        if param.name in given:
            args[param.name] = param.parse(param.name, given[param.name])
        elif param.default is _REQUIRED:
            raise _bad(param.name, "is missing")
        else:
            args[param.name] = param.default
    return args


# -- results -------------------------------------------------------------------------------


def _head_json(node: Node, head: Head) -> dict[str, object]:
    header = node.chain.header(head.height) if head.height else None
    return {
        "height": head.height,
        "hash": head.block_hash.hex(),
        "state_root": head.state_root.hex(),
        "timestamp": 0 if header is None else header.timestamp,
    }


def transaction_json(tx: Transaction) -> dict[str, object]:
    """A transaction object (docs/rpc.md)."""
    return {
        "hash": tx.hash.hex(),
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "sender": tx.sender.hex(),
        "public_key": tx.public_key.hex(),
        "contract": tx.contract.hex(),
        "method": tx.method,
        "input": tx.input.hex(),
        "gas_limit": tx.gas_limit,
        "owned": tx.owned,
        "signature": tx.signature.hex(),
    }


def receipt_json(receipt: Receipt) -> dict[str, object]:
    """A receipt object (docs/rpc.md)."""
    return {
        "status": receipt.status.value,
        "return_data": receipt.return_data.hex(),
        "gas_used": receipt.gas_used,
        "error": receipt.error,
        "events": [
            {"contract": e.contract.hex(), "topic": e.topic.hex(), "data": e.data.hex()}
            for e in receipt.events
        ],
    }


def _tx_info_json(info: TxInfo) -> dict[str, object]:
    return {
        "hash": info.transaction.hash.hex(),
        "status": info.status,
        "height": info.height,
        "index": info.index,
        "block_hash": None if info.block_hash is None else info.block_hash.hex(),
        "transaction": transaction_json(info.transaction),
        "receipt": None if info.receipt is None else receipt_json(info.receipt),
    }


def _check_height(node: Node, height: int | None) -> tuple[int, int]:
    """``height`` (default: the head's) and the head's height; -32011 above the head."""
    head = node.chain.head().height
    if height is None:
        return head, head
    if height > head:
        raise RpcFault(
            HEIGHT_ABOVE_HEAD,
            f"height {height} is above the head, {head}",
            {"reason": "height_above_head", "height": height, "head": head},
        )
    return height, head


def _state_root_at(node: Node, height: int) -> bytes:
    header = node.chain.header(height) if height else None
    return node.chain.head().state_root if header is None else header.state_root


# -- methods ---------------------------------------------------------------------------------


def _chain_id(node: Node) -> object:
    return node.chain_id


def _head(node: Node) -> object:
    return _head_json(node, node.chain.head())


def _send_transaction(node: Node, tx: bytes) -> object:
    try:
        transaction = Transaction.decode(tx)
    except BlockFormatError as exc:
        raise _bad("tx", f"is not a transaction: {exc}") from None
    return {"hash": node.submit(transaction).hex()}


def _get_transaction(node: Node, hash: bytes) -> object:
    info = node.lookup(hash)
    return None if info is None else _tx_info_json(info)


def _get_block(node: Node, block: int | bytes, full: bool) -> object:
    chain = node.chain
    if isinstance(block, bytes):
        found = chain.height_of(block)
        if found is None:
            return None
        height = found
    else:
        height = block
    header: BlockHeader | None = chain.header(height) if height else None
    body = None if header is None else chain.block(height)
    if header is None or body is None:
        return None
    result: dict[str, object] = header.to_json()
    if full:
        result["transactions"] = [transaction_json(tx) for tx in body.transactions]
    else:
        result["transactions"] = [tx.hash.hex() for tx in body.transactions]
    return result


def _get_state(node: Node, contract: bytes, key: bytes, height: int | None, proof: bool) -> object:
    at, _ = _check_height(node, height)
    if proof:
        state_proof = node.chain.prove_state(contract, key, at)
        value, root = state_proof.value, state_proof.state_root
    else:
        value = node.chain.at(at).get(state_key(contract, key))
        root = _state_root_at(node, at)
    result: dict[str, object] = {
        "height": at,
        "state_root": root.hex(),
        "value": None if value is None else value.hex(),
    }
    if proof:
        result["proof"] = state_proof.encode().hex()
    return result


def _call(
    node: Node,
    contract: bytes,
    method: str,
    input: bytes,
    sender: bytes | None,
    height: int | None,
    gas_limit: int | None,
) -> object:
    at, _ = _check_height(node, height)
    view = node.chain.at(at)
    header = node.chain.header(at) if at else None
    receipt = node.chain.runtime.run(
        contract,
        method,
        input,
        sender=b"\0" * _ADDRESS if sender is None else sender,
        gas_limit=DEFAULT_GAS_LIMIT if gas_limit is None else gas_limit,
        block_height=at,
        block_timestamp=0 if header is None else header.timestamp,
        view=view,
    )
    return receipt_json(receipt)


def _get_nonce(node: Node, address: bytes) -> object:
    return {"nonce": node.chain_nonce(address), "next": node.mempool.next_nonce(address)}


def _wait_for_block(node: Node, after: int, timeout_ms: int) -> object:
    return _head_json(node, node.wait_for_block(after, timeout_ms / 1000))


def _get_block_data(node: Node, height: int, write_set: bool) -> object:
    if height == 0:
        raise _bad("height", "must be >= 1: block 0 is the empty chain before the first block")
    at, head = _check_height(node, height)
    chain = node.chain
    if write_set:
        chain.history.check_height(at, head)  # -32010 below the horizon
    header = chain.header(at)
    body = chain.block(at)
    if header is None or body is None:
        raise RpcFault(INTERNAL_ERROR, f"block {at} is missing from the store")
    result: dict[str, object] = {
        "header": header.encode().hex(),
        "transactions": [tx.encode().hex() for tx in body.transactions],
    }
    if write_set:
        result["write_set"] = [
            [key.hex(), None if value is None else value.hex()]
            for key, value in block_write_set(chain, at)
        ]
    return result


def _snapshot_info(node: Node, height: int | None) -> object:
    at, _ = _check_height(node, height)
    if at == 0:
        raise RpcFault(
            HEIGHT_ABOVE_HEAD, "there is no block to snapshot yet",
            {"reason": "height_above_head", "height": at, "head": 0},
        )  # fmt: skip
    return node.snapshots().info(height).to_json()


def _snapshot_part(node: Node, id: str, offset: int, length: int) -> object:
    if not 1 <= length <= MAX_PART:
        raise _bad("length", f"must be 1 to {MAX_PART}, not {length}")
    try:
        return node.snapshots().part(id, offset, length)
    except UnknownSnapshot as exc:
        raise _bad("id", str(exc)) from None


def _sync_status(node: Node) -> object:
    return node.sync_status()


def _mempool_json(node: Node) -> dict[str, object]:
    pool = node.mempool
    return {
        "count": pool.count,
        "bytes": pool.bytes,
        "max_count": pool.max_count,
        "max_bytes": pool.max_bytes,
    }


def _mempool(node: Node) -> object:
    return _mempool_json(node)


def _status(node: Node) -> object:
    return {
        "chain_id": node.chain_id,
        "head": _head_json(node, node.chain.head()),
        "mempool": _mempool_json(node),
        "recent_blocks": [h.to_json() for h in node.recent_blocks(STATUS_BLOCKS)],
    }


@dataclass(frozen=True)
class _Method:
    run: Callable[..., object]
    params: tuple[_Param, ...] = ()


def _wait_ms(name: str, value: object) -> int:
    ms = _int(name, value)
    if ms > MAX_WAIT_MS:
        raise _bad(name, f"must be at most {MAX_WAIT_MS}, not {ms}")
    return ms


METHODS: Mapping[str, _Method] = {
    "svm_chainId": _Method(_chain_id),
    "svm_head": _Method(_head),
    "svm_sendTransaction": _Method(_send_transaction, (_Param("tx", _hex()),)),
    "svm_getTransaction": _Method(_get_transaction, (_Param("hash", _hex(_HASH)),)),
    "svm_getBlock": _Method(
        _get_block, (_Param("block", _block_ref), _Param("full", _bool, False))
    ),
    "svm_getState": _Method(
        _get_state,
        (
            _Param("contract", _hex(_ADDRESS)),
            _Param("key", _hex()),
            _Param("height", _opt_int, None),
            _Param("proof", _bool, False),
        ),
    ),
    "svm_call": _Method(
        _call,
        (
            _Param("contract", _hex(_ADDRESS)),
            _Param("method", _str),
            _Param("input", _hex(), b""),
            _Param("sender", _opt_address, None),
            _Param("height", _opt_int, None),
            _Param("gas_limit", _opt_int, None),
        ),
    ),
    "svm_getNonce": _Method(_get_nonce, (_Param("address", _hex(_ADDRESS)),)),
    "svm_waitForBlock": _Method(
        _wait_for_block, (_Param("after", _int), _Param("timeout_ms", _wait_ms, 10_000))
    ),
    "svm_mempool": _Method(_mempool),
    "svm_status": _Method(_status),
    "svm_getBlockData": _Method(
        _get_block_data, (_Param("height", _int), _Param("write_set", _bool, False))
    ),
    "svm_snapshotInfo": _Method(_snapshot_info, (_Param("height", _opt_int, None),)),
    "svm_snapshotPart": _Method(
        _snapshot_part, (_Param("id", _str), _Param("offset", _int), _Param("length", _int))
    ),
    "svm_syncStatus": _Method(_sync_status),
}


# -- a light node's methods ---------------------------------------------------------------


def _light_header_json(header: BlockHeader | None) -> dict[str, object]:
    if header is None:
        return {"height": 0, "hash": "00" * 32, "state_root": None, "timestamp": 0}
    return {
        "height": header.height,
        "hash": header.hash.hex(),
        "state_root": header.state_root.hex(),
        "timestamp": header.timestamp,
    }


def _light_block(node: LightNode, block: int | bytes, full: bool) -> object:
    if isinstance(block, bytes):
        raise _bad("block", "is a height on a light node (it keeps no index by hash)")
    header = node.light.header(block) if block else None
    return None if header is None else header.to_json()


def _light_state(
    node: LightNode, contract: bytes, key: bytes, height: int | None, proof: bool
) -> object:
    at = node.light.height if height is None else height
    if at > node.light.height:
        raise RpcFault(
            HEIGHT_ABOVE_HEAD,
            f"height {at} is above the light node's head, {node.light.height}",
            {"reason": "height_above_head", "height": at, "head": node.light.height},
        )
    try:
        value = node.light.get_state(contract, key, at)
    except LightClientError as exc:
        raise RpcFault(
            LIGHT_REFUSED, str(exc), {"reason": "unverified", "why": exc.reason}
        ) from None
    header = node.light.header(at)
    return {
        "height": at,
        "state_root": None if header is None else header.state_root.hex(),
        "value": None if value is None else value.hex(),
        "verified": True,
    }


LIGHT_METHODS: Mapping[str, _Method] = {
    "svm_chainId": _Method(lambda node: node.chain_id),
    "svm_head": _Method(lambda node: _light_header_json(node.head())),
    "svm_getBlock": _Method(
        _light_block, (_Param("block", _block_ref), _Param("full", _bool, False))
    ),
    "svm_getState": _Method(
        _light_state,
        (
            _Param("contract", _hex(_ADDRESS)),
            _Param("key", _hex()),
            _Param("height", _opt_int, None),
            _Param("proof", _bool, False),
        ),
    ),
    "svm_syncStatus": _Method(lambda node: node.sync_status()),
}


# -- metrics ---------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "supervm_rpc_requests_total",
            "JSON-RPC requests by method and outcome (ok, or the error's name).",
            ["method", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "supervm_rpc_request_seconds",
            "Time to answer a JSON-RPC request, by method.",
            ["method"],
            registry=registry,
        )
        self.http = Counter(
            "supervm_rpc_http_requests_total",
            "HTTP requests by path and status.",
            ["path", "status"],
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _METRICS_LOCK:
        metrics = _METRICS.get(registry)
        if metrics is None:
            metrics = _METRICS[registry] = _Metrics(registry)
        return metrics


class _HttpMetrics:
    """ASGI middleware counting HTTP requests by path and status."""

    def __init__(self, app: ASGIApp, metrics: _Metrics, paths: frozenset[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.paths else "other"
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http.labels(path, str(status)).inc()


# -- the app ---------------------------------------------------------------------------------


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json_response(value: object, status: int = 200) -> Response:
    return Response(_dumps(value), status_code=status, media_type="application/json")


def _error_entry(fault: RpcFault, id_: object = None) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": id_, "error": fault.to_json()}


@dataclass(frozen=True)
class _Call:
    """A well-formed request: its id, whether it is a notification, method and params."""

    id: object
    notification: bool
    name: str
    params: object

    def answer(self, result: object = None, fault: RpcFault | None = None) -> Entry:
        if self.notification:
            return None
        if fault is not None:
            return _error_entry(fault, self.id)
        return {"jsonrpc": "2.0", "id": self.id, "result": result}


#: A response object, or ``None`` for a notification.
Entry = dict[str, object] | None


class _Dispatcher:
    """Runs JSON-RPC requests against a node, with timeouts, metrics and logs.

    A request runs on a worker thread under its method's timeout. The requests of a batch
    run in order on one worker thread (its timeout: the method timeout per request), the
    signatures of consecutive ``svm_sendTransaction`` requests checked in parallel first;
    a ``svm_waitForBlock`` in a batch runs on its own.
    """

    def __init__(
        self,
        node: Any,
        metrics: _Metrics,
        method_timeout: float,
        methods: Mapping[str, _Method] | None = None,
    ) -> None:
        self.node = node
        self.methods = METHODS if methods is None else methods
        self.metrics = metrics
        self.method_timeout = method_timeout
        # Long polls wait on their own threads, so they never starve other methods.
        self.wait_limiter = anyio.CapacityLimiter(256)

    def _parse(self, request: object) -> _Call | Entry:
        """The request as a call, or the error answering it."""
        if not isinstance(request, dict):
            fault = RpcFault(INVALID_REQUEST, "invalid request: not a JSON-RPC request object")
            self.count("-", fault)
            return _error_entry(fault)
        id_ = request.get("id")
        notification = "id" not in request
        if not (id_ is None or isinstance(id_, str) or type(id_) in (int, float)):
            fault = RpcFault(INVALID_REQUEST, "invalid request: 'id' is a string, number or null")
            self.count("-", fault)
            return _error_entry(fault)
        method = request.get("method")
        params = request.get("params")
        problem: str | None = None
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            problem = 'invalid request: needs "jsonrpc": "2.0" and a string \'method\''
        elif params is not None and not isinstance(params, list | dict):
            problem = "invalid request: 'params' is an array or object"
        if problem is not None:
            fault = RpcFault(INVALID_REQUEST, problem)
            self.count("-", fault)
            return None if notification else _error_entry(fault, id_)
        assert isinstance(method, str)
        return _Call(id_, notification, method, params)

    async def one(self, request: object) -> Entry:
        """The response to one request object (``None`` for a notification)."""
        call = self._parse(request)
        if not isinstance(call, _Call):
            return call
        return (await self._group([call]))[0]

    async def many(self, requests: list[object]) -> list[Entry]:
        """The responses to a batch's requests, in order."""
        answers: list[Entry] = []
        group: list[_Call] = []
        for request in requests:
            call = self._parse(request)
            if isinstance(call, _Call) and call.name != "svm_waitForBlock":
                group.append(call)
                continue
            if group:
                answers += await self._group(group)
                group = []
            if isinstance(call, _Call):
                answers += await self._group([call])
            else:
                answers.append(call)
        if group:
            answers += await self._group(group)
        return answers

    async def _group(self, calls: list[_Call]) -> list[Entry]:
        """Run ``calls`` in order on one worker thread, under their timeout."""
        limiter: anyio.CapacityLimiter | None = None
        timeout = self.method_timeout * len(calls)
        if len(calls) == 1 and calls[0].name == "svm_waitForBlock":
            limiter = self.wait_limiter
            given = calls[0].params
            wait_ms = 10_000
            if isinstance(given, list) and len(given) > 1 and type(given[1]) is int:
                wait_ms = given[1]
            elif isinstance(given, dict) and type(given.get("timeout_ms")) is int:
                wait_ms = given["timeout_ms"]
            timeout = min(max(wait_ms, 0), MAX_WAIT_MS) / 1000 + self.method_timeout
        done: list[Entry] = []
        cancelled = threading.Event()
        try:
            with anyio.fail_after(timeout):
                await anyio.to_thread.run_sync(
                    lambda: self._run_all(calls, done, cancelled),
                    abandon_on_cancel=True,
                    limiter=limiter,
                )
        except TimeoutError:
            cancelled.set()
            finished = list(done)
            answers = finished
            for call in calls[len(finished) :]:
                fault = RpcFault(
                    TIMEOUT,
                    f"{call.name} overran its timeout ({timeout:g} s)",
                    {"reason": "timeout", "timeout_ms": round(timeout * 1000)},
                )
                self.count(call.name, fault)
                answers.append(call.answer(fault=fault))
            return answers
        return done

    def _run_all(self, calls: list[_Call], done: list[Entry], cancelled: threading.Event) -> None:
        """Run ``calls`` in order (on a worker thread), appending each answer to ``done``."""
        at = 0
        while at < len(calls) and not cancelled.is_set():
            end = at
            while end < len(calls) and calls[end].name == "svm_sendTransaction":
                end += 1
            if end - at > 1:
                done.extend(self._send_many(calls[at:end]))
                at = end
                continue
            done.append(self._run_one(calls[at]))
            at += 1

    def _send_many(self, calls: list[_Call]) -> list[Entry]:
        """Consecutive ``svm_sendTransaction`` calls: decoded, then submitted together."""
        start = time.perf_counter()
        answers: list[Entry | _Call] = []
        txs: list[Transaction] = []
        method = self.methods["svm_sendTransaction"]
        for call in calls:
            try:
                args = _bind(call.name, method.params, call.params)
                try:
                    txs.append(Transaction.decode(args["tx"]))
                except BlockFormatError as exc:
                    raise _bad("tx", f"is not a transaction: {exc}") from None
                answers.append(call)
            except RpcFault as fault:
                self.count(call.name, fault)
                answers.append(call.answer(fault=fault))
        results = iter(self.node.submit_many(txs))
        entries: list[Entry] = []
        for answer in answers:
            if not isinstance(answer, _Call):
                entries.append(answer)
                continue
            result = next(results)
            if isinstance(result, TransactionRefused):
                refusal = self._refused(result)
                self.count(answer.name, refusal)
                entries.append(answer.answer(fault=refusal))
            else:
                self.metrics.requests.labels(answer.name, "ok").inc()
                entries.append(answer.answer({"hash": result.hex()}))
        share = (time.perf_counter() - start) / len(calls)
        observe = self.metrics.seconds.labels("svm_sendTransaction").observe
        for _ in calls:
            observe(share)
        return entries

    @staticmethod
    def _refused(exc: TransactionRefused) -> RpcFault:
        return RpcFault(exc.code, str(exc), {"reason": str(exc.reason), **exc.details})

    def _run_one(self, call: _Call) -> Entry:
        """Run one call on this thread: its answer."""
        name = call.name
        method = self.methods.get(name)
        if method is None:
            fault = RpcFault(METHOD_NOT_FOUND, f"method not found: {_clip(name)!r}")
            self.count("unknown", fault)
            return call.answer(fault=fault)
        start = time.perf_counter()
        try:
            args = _bind(name, method.params, call.params)
            result = method.run(self.node, **args)
        except RpcFault as fault:
            self.count(name, fault)
            return call.answer(fault=fault)
        except TransactionRefused as exc:
            refused = self._refused(exc)
            self.count(name, refused)
            return call.answer(fault=refused)
        except PrunedHeightError as exc:
            pruned = RpcFault(
                PRUNED_HEIGHT,
                str(exc),
                {"reason": "pruned_height", "height": exc.height, "horizon": exc.horizon},
            )
            self.count(name, pruned)
            return call.answer(fault=pruned)
        except Exception:
            logger.warning(
                "internal error in %s",
                name,
                exc_info=True,
                extra={"method": name, "code": INTERNAL_ERROR},
            )
            internal = RpcFault(INTERNAL_ERROR, f"internal error in {name}")
            self.count(name, internal, logged=True)
            return call.answer(fault=internal)
        finally:
            self.metrics.seconds.labels(name).observe(time.perf_counter() - start)
        self.metrics.requests.labels(name, "ok").inc()
        return call.answer(result)

    def count(self, method: str, fault: RpcFault, *, logged: bool = False) -> None:
        """Count a refused or failed request in the metrics, and log it unless ``logged``."""
        self.metrics.requests.labels(method, fault.outcome).inc()
        if not logged:
            level = logging.WARNING if fault.code == TIMEOUT else logging.INFO
            logger.log(
                level,
                "%s refused: %s (%d)",
                method,
                fault.message,
                fault.code,
                extra={"method": method, "code": fault.code, "outcome": fault.outcome},
            )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        with contextlib.suppress(ValueError):
            if int(declared) > limit:
                return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_light_app(
    node: LightNode, *, max_body: int = 1 << 20, max_batch: int = 1000, method_timeout: float = 5.0
) -> Starlette:
    """A light node's HTTP app: its JSON-RPC methods (:data:`LIGHT_METHODS`), metrics and
    health; no status page."""
    return create_app(
        node, max_body=max_body, max_batch=max_batch, method_timeout=method_timeout,
        methods=LIGHT_METHODS, status_page=Path("/nonexistent"),
    )  # fmt: skip


def create_app(
    node: Any,
    *,
    max_body: int = 1 << 20,
    max_batch: int = 1000,
    method_timeout: float = 5.0,
    status_page: Path | None = None,
    methods: Mapping[str, _Method] | None = None,
) -> Starlette:
    """The node's HTTP app: JSON-RPC, status page, metrics and health (docs/rpc.md).

    ``node`` is a :class:`~supervm_node.node.Node` (``methods``: :data:`METHODS`); the
    app starts it when it starts and stops it when it shuts down.
    """
    metrics = _metrics_for(node.registry)
    dispatcher = _Dispatcher(node, metrics, method_timeout, methods)

    async def rpc(request: Request) -> Response:
        body = await _read_body(request, max_body)
        if body is None:
            fault = RpcFault(INVALID_REQUEST, f"request body exceeds the limit of {max_body} bytes")
            dispatcher.count("-", fault)
            return _json_response(_error_entry(fault), 413)
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:
            fault = RpcFault(PARSE_ERROR, f"parse error: {exc}")
            dispatcher.count("-", fault)
            return _json_response(_error_entry(fault))
        if isinstance(message, list):
            if not message:
                fault = RpcFault(INVALID_REQUEST, "invalid request: the batch is empty")
                dispatcher.count("-", fault)
                return _json_response(_error_entry(fault))
            if len(message) > max_batch:
                fault = RpcFault(
                    INVALID_REQUEST,
                    f"invalid request: a batch holds at most {max_batch} requests, "
                    f"not {len(message)}",
                )
                dispatcher.count("-", fault)
                return _json_response(_error_entry(fault))
            answers = await dispatcher.many(message)
            entries = [a for a in answers if a is not None]
            return _json_response(entries) if entries else Response(status_code=204)
        answer = await dispatcher.one(message)
        return Response(status_code=204) if answer is None else _json_response(answer)

    async def index(request: Request) -> Response:
        page = status_page if status_page is not None else _DEFAULT_PAGE
        if not page.is_file():
            return PlainTextResponse("no status page", status_code=404)
        return FileResponse(page, media_type="text/html")

    async def metrics_page(request: Request) -> Response:
        data = await anyio.to_thread.run_sync(generate_latest, node.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        report = await anyio.to_thread.run_sync(node.health)
        return JSONResponse(report, status_code=200 if report.get("ok") else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(node.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(node.stop)

    routes = [
        Route("/rpc", rpc, methods=["POST"]),
        Route("/", rpc, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    paths = frozenset(r.path for r in routes)
    app.add_middleware(_HttpMetrics, metrics=metrics, paths=paths)
    return app


# -- serving ---------------------------------------------------------------------------------


class BackgroundServer:
    """Serves an app with uvicorn on a thread, on 127.0.0.1 (``port`` 0: a free port).

    Use it as a context manager: entering starts the server (and the app's lifespan) and
    waits until it listens, leaving stops it. :attr:`url` is the server's base URL.
    """

    def __init__(
        self, app: ASGIApp, *, port: int = 0, start_timeout: float = 30.0, **uvicorn_kwargs: Any
    ) -> None:
        self.app = app
        self.port = port
        self.start_timeout = start_timeout
        self.uvicorn_kwargs = uvicorn_kwargs
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (once started)."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving and wait until the server listens (RuntimeError if it does not)."""
        if self._server is not None:
            raise RuntimeError("the server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on"}
        options.update(self.uvicorn_kwargs)
        server = uvicorn.Server(uvicorn.Config(self.app, **options))

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by start()
                self._error = exc
            finally:
                sock.close()

        thread = threading.Thread(target=run, name="supervm-rpc", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "the RPC server did not start"
                    + (f": {self._error!r}" if self._error is not None else "")
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (after the requests in flight) and wait for the server's thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
