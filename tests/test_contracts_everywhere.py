"""The example contracts give identical receipts and gas on every back end and call path."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from supervm.vm import Runtime, Status

from .backends import ALL_BACKENDS, fresh_store

CONTRACTS = Path(__file__).resolve().parent.parent / "examples" / "contracts"
ALICE, BOB, CAROL = b"\x0a" * 20, b"\x0b" * 20, b"\x0c" * 20


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def scenario(runtime: Runtime) -> list[bytes]:
    """Deploy every example and run a fixed mix of calls; return the encoded receipts."""
    token = runtime.deploy((CONTRACTS / "token.wasm").read_bytes())
    counter = runtime.deploy((CONTRACTS / "counter.wasm").read_bytes())
    registry = runtime.deploy((CONTRACTS / "registry.wasm").read_bytes())
    hasher = runtime.deploy((CONTRACTS / "hasher.wasm").read_bytes())
    wat_counter = runtime.deploy((CONTRACTS / "wat" / "counter.wasm").read_bytes())
    calls = [
        (token, "mint", ALICE + u64(1000), ALICE),
        (token, "mint", BOB + u64(5), BOB),  # not the owner: reverts
        (token, "transfer", BOB + u64(300), ALICE),
        (token, "transfer", CAROL + u64(10**6), BOB),  # insufficient balance
        (token, "transfer", ALICE + u64(1), ALICE),  # to oneself
        (token, "balance", ALICE, CAROL),
        (token, "balance", BOB, CAROL),
        (token, "total_supply", b"", CAROL),
        (token, "transfer", b"short", ALICE),
        (counter, "increment", b"", ALICE),
        (counter, "increment", b"", BOB),
        (counter, "get", b"", BOB),
        (counter, "reset", b"", BOB),
        (counter, "get", b"", BOB),
        (wat_counter, "increment", b"", BOB),
        (registry, "register", bytes([5]) + b"alice" + b"a-value", ALICE),
        (registry, "register", bytes([3]) + b"bob" + b"b", BOB),
        (registry, "register", bytes([5]) + b"alina" + b"", CAROL),
        (registry, "register", bytes([5]) + b"alice" + b"again", BOB),  # name taken
        (registry, "lookup", b"alice", CAROL),
        (registry, "lookup", b"zed", CAROL),  # not found
        (registry, "list", b"al", CAROL),
        (registry, "list", b"", CAROL),
        (registry, "count", b"", CAROL),
        (hasher, "hash", struct.pack("<I", 50) + b"seed", CAROL),
    ]
    receipts = []
    for height, (address, method, data, sender) in enumerate(calls, start=1):
        receipt = runtime.call(
            address, method, data, sender=sender, gas_limit=5_000_000,
            block_height=height, block_timestamp=1_700_000_000 + height,
        )  # fmt: skip
        receipts.append(receipt.encode())
    return receipts


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    with fresh_store("memory", tmp_path_factory.mktemp("ref")) as store:
        return scenario(Runtime(store))


def test_reference_run_makes_sense(tmp_path: Path) -> None:
    with fresh_store("memory", tmp_path) as store:
        runtime = Runtime(store)
        token = runtime.deploy((CONTRACTS / "token.wasm").read_bytes())
        assert runtime.call(token, "mint", ALICE + u64(1000), sender=ALICE).ok
        assert runtime.call(token, "transfer", BOB + u64(300), sender=ALICE).ok
        short = runtime.call(token, "transfer", CAROL + u64(10**6), sender=BOB)
        assert short.status is Status.REVERTED and short.error == "insufficient balance"
        assert runtime.call(token, "balance", ALICE, sender=CAROL).return_data == u64(700)
        assert runtime.call(token, "balance", BOB, sender=CAROL).return_data == u64(300)
        assert runtime.call(token, "total_supply", sender=CAROL).return_data == u64(1000)
        registry = runtime.deploy((CONTRACTS / "registry.wasm").read_bytes())
        for name in (b"bob", b"alice", b"alina"):
            assert runtime.call(registry, "register", bytes([len(name)]) + name + b"v",
                                sender=ALICE).ok  # fmt: skip
        listing = runtime.call(registry, "list", b"al", sender=ALICE).return_data
        assert listing == b"".join(
            bytes([len(n)]) + n + struct.pack("<H", 1) + b"v" for n in (b"alice", b"alina")
        )
        count = runtime.call(registry, "count", sender=ALICE).return_data
        assert struct.unpack("<I", count) == (3,)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_identical_receipts_on_every_back_end(
    backend: str, tmp_path: Path, reference: list[bytes]
) -> None:
    with fresh_store(backend, tmp_path) as store:
        assert scenario(Runtime(store)) == reference


def test_identical_receipts_on_the_public_api_path(tmp_path: Path, reference: list[bytes]) -> None:
    with fresh_store("memory", tmp_path) as store:
        assert scenario(Runtime(store, fast=False)) == reference


def test_identical_receipts_with_the_gil_released(tmp_path: Path, reference: list[bytes]) -> None:
    with fresh_store("lmdb", tmp_path) as store:
        assert scenario(Runtime(store, release_gil=True)) == reference
