"""Storage metrics: the conformance kit on the wrapper, and what it records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from supervm import open_storage
from supervm.errors import StorageClosedError, UnsupportedOperationError
from supervm.memory import MemoryStorage
from supervm.registry import load_backend, register_backend, unregister_backend
from supervm.storage import Capabilities, Storage
from supervm.testing import StorageConformance
from supervm.url import StorageURL
from supervm_node.metrics import InstrumentedStorage, StorageMetrics
from supervm_rocksdb import RocksDBStorage

# The kit opens stores by URL: test-only schemes serve the wrapper around a real back end.
KIT_METRICS = StorageMetrics(CollectorRegistry())


class _Metered(InstrumentedStorage):
    inner_scheme: ClassVar[str]

    @classmethod
    def from_url(cls, url: StorageURL) -> _Metered:
        inner_url = dataclasses.replace(url, scheme=cls.inner_scheme)
        inner = load_backend(cls.inner_scheme).from_url(inner_url)
        return cls(inner, KIT_METRICS, cls.inner_scheme)


class MeteredMemory(_Metered):
    schemes = ("metered-memory",)
    url_form = "metered-memory://"
    inner_scheme = "memory"
    capabilities = MemoryStorage.capabilities  # type: ignore[assignment]


class MeteredRocksDB(_Metered):
    schemes = ("metered-rocksdb",)
    url_form = "metered-rocksdb://PATH"
    inner_scheme = "rocksdb"
    capabilities = RocksDBStorage.capabilities  # type: ignore[assignment]


@pytest.fixture(autouse=True, scope="module")
def _metered_schemes() -> Iterator[None]:
    register_backend("metered-memory", MeteredMemory)
    register_backend("metered-rocksdb", MeteredRocksDB)
    yield
    unregister_backend("metered-memory")
    unregister_backend("metered-rocksdb")


class TestInstrumentedMemory(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return "metered-memory://"

    def make_storage(self, workdir: Path, *, create: bool = True) -> Storage:
        return MeteredMemory(MemoryStorage(), KIT_METRICS, "memory")


class TestInstrumentedRocksDB(StorageConformance):
    def storage_url(self, workdir: Path) -> str:
        return f"metered-rocksdb://{workdir}/db"

    def make_storage(self, workdir: Path, *, create: bool = True) -> Storage:
        inner = RocksDBStorage(str(workdir / "db"), create=create)
        return MeteredRocksDB(inner, KIT_METRICS, "rocksdb")


# -- what is recorded ----------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def store(registry: CollectorRegistry) -> Iterator[InstrumentedStorage]:
    wrapped = InstrumentedStorage(MemoryStorage(), StorageMetrics(registry), "memory")
    yield wrapped
    wrapped.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, {"backend": "memory", **labels})
    return 0.0 if found is None else found


def ops(registry: CollectorRegistry, operation: str) -> float:
    return value(registry, "supervm_storage_operations_total", operation=operation)


def errors(registry: CollectorRegistry, operation: str) -> float:
    return value(registry, "supervm_storage_errors_total", operation=operation)


def test_a_known_sequence_is_counted(
    store: InstrumentedStorage, registry: CollectorRegistry
) -> None:
    store.set(b"a", b"123")  # written 4
    store.set(b"bb", b"")  # written 2
    assert store.get(b"a") == b"123"  # read 4
    assert store.get(b"zz") is None  # a miss reads nothing
    store.delete(b"zz")  # written 2
    store.write_batch([(b"c", b"45"), (b"a", None)])  # written 3 + 1
    with store.batch() as batch:
        batch.set(b"d", b"6")  # written 2
        batch.delete(b"c")  # written 1
        batch.set(b"e", b"78")  # written 3
    pairs = store.scan()
    assert ops(registry, "scan") == 1  # counted when created
    assert value(registry, "supervm_storage_read_bytes_total") == 4
    assert list(pairs) == [(b"bb", b""), (b"d", b"6"), (b"e", b"78")]  # read 2 + 2 + 3
    assert list(store.scan_range(b"d", b"e")) == [(b"d", b"6")]  # read 2
    store.snapshot().close()

    expected = {"get": 2, "set": 2, "delete": 1, "scan": 1, "scan_range": 1}
    expected |= {"write_batch": 2, "snapshot": 1}
    for operation, count in expected.items():
        assert ops(registry, operation) == count, operation
        seconds = "supervm_storage_operation_seconds_count"
        assert value(registry, seconds, operation=operation) == count, operation
        assert errors(registry, operation) == 0, operation
    assert value(registry, "supervm_storage_read_bytes_total") == 4 + 7 + 2
    assert value(registry, "supervm_storage_written_bytes_total") == 4 + 2 + 2 + 4 + 6
    assert value(registry, "supervm_storage_batch_operations_total") == 2 + 3


def test_discarded_batch_and_generator_batch(
    store: InstrumentedStorage, registry: CollectorRegistry
) -> None:
    batch = store.batch()
    batch.set(b"k", b"v")
    batch.discard()
    assert ops(registry, "write_batch") == 0
    store.write_batch(op for op in [(b"k", b"v"), (b"l", b"w")])
    assert store.get(b"l") == b"w"
    assert value(registry, "supervm_storage_batch_operations_total") == 2
    assert value(registry, "supervm_storage_written_bytes_total") == 4


def test_errors_are_counted_and_reraised_unchanged(
    store: InstrumentedStorage, registry: CollectorRegistry
) -> None:
    with pytest.raises(TypeError):
        store.get("k")  # type: ignore[arg-type]
    assert errors(registry, "get") == 1
    assert ops(registry, "get") == 0
    batch = store.batch()
    batch.set(b"k", b"v")
    store.close()
    assert store.closed and store.inner.closed
    for call, operation in [
        (lambda: store.get(b"k"), "get"),
        (lambda: store.set(b"k", b"v"), "set"),
        (lambda: store.delete(b"k"), "delete"),
        (lambda: list(store.scan()), "scan"),
        (lambda: list(store.scan_range(b"a")), "scan_range"),
        (lambda: store.write_batch([(b"k", b"v")]), "write_batch"),
        (batch.commit, "write_batch"),
        (store.snapshot, "snapshot"),
    ]:
        before = errors(registry, operation)
        with pytest.raises(StorageClosedError) as info:
            call()
        assert type(info.value) is StorageClosedError
        assert errors(registry, operation) == before + 1, operation
    assert ops(registry, "get") == 0 and ops(registry, "write_batch") == 0


class _NoRanges(MemoryStorage):
    capabilities = Capabilities()
    scan_range = Storage.scan_range  # type: ignore[assignment]


def test_scan_range_without_range_scans_is_the_inner_stores(registry: CollectorRegistry) -> None:
    store = InstrumentedStorage(_NoRanges(), StorageMetrics(registry), "memory")
    assert store.capabilities == Capabilities()
    with pytest.raises(UnsupportedOperationError):
        store.scan_range(b"a")
    assert errors(registry, "scan_range") == 0 and ops(registry, "scan_range") == 0


def test_capabilities_are_the_inner_stores(tmp_path: Path) -> None:
    with open_storage(f"rocksdb://{tmp_path}/db") as inner:
        store = InstrumentedStorage(inner, StorageMetrics(CollectorRegistry()), "rocksdb")
        assert store.capabilities == inner.capabilities
        assert "rocksdb" in repr(store)


def test_from_url_is_refused() -> None:
    with pytest.raises(UnsupportedOperationError):
        InstrumentedStorage.from_url(StorageURL("x://", "x", None, None, None, None, ""))


def test_exposition_names_every_metric(
    store: InstrumentedStorage, registry: CollectorRegistry
) -> None:
    store.set(b"k", b"v")
    store.write_batch([(b"k", None)])
    with pytest.raises(TypeError):
        store.get(1)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    for name in [
        "supervm_storage_operations_total",
        "supervm_storage_operation_seconds_bucket",
        "supervm_storage_read_bytes_total",
        "supervm_storage_written_bytes_total",
        "supervm_storage_errors_total",
        "supervm_storage_batch_operations_total",
    ]:
        assert name in text, name
    assert 'supervm_storage_operation_seconds_bucket{backend="memory",le="1e-06"' in text
