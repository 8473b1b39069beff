"""A light client: the header chain only, on any SuperVM store, and values with proofs.

:class:`LightClient` syncs block headers from a full node over JSON-RPC (batches of
``svm_getBlock``) and checks each one: its hash is the one the node claims, its height is
the next and its parent hash is the previous header's hash (the first header's parent is
the zero hash). :meth:`LightClient.get_state` asks the node for a value with its proof
(``svm_getState`` with ``proof``) and accepts it only if the proof is for that key and
height, proves that value, and verifies against the state root of the light client's own
header at that height; the root the node claims is never used.

The records live under ``meta/light/`` (:data:`supervm.layout.LIGHT_PREFIX`):
``header/`` + height (8 bytes, big-endian) the encoded header, ``height`` the head
(8 bytes), ``chain_id`` the chain (8 bytes).

A header is stored once its successor links to it, when it is the node's head at the
start of the sync, or when its successor is refused for itself (its hash, height or
fields); when a header's parent hash contradicts its predecessor, neither is kept.
Nothing here checks who produced a header: the light client takes the chain from its
peer and checks everything else against it.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from supervm.chain.header import ZERO_HASH, BlockFormatError, BlockHeader
from supervm.chain.proofs import StateProof
from supervm.client import Client, RpcError
from supervm.errors import SuperVMError
from supervm.layout import LIGHT_PREFIX, MARKER, check_layout, state_key
from supervm.storage import BatchOp, Storage
from supervm.tree import ProofError

__all__ = ["LightClient", "LightClientError", "LightStats"]

_HEADER_PREFIX = LIGHT_PREFIX + b"header/"
_HEIGHT_KEY = LIGHT_PREFIX + b"height"
_CHAIN_ID_KEY = LIGHT_PREFIX + b"chain_id"
_U64 = struct.Struct(">Q")
_HEADER_FIELDS = ("parent_hash", "transactions_root", "state_root", "receipts_root")

#: Called after each stored batch with the light client's height and the sync's target.
Progress = Callable[[int, int], None]


def _header_key(height: int) -> bytes:
    return _HEADER_PREFIX + _U64.pack(height)


class LightClientError(SuperVMError):
    """The peer's answer does not check out; ``reason`` says how, ``height`` where."""

    def __init__(self, reason: str, message: str, *, height: int | None = None) -> None:
        where = "" if height is None else f" at height {height}"
        super().__init__(f"{reason}{where}: {message}")
        self.reason = reason
        self.height = height


@dataclass(frozen=True)
class LightStats:
    """Counters of a light client since it was opened."""

    headers_synced: int = 0
    headers_refused: int = 0
    proofs_verified: int = 0
    proofs_refused: int = 0
    #: Seconds spent in :meth:`LightClient.sync`.
    sync_seconds: float = 0.0

    @property
    def sync_rate(self) -> float:
        """Headers stored per second of sync (0 before any)."""
        return self.headers_synced / self.sync_seconds if self.sync_seconds > 0 else 0.0


class _Refused(Exception):
    """One header that does not check out (``link``: its parent hash is the fault)."""

    def __init__(self, reason: str, message: str, *, link: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.link = link


def _hex32(result: dict[str, Any], name: str) -> bytes:
    value = result.get(name)
    if not isinstance(value, str):
        raise _Refused("malformed header", f"{name} is {value!r}, not hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _Refused("malformed header", f"{name} is not hex: {value!r}") from None
    if len(raw) != 32:
        raise _Refused("malformed header", f"{name} is {len(raw)} bytes, not 32")
    return raw


def _header_from_json(result: object, height: int) -> BlockHeader:
    if result is None:
        raise _Refused("missing block", "the peer has no block there")
    if isinstance(result, RpcError):
        raise _Refused("peer error", f"the peer answered {result}")
    if not isinstance(result, dict):
        raise _Refused("malformed header", f"the answer is {type(result).__name__}, not an object")
    got, timestamp = result.get("height"), result.get("timestamp")
    if type(got) is not int or got != height:
        raise _Refused("wrong height", f"the answer is for height {got!r}")
    if type(timestamp) is not int:
        raise _Refused("malformed header", f"timestamp is {timestamp!r}")
    roots = [_hex32(result, name) for name in _HEADER_FIELDS]
    try:
        header = BlockHeader(height, roots[0], timestamp, roots[1], roots[2], roots[3])
    except ValueError as exc:
        raise _Refused("malformed header", str(exc)) from None
    claimed = _hex32(result, "hash")
    if header.hash != claimed:
        raise _Refused(
            "hash mismatch",
            f"the fields hash to {header.hash.hex()}, the peer claims {claimed.hex()}",
        )
    return header


class LightClient:
    """The header chain of ``peer`` (a node URL or a :class:`Client`) kept in ``store``.

    ``batch``: heights per JSON-RPC batch of ``svm_getBlock`` (at most the node's
    ``--max-batch``, 1,000 by default). The light client owns ``store`` (:meth:`close`
    closes it) and, when given a URL, its client. It may be shared by threads.
    """

    def __init__(self, store: Storage, peer: str | Client, *, batch: int = 256) -> None:
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, not {batch!r}")
        self.store = store
        self.batch = batch
        self._own_client = isinstance(peer, str)
        self.client = Client(peer) if isinstance(peer, str) else peer
        self._marked = check_layout(store)
        raw = store.get(_CHAIN_ID_KEY)
        self._chain_id: int | None = None if raw is None else _U64.unpack(raw)[0]
        raw = store.get(_HEIGHT_KEY)
        height = 0 if raw is None else _U64.unpack(raw)[0]
        self._head: BlockHeader | None = None
        self._head = self.header(height) if height else None
        if height and self._head is None:
            raise LightClientError(
                "corrupt store", "the head's header is missing from the store", height=height
            )
        self._peer_checked = False
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._stats = LightStats()

    # -- the local chain -------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The height of the last stored header (0: none)."""
        head = self._head
        return 0 if head is None else head.height

    @property
    def chain_id(self) -> int | None:
        """The chain id of the headers (``None`` before the first sync)."""
        return self._chain_id

    def head(self) -> BlockHeader | None:
        """The last stored header, if any."""
        return self._head

    def header(self, height: int) -> BlockHeader | None:
        """The stored header at ``height``, if any."""
        head = self._head
        if head is not None and head.height == height:
            return head
        raw = self.store.get(_header_key(height))
        return None if raw is None else BlockHeader.decode(raw)

    @property
    def stats(self) -> LightStats:
        """A snapshot of the counters."""
        return self._stats

    @property
    def verify_count(self) -> int:
        """Proofs verified so far."""
        return self._stats.proofs_verified

    def _count(self, **add: float) -> None:
        with self._lock:
            s = self._stats
            self._stats = replace(s, **{name: getattr(s, name) + n for name, n in add.items()})

    # -- syncing ---------------------------------------------------------------------------

    def sync(self, max_headers: int | None = None, progress: Progress | None = None) -> int:
        """Fetch, check and store the headers from the next height to the peer's head.

        At most ``max_headers``; ``progress(height, target)`` after each stored batch.
        Returns how many headers were stored. Raises :class:`LightClientError` for a
        header that does not check out, having stored the good ones before it.
        """
        if max_headers is not None and (type(max_headers) is not int or max_headers < 0):
            raise ValueError(f"max_headers must be an int >= 0, not {max_headers!r}")
        with self._sync_lock:
            started = time.perf_counter()
            try:
                return self._sync(max_headers, progress)
            finally:
                self._count(sync_seconds=time.perf_counter() - started)

    def _sync(self, max_headers: int | None, progress: Progress | None) -> int:
        own = self._head
        peer_height, anchor = self._peer_head(own)
        if own is not None:
            self._check_anchor(own, peer_height, anchor)
        start = 1 if own is None else own.height + 1
        target = peer_height
        if max_headers is not None:
            target = min(target, start - 1 + max_headers)
        # Below the peer's head the last header waits for its successor: fetch it too.
        last = target + 1 if target < peer_height else target
        stored = 0
        parent = own
        pending: BlockHeader | None = None  # linked to its parent, awaiting its successor
        next_height = start
        while start <= target and next_height <= last:
            end = min(next_height + self.batch - 1, last)
            heights = range(next_height, end + 1)
            results = self.client.batch([("svm_getBlock", [h, False]) for h in heights])
            good: list[BlockHeader] = []
            for height, result in zip(heights, results, strict=True):
                try:
                    header = _header_from_json(result, height)
                    self._check_link(header, pending or parent)
                except _Refused as refused:
                    if pending is not None and not refused.link:
                        good.append(pending)  # not contradicted: its successor is the fault
                    self._store(good)
                    self._count(headers_refused=1)
                    raise LightClientError(refused.reason, refused.message, height=height) from None
                if pending is not None:
                    good.append(pending)
                pending = header if height <= target else None
            if end == last == target and pending is not None:
                good.append(pending)  # the peer's head: no successor to wait for
                pending = None
            self._store(good)
            stored += len(good)
            if good:
                parent = good[-1]
            next_height = end + 1
            if progress is not None:
                progress(self.height, target)
        return stored

    def _peer_head(self, own: BlockHeader | None) -> tuple[int, object]:
        """The peer's head height and its answer for the own head's height (``None``: none)."""
        calls: list[tuple[str, list[object]]] = [("svm_head", [])]
        if not self._peer_checked:
            calls.append(("svm_chainId", []))
        if own is not None:
            calls.append(("svm_getBlock", [own.height, False]))
        results = self.client.batch(calls)
        head = results[0]
        chain_id = None if self._peer_checked else results[1]
        for result in (head, chain_id):
            if isinstance(result, RpcError):
                raise result
        peer_height = head.get("height") if isinstance(head, dict) else None
        if type(peer_height) is not int or peer_height < 0:
            raise LightClientError("malformed head", f"the peer's head is {head!r}")
        if not self._peer_checked:
            self._check_chain_id(chain_id)
        return peer_height, results[-1] if own is not None else None

    def _check_chain_id(self, chain_id: object) -> None:
        if type(chain_id) is not int or not 0 <= chain_id < 1 << 64:
            raise LightClientError("malformed chain id", f"the peer's chain id is {chain_id!r}")
        if self._chain_id is not None and chain_id != self._chain_id:
            raise LightClientError(
                "wrong chain",
                f"the peer runs chain {chain_id}, these headers are chain {self._chain_id}",
            )
        if self._chain_id is None:
            self._write([(_CHAIN_ID_KEY, _U64.pack(chain_id))])
            self._chain_id = chain_id
        self._peer_checked = True

    def _check_anchor(self, own: BlockHeader, peer_height: int, anchor: object) -> None:
        """Refuse a peer whose chain differs from the stored one where both have headers."""
        if peer_height < own.height:
            result: object = self.client.get_block(peer_height) if peer_height else None
            mine = self.header(peer_height) if peer_height else None
            at = peer_height
        else:
            result, mine, at = anchor, own, own.height
        if mine is None:
            return
        try:
            theirs = _header_from_json(result, at)
        except _Refused as refused:
            self._count(headers_refused=1)
            raise LightClientError(refused.reason, refused.message, height=at) from None
        if theirs != mine:
            self._count(headers_refused=1)
            raise LightClientError(
                "fork",
                f"the peer's header {theirs.hash.hex()} differs from the stored "
                f"{mine.hash.hex()} (a fork or a lie)",
                height=at,
            )

    @staticmethod
    def _check_link(header: BlockHeader, parent: BlockHeader | None) -> None:
        expected = ZERO_HASH if parent is None else parent.hash
        if header.parent_hash != expected:
            what = "the zero hash" if parent is None else f"height {parent.height}'s hash"
            raise _Refused(
                "broken link",
                f"parent_hash {header.parent_hash.hex()} is not {what} {expected.hex()}",
                link=True,
            )

    def _store(self, headers: list[BlockHeader]) -> None:
        """Store consecutive headers and the new head in one atomic write."""
        if not headers:
            return
        ops: list[BatchOp] = [(_header_key(h.height), h.encode()) for h in headers]
        ops.append((_HEIGHT_KEY, _U64.pack(headers[-1].height)))
        self._write(ops)
        self._head = headers[-1]
        self._count(headers_synced=len(headers))

    def _write(self, ops: list[BatchOp]) -> None:
        if not self._marked:
            ops = [MARKER, *ops]
        self.store.write_batch(ops)
        self._marked = True

    # -- values ----------------------------------------------------------------------------

    def get_state(self, contract: bytes, key: bytes, height: int | None = None) -> bytes | None:
        """``contract``'s value of ``key`` at ``height`` (default: the own head), proven.

        ``None``: the key is absent (proven too). Raises :class:`LightClientError` if the
        height is not synced or the answer does not verify against the own header.
        """
        at = self._synced_height(height)
        answer = self.client.get_state(contract, key, at, proof=True)
        return self.verify_state(answer, contract, key, at)

    def _synced_height(self, height: int | None) -> int:
        own = self.height
        at = own if height is None else height
        if type(at) is not int or not 1 <= at <= own:
            raise LightClientError(
                "height not synced", f"the light client has headers 1 to {own}", height=at
            )
        return at

    def verify_state(
        self, answer: object, contract: bytes, key: bytes, height: int
    ) -> bytes | None:
        """The value an ``svm_getState`` answer (with ``proof``) proves at ``height``.

        The proof must be for ``contract``'s ``key`` at ``height``, prove the answered
        value, and verify against the state root of the stored header at ``height``.
        """
        header = self.header(self._synced_height(height))
        assert header is not None
        try:
            value = self._verified(answer, state_key(contract, key), header)
        except LightClientError:
            self._count(proofs_refused=1)
            raise
        self._count(proofs_verified=1)
        return value

    @staticmethod
    def _verified(answer: object, skey: bytes, header: BlockHeader) -> bytes | None:
        height = header.height

        def refuse(reason: str, message: str) -> LightClientError:
            return LightClientError(reason, message, height=height)

        if not isinstance(answer, dict) or not isinstance(answer.get("proof"), str):
            raise refuse("tampered proof", "the answer holds no proof")
        raw_value = answer.get("value")
        try:
            proof = StateProof.decode(bytes.fromhex(answer["proof"]))
            value = None if raw_value is None else bytes.fromhex(raw_value)
        except (ProofError, BlockFormatError, ValueError, TypeError) as exc:
            raise refuse("tampered proof", f"it does not decode: {exc}") from None
        if proof.key != skey:
            raise refuse("tampered proof", f"it is for key {proof.key.hex()}, not {skey.hex()}")
        if proof.height != height or answer.get("height") != height:
            raise refuse(
                "tampered proof",
                f"it is for height {proof.height} (answer: {answer.get('height')})",
            )
        if proof.value != value:
            raise refuse("value differs from proof", "the answered value is not the proven one")
        if proof.state_root != header.state_root:
            raise refuse(
                "root mismatch",
                f"the proof is against root {proof.state_root.hex()}, the header's state root "
                f"is {header.state_root.hex()}",
            )
        if not proof.verify(header.state_root):
            raise refuse("tampered proof", "it does not verify against the header's state root")
        return value

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store (and the client made from a URL)."""
        if self._own_client:
            self.client.close()
        self.store.close()

    def __enter__(self) -> LightClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
