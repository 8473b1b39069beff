"""The light profile as a running node: a :class:`~supervm_node.light.LightClient` that
follows its peer's headers and answers reads with values it verified.

``supervm node --profile light --follow URL --store sqlite:///light.db`` runs one. It syncs
the header chain in batches, then waits for each new block (``svm_waitForBlock``) and
syncs again; a header that does not check out stops the following (``state: refused``,
health 503) and is never stored. Its JSON-RPC answers ``svm_chainId``, ``svm_head``,
``svm_getBlock`` (headers only), ``svm_getState`` (the value, verified against its own
header's state root) and ``svm_syncStatus``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervm.chain.header import BlockHeader
from supervm.client import Client, RpcError
from supervm.storage import Storage
from supervm_node.light import LightClient, LightClientError

__all__ = ["LightNode"]

log = logging.getLogger("supervm_node.light")

#: How long one wait for the peer's next block lasts (ms).
_WAIT_MS = 2000


class LightNode:
    """A light client that follows ``peer`` in a thread of its own."""

    def __init__(
        self,
        store: Storage,
        peer: str,
        *,
        batch: int = 256,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.peer = peer
        self.client = Client(peer, timeout=30)
        self.light = LightClient(store, self.client, batch=batch)
        self.registry = CollectorRegistry() if registry is None else registry
        self.registry.register(_LightCollector(self))
        self.peer_height: int | None = None
        self.state = "starting"
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rate: list[tuple[float, int]] = []

    @property
    def chain_id(self) -> int | None:
        return self.light.chain_id

    def head(self) -> BlockHeader | None:
        return self.light.head()

    def start(self) -> None:
        """Start following the peer's headers."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="supervm-light", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (the store stays open; :meth:`close` closes it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.light.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.state = "syncing"
                self.light.sync()
                self._note_height()
                self.state = "following"
                head = self.client.wait_for_block(self.light.height, timeout_ms=_WAIT_MS)
                self.peer_height = int(head["height"])
            except LightClientError as exc:
                self.state, self.error = "refused", str(exc)
                log.error("header refused", extra={"reason": exc.reason, "height": exc.height})
                return
            except (RpcError, OSError) as exc:
                # The peer is down or busy: try again shortly.
                self.state, self.error = "peer unreachable", str(exc)
                self._stop.wait(0.5)

    def _note_height(self) -> None:
        now = time.monotonic()
        self._rate.append((now, self.light.height))
        self._rate = [(t, h) for t, h in self._rate if now - t <= 10.0]
        if self.peer_height is None or self.peer_height < self.light.height:
            self.peer_height = self.light.height

    def rate(self) -> float:
        """Headers stored per second over the last 10 seconds."""
        if len(self._rate) < 2:
            return 0.0
        (t0, h0), (t1, h1) = self._rate[0], self._rate[-1]
        return (h1 - h0) / (t1 - t0) if t1 > t0 else 0.0

    def sync_status(self) -> dict[str, object]:
        """Height, peer, lag, rate and state, as ``svm_syncStatus`` answers them."""
        height = self.light.height
        peer_height = self.peer_height
        return {
            "role": "light",
            "mode": "headers",
            "state": self.state,
            "height": height,
            "peer": self.peer,
            "peer_height": peer_height,
            "lag": None if peer_height is None else max(0, peer_height - height),
            "rate": self.rate(),
            "error": self.error,
        }

    def health(self) -> dict[str, object]:
        """Healthy while following (not refused)."""
        ok = self._thread is not None and self.state not in ("refused", "starting")
        return {"ok": ok, "height": self.light.height, "state": self.state, "error": self.error}


class _LightCollector(Collector):
    """The light node's sync and proof counters at scrape time."""

    def __init__(self, node: LightNode) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        stats = node.light.stats
        status = node.sync_status()
        yield GaugeMetricFamily("supervm_sync_height", "Height synced", value=node.light.height)
        if status["peer_height"] is not None:
            yield GaugeMetricFamily(
                "supervm_sync_peer_height",
                "The peer's height",
                value=float(str(status["peer_height"])),
            )
            yield GaugeMetricFamily(
                "supervm_sync_lag_blocks", "Blocks behind the peer", value=float(str(status["lag"]))
            )
        yield CounterMetricFamily(
            "supervm_light_headers_synced", "Headers checked and stored", value=stats.headers_synced
        )
        yield CounterMetricFamily(
            "supervm_light_headers_refused", "Headers refused", value=stats.headers_refused
        )
        yield CounterMetricFamily(
            "supervm_light_proofs_verified", "Values verified by proof", value=stats.proofs_verified
        )
        yield CounterMetricFamily(
            "supervm_light_proofs_refused", "Answers refused", value=stats.proofs_refused
        )
