"""One mixed block gives the same result sequentially and in parallel on every back end."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from supervm.chain import Block, BlockResult, Chain, Head, Transaction
from supervm.layout import in_state_tree
from supervm.storage import Storage
from supervm.tree.rebuild import root_of

from .backends import ALL_BACKENDS, fresh_store

CONTRACTS = Path(__file__).resolve().parent.parent / "examples" / "contracts"
ACCOUNTS = [bytes([i + 1]) * 20 for i in range(6)]
ALICE, BOB, CAROL, DAVE, ERIN, FRANK = ACCOUNTS
#: Parallel runs of the block per back end (threads interleave differently each time).
PARALLEL_RUNS = 4


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def blocks(token: bytes, counter: bytes, registry: bytes, objects: bytes) -> list[Block]:
    """A setup block, then the mixed block under test."""

    def tx(
        contract: bytes, method: str, data: bytes, sender: bytes, gas_limit: int = 10_000_000
    ) -> Transaction:
        return Transaction(contract, method, data, sender=sender, gas_limit=gas_limit)

    def owned(method: str, data: bytes, sender: bytes) -> Transaction:
        return Transaction(objects, method, data, sender=sender, owned=True)

    def name(n: bytes, value: bytes, sender: bytes) -> Transaction:
        return tx(registry, "register", bytes([len(n)]) + n + value, sender)

    setup = [tx(token, "mint", account + u64(1000), ALICE) for account in ACCOUNTS]
    setup += [
        name(b"alice", b"a", ALICE),
        name(b"bob", b"b", BOB),
        tx(objects, "put", b"carol's", CAROL),
        tx(counter, "increment", b"", DAVE),
    ]
    mixed = [
        owned("bump", b"", ALICE),  # owned-object fast path
        owned("bump", b"", BOB),  # owned-object fast path
        tx(token, "transfer", BOB + u64(100), ALICE),
        tx(token, "transfer", CAROL + u64(50), BOB),
        owned("bump", b"", ALICE),  # after ALICE's shared transaction: Block-STM
        tx(token, "transfer", ALICE + u64(5000), CAROL),  # insufficient balance
        name(b"alina", b"x", CAROL),
        tx(registry, "list", b"al", DAVE),  # must see "alina" from the tx before
        tx(counter, "increment", b"", ALICE),
        tx(objects, "poke", ALICE + b"stolen", BOB),  # forbidden: ALICE owns it
        tx(counter, "increment", b"", BOB),
        tx(token, "transfer", DAVE + u64(1100), BOB),  # BOB holds exactly 1050 by now
        tx(objects, "write_shared", b"s1", DAVE),
        owned("write_shared", b"no", ERIN),  # owned-only touching a shared key
        tx(objects, "read_shared", b"", ERIN),
        tx(objects, "spin", b"", FRANK, gas_limit=30_000),  # out of gas
        tx(objects, "fail", b"", FRANK),
        tx(token, "transfer", FRANK + u64(1), ERIN, gas_limit=1_200),  # out of gas
        name(b"alice", b"again", ERIN),  # name taken
        tx(registry, "count", b"", FRANK),
        tx(objects, "get", ALICE, CAROL),  # ALICE's object after two bumps
        tx(objects, "poke", CAROL + b"shared", DAVE),  # CAROL's object is not owned
        tx(counter, "get", b"", ERIN),
        tx(token, "transfer", ERIN + u64(900), ALICE),  # ALICE's whole balance
        tx(token, "balance", ALICE, FRANK),
        owned("bump", b"", ALICE),
    ]
    # Blocks 1-4 deploy the contracts.
    return [Block(5, 1_700_000_005, tuple(setup)), Block(6, 1_700_000_006, tuple(mixed))]


def run_everywhere(storage: Storage) -> tuple[list[BlockResult], Head]:
    """Sequential then parallel results of the mixed block, and the head after it."""
    chain = Chain(storage, threads=2)
    chain.executor.min_parallel_gas = 0
    try:
        addresses = [
            chain.deploy((CONTRACTS / name).read_bytes())
            for name in ("token.wasm", "counter.wasm", "registry.wasm", "wat/objects.wasm")
        ]
        objects = addresses[3]
        chain.ownership.assign(objects, b"obj/" + ALICE, ALICE)
        chain.ownership.assign(objects, b"obj/" + BOB, BOB)
        setup, mixed = blocks(*addresses)
        assert all(r.ok for r in chain.apply(setup, mode="sequential").receipts)
        results = [chain.execute(mixed, mode="sequential")]
        for _ in range(PARALLEL_RUNS):
            result = chain.execute(mixed, mode="parallel")
            assert result.stats.mode == "parallel", result.stats.fallback_reason
            assert result.stats.owned_fast_path == 3
            results.append(result)
        chain.commit(results[-1])
        head = chain.head()
        # The root is the state's, whatever the back end: recomputed from the pairs.
        assert head.state_root == root_of({k: v for k, v in storage.scan(b"") if in_state_tree(k)})
        assert chain.tree.check(head.height) > 0
        return results, head
    finally:
        chain.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[BlockResult], Head]:
    with fresh_store("memory", tmp_path_factory.mktemp("reference")) as storage:
        return run_everywhere(storage)


def test_the_reference_block_makes_sense(reference: tuple[list[BlockResult], Head]) -> None:
    results, _ = reference
    sequential = results[0]
    statuses = [r.status.value for r in sequential.receipts]
    assert statuses == [
        "ok", "ok", "ok", "ok", "ok", "reverted", "ok", "ok", "ok", "forbidden", "ok",
        "reverted", "ok", "forbidden", "ok", "out_of_gas", "reverted", "out_of_gas", "reverted",
        "ok", "ok", "ok", "ok", "ok", "ok", "ok",
    ]  # fmt: skip
    listing = b"\x05alice\x01\x00a" + b"\x05alina\x01\x00x"
    returned = {i: r.return_data for i, r in enumerate(sequential.receipts) if r.return_data}
    assert returned == {
        0: u64(1), 1: u64(1), 4: u64(2), 7: listing, 8: u64(2), 10: u64(3), 14: b"s1",
        19: struct.pack("<I", 3), 20: u64(2), 22: u64(3), 24: u64(0), 25: u64(3),
    }  # fmt: skip
    assert ALICE.hex() in (sequential.receipts[9].error or "")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_parallel_equals_sequential_on_every_backend(
    backend: str, tmp_path: Path, reference: tuple[list[BlockResult], Head]
) -> None:
    expected_results, expected_head = reference
    expected = expected_results[0].encode()
    with fresh_store(backend, tmp_path) as storage:
        results, head = run_everywhere(storage)
    for result in results:
        assert result.encode() == expected
    assert head == expected_head
