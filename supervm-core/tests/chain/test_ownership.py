"""Owned objects: only the owner writes them, owned-only calls stay on their objects,
and owned-only transactions take the fast path without changing any result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from supervm.chain import BlockResult, Chain, OwnershipRegistry, Transaction
from supervm.memory import MemoryStorage
from supervm.storage import Storage
from supervm.vm import Status

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    Contracts,
    both_modes,
    deploy_all,
    increment,
    list_names,
    next_block,
    obj,
    object_key,
    open_store,
    register,
    u64,
)

Chains = Callable[..., Chain]
MODES = ["sequential", "parallel"]


def owned_world(chain: Chain) -> Contracts:
    """Deploy the contracts; ALICE and BOB own their objects, CAROL's is shared."""
    c = deploy_all(chain)
    chain.ownership.assign(c.objects, object_key(ALICE), ALICE)
    chain.ownership.assign(c.objects, object_key(BOB), BOB)
    return c


def run(chain: Chain, transactions: list[Transaction], mode: str) -> BlockResult:
    """Execute in ``mode``; the other mode must agree byte for byte."""
    sequential, parallel = both_modes(chain, next_block(chain, transactions))
    assert parallel.stats.mode == "parallel"
    assert parallel.encode() == sequential.encode()
    return sequential if mode == "sequential" else parallel


def read_object(chain: Chain, c: Contracts, owner: bytes) -> tuple[Status, bytes]:
    receipt = chain.execute(next_block(chain, [obj(c, "get", CAROL, owner)])).receipts[0]
    return receipt.status, receipt.return_data


def test_registry_records_owners_of_full_state_keys(chains: Chains) -> None:
    chain = chains(MemoryStorage())
    c = owned_world(chain)
    registry = chain.ownership
    assert len(registry) == 2
    assert registry.owner(OwnershipRegistry.state_key(c.objects, object_key(ALICE))) == ALICE
    assert registry.owner(OwnershipRegistry.state_key(c.objects, object_key(BOB))) == BOB
    assert registry.owner(OwnershipRegistry.state_key(c.objects, object_key(CAROL))) is None
    # The same key in another contract's namespace is not owned.
    assert registry.owner(OwnershipRegistry.state_key(c.counter, object_key(ALICE))) is None
    with pytest.raises(TypeError):
        registry.assign(c.objects, b"", ALICE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("owned", [True, False], ids=["owned", "shared"])
def test_owners_update_their_own_objects(
    chains: Chains, store: Storage, owned: bool, mode: str
) -> None:
    chain = chains(store)
    c = owned_world(chain)
    result = run(
        chain,
        [
            obj(c, "bump", ALICE, owned=owned),
            obj(c, "put", BOB, b"hello", owned=owned),
            obj(c, "bump", ALICE, owned=owned),
        ],
        mode,
    )
    assert [(r.status, r.return_data) for r in result.receipts] == [
        (Status.OK, u64(1)), (Status.OK, b""), (Status.OK, u64(2))
    ]  # fmt: skip
    if mode == "parallel":
        assert result.stats.owned_fast_path == (3 if owned else 0)
    chain.commit(result)
    assert read_object(chain, c, ALICE) == (Status.OK, u64(2))
    assert read_object(chain, c, BOB) == (Status.OK, b"hello")


@pytest.mark.parametrize("mode", MODES)
def test_a_non_owner_cannot_write_an_owned_object(
    chains: Chains, store: Storage, mode: str
) -> None:
    chain = chains(store)
    c = owned_world(chain)
    chain.apply(next_block(chain, [obj(c, "put", ALICE, b"mine")]))
    result = run(
        chain,
        [
            obj(c, "poke", BOB, ALICE + b"theirs"),
            obj(c, "poke", CAROL, ALICE + b"theirs"),
            obj(c, "poke", BOB, ALICE + b"theirs", owned=True),
            obj(c, "poke", BOB, CAROL + b"shared objects are anyone's"),
        ],
        mode,
    )
    statuses = [r.status for r in result.receipts]
    assert statuses == [Status.FORBIDDEN, Status.FORBIDDEN, Status.FORBIDDEN, Status.OK]
    for receipt, intruder in zip(result.receipts[:3], [BOB, CAROL, BOB], strict=True):
        assert receipt.error == (
            f"object {object_key(ALICE)!r} is owned by {ALICE.hex()}; "
            f"{intruder.hex()} may not write it"
        )
        assert receipt.write_set == ()
        assert receipt.return_data == b""
    alice_key = OwnershipRegistry.state_key(c.objects, object_key(ALICE))
    assert alice_key not in dict(result.write_set)
    assert result.write_set == result.receipts[3].write_set
    chain.commit(result)
    assert read_object(chain, c, ALICE) == (Status.OK, b"mine")
    assert read_object(chain, c, CAROL) == (Status.OK, b"shared objects are anyone's")


@pytest.mark.parametrize("mode", MODES)
def test_owned_only_calls_may_not_touch_anything_else(
    chains: Chains, store: Storage, mode: str
) -> None:
    chain = chains(store)
    c = owned_world(chain)
    chain.apply(next_block(chain, [obj(c, "put", BOB, b"bob's"), obj(c, "bump", CAROL)]))
    result = run(
        chain,
        [
            obj(c, "write_shared", ALICE, b"x", owned=True),
            obj(c, "read_shared", ALICE, owned=True),
            obj(c, "get", ALICE, BOB, owned=True),  # reading another owner's object
            obj(c, "bump", CAROL, owned=True),  # CAROL owns nothing
            increment(c, ALICE),  # another contract, not declared owned: fine
            obj(c, "write_shared", ALICE, b"y"),  # not declared owned: fine
            obj(c, "get", ALICE, ALICE, owned=True),  # its own (absent) object: reverts
        ],
        mode,
    )
    statuses = [r.status for r in result.receipts]
    assert statuses == [Status.FORBIDDEN] * 4 + [Status.OK, Status.OK, Status.REVERTED]
    touched = [b"shared", b"shared", object_key(BOB), object_key(CAROL)]
    for receipt, key, sender in zip(
        result.receipts[:4], touched, [ALICE] * 3 + [CAROL], strict=True
    ):
        assert receipt.error == (
            f"call declared owned-only touched {key!r}, which {sender.hex()} does not own"
        )
        assert receipt.write_set == ()
    assert result.receipts[6].error == "none"
    shared = OwnershipRegistry.state_key(c.objects, b"shared")
    assert dict(result.write_set)[shared] == b"y"


def test_ownership_persists_across_reopen(tmp_path: Path) -> None:
    storage = open_store("rocksdb", tmp_path)
    chain = Chain(storage)
    try:
        c = owned_world(chain)
        chain.apply(next_block(chain, [obj(c, "put", ALICE, b"kept")]))
        head = chain.head()
    finally:
        chain.close()
        storage.close()

    storage = open_store("rocksdb", tmp_path)
    chain = Chain(storage)
    chain.executor.min_parallel_gas = 0
    try:
        assert chain.head() == head
        assert len(chain.ownership) == 2
        alice_key = OwnershipRegistry.state_key(c.objects, object_key(ALICE))
        assert chain.ownership.owner(alice_key) == ALICE
        result = run(
            chain,
            [obj(c, "poke", CAROL, ALICE + b"stolen"), obj(c, "bump", BOB, owned=True)],
            "parallel",
        )
        assert [r.status for r in result.receipts] == [Status.FORBIDDEN, Status.OK]
        assert result.stats.owned_fast_path == 1
        chain.commit(result)
        chain.ownership.release(c.objects, object_key(ALICE))
        assert chain.ownership.owner(alice_key) is None
        poke = obj(c, "poke", CAROL, ALICE + b"now shared")
        released = run(chain, [poke, obj(c, "get", BOB, ALICE)], "parallel")
        assert [(r.status, r.return_data) for r in released.receipts] == [
            (Status.OK, b""), (Status.OK, b"now shared")
        ]  # fmt: skip
    finally:
        chain.close()
        storage.close()

    storage = open_store("rocksdb", tmp_path)
    try:
        assert len(OwnershipRegistry(storage)) == 1
    finally:
        storage.close()


def test_owned_only_transactions_take_the_fast_path(chains: Chains, store: Storage) -> None:
    chain = chains(store)
    c = owned_world(chain)
    transactions = [
        obj(c, "get", CAROL, ALICE),  # before ALICE's bumps: no object yet
        obj(c, "bump", ALICE, owned=True),
        increment(c, CAROL),
        obj(c, "bump", BOB, owned=True),
        obj(c, "bump", ALICE, owned=True),
        obj(c, "get", CAROL, ALICE),  # sees ALICE's two bumps
        obj(c, "bump", BOB, owned=True),
        obj(c, "bump", ALICE, owned=True),
        increment(c, BOB),
        obj(c, "get", BOB, BOB),
    ]
    sequential, parallel = both_modes(chain, next_block(chain, transactions))
    assert parallel.stats.mode == "parallel"
    assert parallel.stats.owned_fast_path == 5
    assert parallel.encode() == sequential.encode()
    returned = [(r.status, r.return_data) for r in parallel.receipts]
    assert returned == [
        (Status.REVERTED, b""),
        (Status.OK, u64(1)),
        (Status.OK, u64(1)),
        (Status.OK, u64(1)),
        (Status.OK, u64(2)),
        (Status.OK, u64(2)),
        (Status.OK, u64(2)),
        (Status.OK, u64(3)),
        (Status.OK, u64(2)),
        (Status.OK, u64(2)),
    ]
    chain.commit(parallel)
    assert read_object(chain, c, ALICE) == (Status.OK, u64(3))


def test_an_owned_transaction_after_its_senders_shared_one_leaves_the_fast_path(
    chains: Chains, store: Storage
) -> None:
    chain = chains(store)
    c = owned_world(chain)
    transactions = [
        obj(c, "bump", ALICE, owned=True),  # fast path
        obj(c, "put", ALICE, u64(100)),  # ALICE's shared transaction
        obj(c, "bump", ALICE, owned=True),  # after it: executed by Block-STM
        obj(c, "bump", BOB, owned=True),  # fast path
        obj(c, "bump", ALICE, owned=True),
    ]
    sequential, parallel = both_modes(chain, next_block(chain, transactions))
    assert parallel.stats.owned_fast_path == 2
    assert parallel.encode() == sequential.encode()
    returned = [r.return_data for r in parallel.receipts]
    assert returned == [u64(1), b"", u64(101), u64(1), u64(102)]


def test_an_owned_only_scan_sees_what_earlier_transactions_wrote(chains: Chains) -> None:
    """An owned-only call iterating a prefix must meet the keys an earlier transaction of
    another sender added in the same block, as it does when the block runs sequentially."""
    chain = chains(MemoryStorage())
    c = owned_world(chain)
    block = next_block(chain, [register(c, BOB, b"b", b"v"), list_names(c, ALICE, b"", owned=True)])
    sequential, parallel = both_modes(chain, block)
    listing = sequential.receipts[1]
    assert listing.status is Status.FORBIDDEN
    assert listing.error == (
        f"call declared owned-only touched b'name/b', which {ALICE.hex()} does not own"
    )
    assert [r.status for r in parallel.receipts] == [r.status for r in sequential.receipts]
    assert parallel.encode() == sequential.encode()
