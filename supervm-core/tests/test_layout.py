"""The on-disk layout version: written with the first write, checked on open."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from supervm import open_storage
from supervm.chain import Chain
from supervm.errors import LayoutVersionError
from supervm.layout import LAYOUT_KEY, LAYOUT_VERSION, MARKER, check_layout
from supervm.memory import MemoryStorage
from supervm.vm import Runtime

COUNTER = Path(__file__).resolve().parents[2] / "examples" / "contracts" / "counter.wasm"


def test_new_store_is_stamped_with_its_first_write() -> None:
    store = MemoryStorage()
    runtime = Runtime(store)
    assert store.get(LAYOUT_KEY) is None  # opening writes nothing
    runtime.deploy(COUNTER.read_bytes())
    assert store.get(LAYOUT_KEY) == struct.pack(">I", LAYOUT_VERSION)
    assert check_layout(store) is True


def test_store_from_before_markers_opens_and_gets_one(tmp_path: Path) -> None:
    url = f"rocksdb://{tmp_path}/db"
    with open_storage(url) as store:
        runtime = Runtime(store)
        address = runtime.deploy(COUNTER.read_bytes())
        store.delete(LAYOUT_KEY)  # as a store written before markers existed
    with open_storage(url) as store:
        runtime = Runtime(store)
        assert runtime.call(address, "increment", sender=b"\x01" * 20).ok
        assert store.get(LAYOUT_KEY) == MARKER[1]


@pytest.mark.parametrize("version", [LAYOUT_VERSION + 1, 99])
def test_newer_layout_is_refused_naming_both_versions(tmp_path: Path, version: int) -> None:
    url = f"rocksdb://{tmp_path}/db"
    with open_storage(url) as store:
        store.set(LAYOUT_KEY, struct.pack(">I", version))
        store.set(b"cfoo", b"state")
    with open_storage(url) as store:
        for opener in (Runtime, Chain):
            with pytest.raises(LayoutVersionError) as info:
                opener(store)
            message = str(info.value)
            assert f"layout version {version}" in message
            assert f"layout version {LAYOUT_VERSION}" in message
            assert "upgrade" in message
            assert info.value.found == version and info.value.supported == LAYOUT_VERSION
        # Refusing changed nothing.
        assert store.get(LAYOUT_KEY) == struct.pack(">I", version)
        assert dict(store.scan(b"")) == {
            LAYOUT_KEY: struct.pack(">I", version),
            b"cfoo": b"state",
        }


def test_unknown_marker_is_refused() -> None:
    store = MemoryStorage()
    store.set(LAYOUT_KEY, b"garbage!")
    with pytest.raises(LayoutVersionError, match="not one this SuperVM knows") as info:
        Runtime(store)
    assert info.value.found is None
    store.set(LAYOUT_KEY, struct.pack(">I", 0))
    with pytest.raises(LayoutVersionError, match="layout version 0, unknown"):
        Runtime(store)


def test_chain_commit_stamps_a_store_whose_runtime_never_wrote() -> None:
    from supervm.chain import Block, Transaction

    store = MemoryStorage()
    chain = Chain(store, threads=1)
    try:
        chain.apply(Block(1, 0, (Transaction(b"\x00" * 20, "nothing"),)), mode="sequential")
    finally:
        chain.close()
    assert store.get(LAYOUT_KEY) == MARKER[1]
