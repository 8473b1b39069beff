"""A follower: a chain kept in step with a peer node's, every block checked before it commits.

:class:`Follower` asks its peer for blocks over JSON-RPC (batches of ``svm_getBlockData``,
the next batch fetched while the current one is checked) and, for each block in turn,
refuses it unless its parent is the follower's head, its transactions match the header's
transactions root, each transaction is for this chain and its signature verifies. In
``reexecute`` mode the follower then runs the transactions itself and commits its own
result only if its header equals the peer's; in ``apply`` mode it commits the peer's write
set through :meth:`~supervm.chain.Chain.import_block`, which checks the state root.
A refused block stops the follower (:class:`FollowerError`; state ``refused``); the chain
stays at the last good block. Each commit is atomic, so after a crash a follower resumes
from its head.

:func:`fast_sync` brings an empty store to a recent height from the peer's snapshot
(``svm_snapshotInfo``, ``svm_snapshotPart``): downloaded into ``<id>.partial`` (resumed
from its size), then imported by :func:`supervm.snapshot.import_snapshot`, which checks
every chunk and the root (an interrupted import resumes too).
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry

from supervm.chain import Block, BlockHeader, BlockResult, Chain, ChainError, Transaction
from supervm.chain.block import transactions_root
from supervm.chain.header import BlockFormatError
from supervm.chain.incomplete import close_scan, incomplete_record
from supervm.client import Client, RpcConnectionError, RpcError
from supervm.errors import SuperVMError
from supervm.snapshot import ImportReport, SnapshotError, import_snapshot, read_manifest
from supervm.storage import Storage
from supervm_node.metrics import SyncMetrics
from supervm_node.signing import SignatureChecker
from supervm_node.snapshots import MAX_PART

__all__ = [
    "MODES",
    "Follower",
    "FollowerError",
    "SyncStatus",
    "download_snapshot",
    "fast_sync",
]

log = logging.getLogger("supervm_node.follower")

#: How a follower commits a block: run it itself, or apply the peer's write set.
MODES: Final = ("reexecute", "apply")
#: Seconds over which :attr:`SyncStatus.rate` counts blocks.
RATE_WINDOW: Final = 10.0
#: Transactions a ``svm_getBlockData`` batch aims at (fewer blocks when they are large).
BATCH_TRANSACTIONS: Final = 16_000
#: Transient failures (a peer unreachable, a timeout) waited on before trying again.
_RETRY_MAX: Final = 5.0

#: Called after each committed block with its result and the seconds it took.
OnCommit = Callable[[BlockResult, float], None]


class FollowerError(SuperVMError):
    """The peer sent a block the follower refuses: ``height`` and the ``field`` at fault."""

    def __init__(self, height: int, field: str, message: str) -> None:
        super().__init__(f"block {height} refused ({field}): {message}")
        self.height = height
        self.field = field


@dataclass(frozen=True)
class SyncStatus:
    """Where a follower stands against its peer."""

    state: str
    height: int
    peer_height: int | None
    rate: float
    peer: str
    mode: str
    error: str | None = None

    @property
    def lag(self) -> int | None:
        """Blocks behind the peer (``None`` before the peer answered)."""
        return None if self.peer_height is None else max(0, self.peer_height - self.height)

    def to_json(self) -> dict[str, object]:
        """What ``svm_syncStatus`` answers on a follower."""
        return {
            "role": "follower",
            "state": self.state,
            "height": self.height,
            "peer_height": self.peer_height,
            "lag": self.lag,
            "rate": round(self.rate, 3),
            "peer": self.peer,
            "mode": self.mode,
            "error": self.error,
        }


def _peer(peer: Client | str) -> Client:
    return peer if isinstance(peer, Client) else Client(peer, timeout=60)


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _bytes(value: object, height: int, field: str) -> bytes:
    if not isinstance(value, str):
        raise FollowerError(height, field, f"the peer sent {type(value).__name__}, not hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FollowerError(height, field, "the peer sent text that is not hex") from None


class Follower:
    """Keeps ``chain`` in step with ``peer`` (a :class:`~supervm.client.Client` or a URL).

    ``chain_id``: the chain id every transaction must carry. ``batch``: blocks per
    ``svm_getBlockData`` batch. ``threads``: signature-checking threads. ``poll_ms``: the
    long poll (``svm_waitForBlock``) once caught up. ``on_commit`` is called after each
    committed block.
    """

    def __init__(
        self,
        chain: Chain,
        peer: Client | str,
        *,
        chain_id: int,
        mode: str = "reexecute",
        batch: int = 64,
        threads: int = 2,
        poll_ms: int = 2000,
        registry: CollectorRegistry | None = None,
        on_commit: OnCommit | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, not {batch!r}")
        self.chain = chain
        self.client = _peer(peer)
        self.chain_id = chain_id
        self.mode = mode
        self.batch = batch
        self.poll_ms = poll_ms
        self.on_commit = on_commit
        self.metrics = None if registry is None else SyncMetrics(registry)
        self._checker = SignatureChecker(threads)
        self._fetcher: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = "syncing"
        self._error: str | None = None
        self._refusal: FollowerError | None = None
        self._peer_height: int | None = None
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._span = batch
        if self.metrics is not None:
            self.metrics.height.set(chain.head().height)

    # -- status ---------------------------------------------------------------------------

    @property
    def refusal(self) -> FollowerError | None:
        """The block refused, if one was (the follower stopped there)."""
        return self._refusal

    @property
    def running(self) -> bool:
        """Whether the follow loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> SyncStatus:
        """The follower's height and state against its peer's height."""
        height = self.chain.head().height
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0][0] > RATE_WINDOW:
                self._recent.popleft()
            rate = 0.0
            if len(self._recent) > 1:
                (t0, h0), (_, h1) = self._recent[0], self._recent[-1]
                rate = (h1 - h0) / max(now - t0, 1e-9)
            return SyncStatus(
                self._state, height, self._peer_height, rate, self.client.url, self.mode,
                self._error,
            )  # fmt: skip

    def _set_peer_height(self, height: int) -> None:
        with self._lock:
            self._peer_height = height
        if self.metrics is not None:
            self.metrics.peer_height.set(height)
            self.metrics.lag.set(max(0, height - self.chain.head().height))

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the peer in a thread until :meth:`stop` or a refused block."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervm-follower", daemon=True)
        self._thread.start()
        log.info(
            "following",
            extra={"peer": self.client.url, "mode": self.mode, "height": self.chain.head().height},
        )

    def stop(self) -> None:
        """Stop following (after the block being committed) and the worker threads."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._lock:
            fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            fetcher.shutdown(wait=True, cancel_futures=True)
        self._checker.close()

    def _fetch_pool(self) -> ThreadPoolExecutor:
        """The thread that fetches the next batch while one is checked (made on first use)."""
        with self._lock:
            if self._fetcher is None:
                self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="supervm-fetch")
            return self._fetcher

    def _check_peer_chain(self) -> None:
        """Refuse a peer that runs another chain id."""
        theirs = self.client.chain_id()
        if theirs != self.chain_id:
            raise FollowerError(
                self.chain.head().height + 1, "chain_id",
                f"the peer runs chain {theirs}; this node runs chain {self.chain_id}",
            )  # fmt: skip

    def _run(self) -> None:
        wait = 0.2
        checked = False
        while not self._stop.is_set():
            try:
                if not checked:
                    self._check_peer_chain()
                    checked = True
                self.catch_up()
                if self._stop.is_set():
                    return
                with self._lock:
                    self._state = "following"
                    self._error = None
                head = self.chain.head().height
                answer = self.client.wait_for_block(head, timeout_ms=self.poll_ms)
                self._set_peer_height(int(answer["height"]))
                wait = 0.2
            except FollowerError as exc:
                self._refused(exc)
                return
            except (RpcConnectionError, RpcError, ChainError, KeyError, TypeError) as exc:
                with self._lock:
                    self._state = "syncing"
                    self._error = str(exc)
                log.warning("the peer failed", extra={"peer": self.client.url, "error": str(exc)})
                self._stop.wait(wait)
                wait = min(wait * 2, _RETRY_MAX)

    def _refused(self, exc: FollowerError) -> None:
        with self._lock:
            self._state = "refused"
            self._error = str(exc)
            self._refusal = exc
        if self.metrics is not None:
            self.metrics.refused.inc()
        log.error(
            "block refused; following stopped",
            extra={"height": exc.height, "field": exc.field, "error": str(exc),
                   "peer": self.client.url},
        )  # fmt: skip

    def catch_up(self) -> int:
        """Fetch, check and commit blocks until the follower stands at the peer's head (as
        it was when asked); the number committed. Raises :class:`FollowerError`."""
        if self._refusal is not None:
            raise self._refusal
        committed = 0
        while not self._stop.is_set():
            target = int(self.client.head()["height"])
            self._set_peer_height(target)
            height = self.chain.head().height
            if target <= height:
                with self._lock:
                    self._state = "following"
                return committed
            with self._lock:
                self._state = "syncing"
            first = height + 1
            last = min(first + self._span - 1, target)
            fetcher = self._fetch_pool()
            pending = fetcher.submit(self._fetch, first, last)
            while True:
                blocks = pending.result()
                if last < target:
                    self._size_batches(blocks)
                    following = (last + 1, min(last + self._span, target))
                    pending = fetcher.submit(self._fetch, *following)
                for offset, data in enumerate(blocks):
                    if self._stop.is_set():
                        return committed
                    self._commit(first + offset, data)
                    committed += 1
                if last >= target:
                    break
                first, last = following
        return committed

    def _size_batches(self, blocks: list[Any]) -> None:
        """Blocks per batch after these: about :data:`BATCH_TRANSACTIONS` transactions."""
        count = sum(len(b.get("transactions") or ()) for b in blocks if isinstance(b, dict))
        per_block = max(1, count // max(1, len(blocks)))
        self._span = max(1, min(self.batch, BATCH_TRANSACTIONS // per_block))

    def _fetch(self, first: int, last: int) -> list[Any]:
        """Blocks ``first .. last`` as the peer answers ``svm_getBlockData``."""
        with_writes = self.mode == "apply"
        calls: list[tuple[str, list[object]]] = [
            ("svm_getBlockData", [h, with_writes]) for h in range(first, last + 1)
        ]
        answers = self.client.batch(calls)
        for height, answer in zip(range(first, last + 1), answers, strict=True):
            if isinstance(answer, RpcError):
                if answer.reason == "pruned_height":
                    raise FollowerError(
                        height, "history", f"the peer no longer keeps this block: {answer}"
                    )
                raise answer
        return answers

    # -- one block ----------------------------------------------------------------------------

    def _commit(self, height: int, data: object) -> None:
        """Check block ``height`` as the peer sent it and commit it, or refuse it."""
        started = time.perf_counter()
        if not isinstance(data, dict):
            raise FollowerError(height, "block", "the peer sent no block")
        try:
            header = BlockHeader.decode(_bytes(data.get("header"), height, "header"))
        except BlockFormatError as exc:
            raise FollowerError(height, "header", f"it does not decode: {exc}") from None
        if header.height != height:
            raise FollowerError(height, "height", f"the peer sent block {header.height}")
        head = self.chain.head()
        if header.parent_hash != head.block_hash:
            raise FollowerError(
                height, "parent_hash",
                f"its parent is {header.parent_hash.hex()}, not this chain's head "
                f"{head.block_hash.hex()} (block {head.height})",
            )  # fmt: skip
        raw_txs = data.get("transactions")
        if not isinstance(raw_txs, list):
            raise FollowerError(height, "transactions", "the peer sent no transaction list")
        try:
            txs = tuple(Transaction.decode(_bytes(t, height, "transactions")) for t in raw_txs)
        except BlockFormatError as exc:
            raise FollowerError(height, "transactions", f"one does not decode: {exc}") from None
        if transactions_root(txs) != header.transactions_root:
            raise FollowerError(
                height, "transactions_root",
                "its transactions do not give the transactions root of its header",
            )  # fmt: skip
        for index, tx in enumerate(txs):
            if tx.chain_id != self.chain_id:
                raise FollowerError(
                    height, "chain_id",
                    f"transaction {index} is for chain {tx.chain_id}, not {self.chain_id}",
                )  # fmt: skip
        for index, ok in enumerate(self._checker.check(txs)):
            if not ok:
                raise FollowerError(
                    height, "signature", f"the signature of transaction {index} does not verify"
                )
        if self.mode == "reexecute":
            result = self._reexecute(header, txs)
        else:
            result = self._import(header, txs, data.get("write_set"))
        seconds = time.perf_counter() - started
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, height))
            while now - self._recent[0][0] > RATE_WINDOW:
                self._recent.popleft()
        if self.metrics is not None:
            self.metrics.height.set(height)
            self.metrics.blocks.inc()
            if self._peer_height is not None:
                self.metrics.lag.set(max(0, self._peer_height - height))
        if self.on_commit is not None:
            self.on_commit(result, seconds)

    def _reexecute(self, header: BlockHeader, txs: tuple[Transaction, ...]) -> BlockResult:
        height = header.height
        result = self.chain.execute(Block(height, header.timestamp, txs))
        ours = result.header
        for field in ("parent_hash", "timestamp", "transactions_root", "state_root",
                      "receipts_root"):  # fmt: skip
            mine, theirs = getattr(ours, field), getattr(header, field)
            if mine != theirs:
                raise FollowerError(
                    height, field,
                    f"executing the block gives {_show(mine)}; the peer's header says "
                    f"{_show(theirs)}",
                )  # fmt: skip
        if ours != header:
            raise FollowerError(height, "hash", "executing the block gives another header")
        self.chain.commit(result)
        return result

    def _import(
        self, header: BlockHeader, txs: tuple[Transaction, ...], raw: object
    ) -> BlockResult:
        height = header.height
        if not isinstance(raw, list):
            raise FollowerError(height, "write_set", "the peer sent no write set")
        write_set: list[tuple[bytes, bytes | None]] = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 2:
                raise FollowerError(height, "write_set", "an entry is not [key, value]")
            key = _bytes(item[0], height, "write_set")
            value = None if item[1] is None else _bytes(item[1], height, "write_set")
            write_set.append((key, value))
        try:
            return self.chain.import_block(header, txs, tuple(write_set))
        except (ChainError, ValueError) as exc:
            field = "state_root" if "state root" in str(exc) else "write_set"
            raise FollowerError(height, field, str(exc)) from None


# -- fast sync ----------------------------------------------------------------------------------


def _empty(storage: Storage) -> bool:
    held = storage.scan(b"")
    first = next(held, None)
    close_scan(held)
    return first is None


def download_snapshot(
    client: Client,
    info: dict[str, Any],
    directory: Path,
    *,
    part_size: int = MAX_PART,
    max_parts: int | None = None,
) -> Path | None:
    """Download the snapshot ``info`` (as ``svm_snapshotInfo`` answers) into ``directory``:
    ``<id>.partial`` grows part by part (an existing one is resumed from its size) and is
    renamed ``<id>.snapshot`` once whole; that path (``None``: ``max_parts`` reached)."""
    ident = str(info["id"])
    size = int(info["size"])
    final = directory / f"{ident}.snapshot"
    if final.is_file():
        return final
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{ident}.partial"
    part_size = min(part_size, MAX_PART)
    parts = 0
    with partial.open("ab") as out:
        offset = out.tell()
        if offset > size:
            raise SnapshotError(f"{partial} is larger than the snapshot it downloads")
        while offset < size:
            if max_parts is not None and parts >= max_parts:
                return None
            length = min(part_size, size - offset)
            data = base64.b64decode(client.call("svm_snapshotPart", ident, offset, length))
            if not data or len(data) > length:
                raise SnapshotError(
                    f"the peer answered {len(data)} bytes for part {offset}+{length}"
                )
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            offset += len(data)
            parts += 1
    os.replace(partial, final)
    return final


def fast_sync(
    storage: Storage,
    peer: Client | str,
    directory: str | os.PathLike[str],
    *,
    part_size: int = MAX_PART,
) -> ImportReport | None:
    """Bring an empty ``storage`` to the peer's snapshot (its report), resume an import
    interrupted before, or do nothing (``None``) on a store that holds a chain already."""
    client = _peer(peer)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    record = incomplete_record(storage)
    if record is None and not _empty(storage):
        return None
    expect = _identity(client)
    if record is not None:
        wanted = str(record.get("snapshot"))
        path = folder / f"{wanted}.snapshot"
        if not path.is_file():
            info = _snapshot_info(client, wanted)
            found = download_snapshot(client, info, folder, part_size=part_size)
            assert found is not None
            path = found
    else:
        info = _snapshot_info(client, None)
        found = download_snapshot(client, info, folder, part_size=part_size)
        assert found is not None
        path = found
        manifest = read_manifest(path)
        if manifest.digest.hex() != info["id"] or manifest.height != info["height"]:
            raise SnapshotError(f"{path} is not the snapshot the peer described")
    log.info("importing snapshot", extra={"file": str(path), "peer": client.url})
    report = import_snapshot(path, storage, expect_chain=expect)
    log.info(
        "snapshot imported",
        extra={"height": report.head.height, "keys": report.keys,
               "seconds": round(report.seconds, 3), "resumed": report.resumed},
    )  # fmt: skip
    path.unlink(missing_ok=True)
    return report


def _identity(client: Client) -> bytes | None:
    """The peer's chain identity (its first block's hash), if it keeps that block."""
    try:
        first = client.get_block(1)
    except RpcError as exc:
        if exc.reason == "pruned_height":
            return None  # itself started from a snapshot
        raise
    return None if first is None else bytes.fromhex(first["hash"])


def _snapshot_info(client: Client, wanted: str | None) -> dict[str, Any]:
    """The peer's snapshot (``wanted``: the one with that id), waiting while it exports."""
    deadline = time.monotonic() + 600
    while True:
        try:
            info: dict[str, Any] = client.call("svm_snapshotInfo")
        except RpcError as exc:
            if exc.reason != "timeout" or time.monotonic() > deadline:
                raise
            time.sleep(1)  # the export goes on; ask again
            continue
        if wanted is not None and info["id"] != wanted:
            raise SnapshotError(
                f"the store holds an unfinished import of snapshot {wanted[:16]}..., which the "
                "peer no longer serves: empty the store and start again"
            )
        return info
