"""Prometheus metrics for storage operations: :class:`StorageMetrics`, :class:`InstrumentedStorage`.

``InstrumentedStorage(store, metrics, backend)`` wraps any SuperVM store and
records, per ``backend`` label, how many operations completed, how long they
took, how many failed and how many bytes of keys and values were read and
written. Everything else is the wrapped store's own behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Final, Protocol, Self

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervm.chain import BlockResult
from supervm.errors import UnsupportedOperationError
from supervm.storage import Batch, BatchOp, Capabilities, Snapshot, Storage

if TYPE_CHECKING:
    from supervm.url import StorageURL

__all__ = [
    "BUCKETS",
    "OPERATIONS",
    "STAGE_BUCKETS",
    "CacheCollector",
    "InstrumentedStorage",
    "NodeMetrics",
    "StorageMetrics",
    "SyncMetrics",
]

#: The operations recorded, the values of the ``operation`` label.
OPERATIONS: Final = ("get", "set", "delete", "scan", "scan_range", "write_batch", "snapshot")

#: Histogram buckets in seconds: 1, 2.5, 5 steps per decade from 1 µs to 1 s.
BUCKETS: Final = (
    *(round(step * 10.0**exponent, 9) for exponent in range(-6, 0) for step in (1, 2.5, 5)),
    1.0,
)


class _CacheStats(Protocol):
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def evictions(self) -> int: ...


class _HasStats(Protocol):
    def stats(self) -> _CacheStats: ...


class StorageMetrics:
    """The storage metrics, registered in ``registry`` (the default registry if ``None``).

    * ``supervm_storage_operations_total{backend, operation}``: completed operations;
    * ``supervm_storage_operation_seconds{backend, operation}``: their durations;
    * ``supervm_storage_errors_total{backend, operation}``: operations that raised;
    * ``supervm_storage_read_bytes_total{backend}``: key and value bytes read;
    * ``supervm_storage_written_bytes_total{backend}``: key and value bytes written;
    * ``supervm_storage_batch_operations_total{backend}``: operations in batches written.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry: Final = registry
        labels = ("backend", "operation")
        self.operations: Final = Counter(
            "supervm_storage_operations",
            "Storage operations completed",
            labels,
            registry=registry,
        )
        self.seconds: Final = Histogram(
            "supervm_storage_operation_seconds",
            "Duration of completed storage operations",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self.errors: Final = Counter(
            "supervm_storage_errors",
            "Storage operations that raised",
            labels,
            registry=registry,
        )
        self.read_bytes: Final = Counter(
            "supervm_storage_read_bytes",
            "Bytes of keys and values read from storage",
            ("backend",),
            registry=registry,
        )
        self.written_bytes: Final = Counter(
            "supervm_storage_written_bytes",
            "Bytes of keys and values written to storage",
            ("backend",),
            registry=registry,
        )
        self.batch_operations: Final = Counter(
            "supervm_storage_batch_operations",
            "Operations in batches written to storage",
            ("backend",),
            registry=registry,
        )


class _Op:
    """One operation's label children, bound once: recording costs no label lookups."""

    __slots__ = ("count", "errors", "observe")

    def __init__(self, metrics: StorageMetrics, backend: str, operation: str) -> None:
        self.count: Final = metrics.operations.labels(backend, operation).inc
        self.observe: Final = metrics.seconds.labels(backend, operation).observe
        self.errors: Final = metrics.errors.labels(backend, operation).inc

    def done(self, start: float) -> None:
        """Record a completed operation that started at ``start`` (``perf_counter``)."""
        self.observe(perf_counter() - start)
        self.count()


def _op_bytes(ops: Iterable[BatchOp]) -> int:
    return sum(len(key) + (0 if value is None else len(value)) for key, value in ops)


class InstrumentedStorage(Storage):
    """``inner`` with its operations recorded in ``metrics`` under the label ``backend``.

    Completed operations are counted and timed; an operation that raises is
    counted as an error and its exception re-raised unchanged. Reads count the
    key and value of every pair found (a ``get`` miss reads nothing); writes
    count keys and values (a delete: its key). A scan is counted and timed
    when it is created, its bytes as its pairs are yielded. A batch's commit
    counts as one ``write_batch`` of its operations. ``scan_range`` is
    recorded only when the inner store declares range scans; snapshots are
    counted when taken and are the inner store's own. Capabilities,
    ``closed`` and ``close`` are the inner store's.
    """

    def __init__(self, inner: Storage, metrics: StorageMetrics, backend: str) -> None:
        self.inner: Final = inner
        self.metrics: Final = metrics
        self.backend: Final = backend
        self._get: Final = inner.get
        self._set: Final = inner.set
        self._delete: Final = inner.delete
        self._range: Final = inner.capabilities.range_scan
        self._ops: Final = {name: _Op(metrics, backend, name) for name in OPERATIONS}
        self._read: Final = metrics.read_bytes.labels(backend).inc
        self._written: Final = metrics.written_bytes.labels(backend).inc
        self._batched: Final = metrics.batch_operations.labels(backend).inc
        # The hot paths' recorders, as attributes of their own: one lookup each.
        got, put, removed = self._ops["get"], self._ops["set"], self._ops["delete"]
        self._get_count, self._get_observe, self._get_errors = got.count, got.observe, got.errors
        self._set_count, self._set_observe, self._set_errors = put.count, put.observe, put.errors
        self._delete_count, self._delete_observe = removed.count, removed.observe
        self._delete_errors = removed.errors

    @classmethod
    def from_url(cls, url: StorageURL) -> Self:
        """Refused: an instrumented store wraps an open store (see the constructor)."""
        raise UnsupportedOperationError(f"{cls.__name__} wraps an open store; it has no URL")

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """The inner store's capabilities."""
        return self.inner.capabilities

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def close(self) -> None:
        self.inner.close()

    def get(self, key: bytes) -> bytes | None:
        start = perf_counter()
        try:
            value = self._get(key)
        except Exception:
            self._get_errors()
            raise
        self._get_observe(perf_counter() - start)
        self._get_count()
        if value is not None:
            self._read(len(key) + len(value))
        return value

    def set(self, key: bytes, value: bytes) -> None:
        start = perf_counter()
        try:
            self._set(key, value)
        except Exception:
            self._set_errors()
            raise
        self._set_observe(perf_counter() - start)
        self._set_count()
        self._written(len(key) + len(value))

    def delete(self, key: bytes) -> None:
        start = perf_counter()
        try:
            self._delete(key)
        except Exception:
            self._delete_errors()
            raise
        self._delete_observe(perf_counter() - start)
        self._delete_count()
        self._written(len(key))

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        op = self._ops["scan"]
        start = perf_counter()
        try:
            pairs = self.inner.scan(prefix)
        except Exception:
            op.errors()
            raise
        op.done(start)
        return self._reading(pairs, op)

    def scan_range(
        self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        if not self._range:
            return self.inner.scan_range(start, end, reverse=reverse)
        op = self._ops["scan_range"]
        began = perf_counter()
        try:
            pairs = self.inner.scan_range(start, end, reverse=reverse)
        except Exception:
            op.errors()
            raise
        op.done(began)
        return self._reading(pairs, op)

    def _reading(
        self, pairs: Iterator[tuple[bytes, bytes]], op: _Op
    ) -> Iterator[tuple[bytes, bytes]]:
        """``pairs``, counting their bytes as read; errors while iterating count for ``op``."""
        read = self._read
        try:
            for pair in pairs:
                key, value = pair
                read(len(key) + len(value))
                yield pair
        except Exception:
            op.errors()
            raise
        finally:
            close = getattr(pairs, "close", None)
            if close is not None:
                close()

    def write_batch(self, ops: Iterable[BatchOp]) -> None:
        listed = ops if type(ops) is list else list(ops)
        op = self._ops["write_batch"]
        start = perf_counter()
        try:
            self.inner.write_batch(listed)
        except Exception:
            op.errors()
            raise
        op.done(start)
        self._batched(len(listed))
        self._written(_op_bytes(listed))

    def batch(self) -> Batch:
        return _InstrumentedBatch(self, self.inner.batch())

    def snapshot(self) -> Snapshot:
        op = self._ops["snapshot"]
        start = perf_counter()
        try:
            view = self.inner.snapshot()
        except Exception:
            op.errors()
            raise
        op.done(start)
        return view

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend!r} of {self.inner!r}>"


class _InstrumentedBatch(Batch):
    """A batch of the inner store whose commit is recorded as a ``write_batch``."""

    __slots__ = ("_bytes", "_inner", "_storage")

    def __init__(self, storage: InstrumentedStorage, inner: Batch) -> None:
        self._storage = storage
        self._inner = inner
        self._bytes = 0

    def set(self, key: bytes, value: bytes) -> None:
        self._inner.set(key, value)
        self._bytes += len(key) + len(value)

    def delete(self, key: bytes) -> None:
        self._inner.delete(key)
        self._bytes += len(key)

    def commit(self) -> None:
        storage = self._storage
        op = storage._ops["write_batch"]
        queued = len(self._inner)
        start = perf_counter()
        try:
            self._inner.commit()
        except Exception:
            op.errors()
            raise
        op.done(start)
        storage._batched(queued)
        storage._written(self._bytes)
        self._bytes = 0

    def discard(self) -> None:
        self._inner.discard()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._inner)


#: Buckets in seconds for pipeline stages and block intervals: 100 µs to 10 s.
STAGE_BUCKETS: Final = (
    *(round(step * 10.0**exponent, 9) for exponent in range(-4, 1) for step in (1, 2.5, 5)),
    10.0,
)


class NodeMetrics:
    """The node's metrics, registered in ``registry``.

    * ``supervm_head_height``; ``supervm_blocks_total``; ``supervm_transactions_total``;
    * ``supervm_executions_total``, ``supervm_reexecutions_total``, ``supervm_aborts_total``,
      ``supervm_gas_used_total``: what the executor did;
    * ``supervm_pipeline_stage_seconds{stage}``: signatures, execute (with the state
      root), commit, per block; ``supervm_block_interval_seconds``;
      ``supervm_block_transactions``;
    * ``supervm_mempool_transactions``, ``supervm_mempool_bytes``;
      ``supervm_transactions_admitted_total``, ``supervm_transactions_refused_total{reason}``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry: Final = registry
        self.head: Final = Gauge("supervm_head_height", "Height of the head", registry=registry)
        self.blocks: Final = Counter("supervm_blocks", "Blocks committed", registry=registry)
        self.transactions: Final = Counter(
            "supervm_transactions", "Transactions committed in blocks", registry=registry
        )
        self.executions: Final = Counter(
            "supervm_executions", "Transaction executions (re-executions included)",
            registry=registry,
        )  # fmt: skip
        self.reexecutions: Final = Counter(
            "supervm_reexecutions", "Executions beyond one per transaction", registry=registry
        )
        self.aborts: Final = Counter(
            "supervm_aborts", "Parallel executions aborted by a conflict", registry=registry
        )
        self.gas: Final = Counter("supervm_gas_used", "Gas used by transactions", registry=registry)
        self.stage_seconds: Final = Histogram(
            "supervm_pipeline_stage_seconds", "Time a block spent in each pipeline stage",
            ("stage",), buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.block_interval: Final = Histogram(
            "supervm_block_interval_seconds", "Time between consecutive block commits",
            buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.block_size: Final = Histogram(
            "supervm_block_transactions", "Transactions per block",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000), registry=registry,
        )  # fmt: skip
        self.mempool_count: Final = Gauge(
            "supervm_mempool_transactions", "Transactions in the mempool", registry=registry
        )
        self.mempool_bytes: Final = Gauge(
            "supervm_mempool_bytes", "Bytes of transactions in the mempool", registry=registry
        )
        self.admitted: Final = Counter(
            "supervm_transactions_admitted", "Transactions taken into the mempool",
            registry=registry,
        )  # fmt: skip
        self.refused: Final = Counter(
            "supervm_transactions_refused", "Transactions refused, by reason", ("reason",),
            registry=registry,
        )  # fmt: skip

    def observe_block(self, result: BlockResult, seconds: dict[str, float]) -> None:
        """Record a committed block and the time its stages took."""
        count = len(result.transactions)
        stats = result.stats
        self.head.set(result.height)
        self.blocks.inc()
        self.transactions.inc(count)
        self.block_size.observe(count)
        self.executions.inc(stats.executions)
        self.reexecutions.inc(max(0, stats.executions - count))
        self.aborts.inc(stats.aborts)
        self.gas.inc(sum(receipt.gas_used for receipt in result.receipts))
        for stage, spent in seconds.items():
            self.stage_seconds.labels(stage).observe(spent)


class SyncMetrics:
    """A follower's metrics, registered in ``registry``.

    * ``supervm_sync_height``, ``supervm_sync_peer_height``, ``supervm_sync_lag_blocks``;
    * ``supervm_sync_blocks_total``: blocks checked and committed;
    * ``supervm_sync_refused_total``: blocks refused.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.height: Final = Gauge(
            "supervm_sync_height", "Height the follower has committed", registry=registry
        )
        self.peer_height: Final = Gauge(
            "supervm_sync_peer_height", "Height of the peer's head, as last asked",
            registry=registry,
        )  # fmt: skip
        self.lag: Final = Gauge(
            "supervm_sync_lag_blocks", "Blocks the follower is behind its peer", registry=registry
        )
        self.blocks: Final = Counter(
            "supervm_sync_blocks", "Blocks fetched, checked and committed", registry=registry
        )
        self.refused: Final = Counter(
            "supervm_sync_refused", "Blocks from the peer refused", registry=registry
        )


class CacheCollector(Collector):
    """Exports a cache's :meth:`stats` (hits, misses, entries, bytes) at each scrape:
    ``supervm_cache_hits_total``, ``supervm_cache_misses_total``,
    ``supervm_cache_evictions_total``, ``supervm_cache_entries``, ``supervm_cache_bytes``,
    ``supervm_cache_max_bytes``."""

    def __init__(self, cache: _HasStats) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self.cache.stats()
        yield CounterMetricFamily("supervm_cache_hits", "Reads the cache answered", stats.hits)
        yield CounterMetricFamily(
            "supervm_cache_misses", "Reads the cache passed to the store", stats.misses
        )
        yield CounterMetricFamily(
            "supervm_cache_evictions", "Entries evicted to stay within the cache's bytes",
            stats.evictions,
        )  # fmt: skip
        yield GaugeMetricFamily("supervm_cache_entries", "Entries in the cache", stats.entries)
        yield GaugeMetricFamily("supervm_cache_bytes", "Bytes the cache holds", stats.bytes)
        yield GaugeMetricFamily(
            "supervm_cache_max_bytes", "Bytes the cache may hold", stats.max_bytes
        )
