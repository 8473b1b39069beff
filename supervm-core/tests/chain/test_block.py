"""Chain basics: the head, chained digests, block records and atomic commits."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest

from supervm.chain import Block, Chain, ChainError, OwnershipRegistry, Transaction
from supervm.chain.block import GENESIS_DIGEST, receipts_root, state_digest
from supervm.layout import BLOCK_PREFIX, DIGEST_KEY, HEIGHT_KEY
from supervm.memory import MemoryStorage
from supervm.storage import Storage
from supervm.vm import Status

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    Contracts,
    both_modes,
    contents,
    deploy_all,
    increment,
    list_names,
    mint,
    next_block,
    obj,
    object_key,
    register,
    transfer,
    u64,
)

Chains = Callable[..., Chain]


def funded(chains: Chains, storage: Storage) -> tuple[Chain, Contracts]:
    """A chain with the contracts deployed and nothing committed yet."""
    chain = chains(storage)
    return chain, deploy_all(chain)


def first_block(c: Contracts) -> list[Transaction]:
    return [
        mint(c, ALICE, ALICE, 1000),
        transfer(c, ALICE, BOB, 300),
        increment(c, CAROL),
        register(c, BOB, b"bob", b"b-value"),
    ]


def test_head_at_genesis(chains: Chains, store: Storage) -> None:
    chain = chains(store)
    assert chain.head() == (0, GENESIS_DIGEST)
    assert chain.block_record(0) is None
    assert chain.block_record(1) is None


def test_apply_moves_the_head_and_chains_digests(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    first = chain.apply(next_block(chain, first_block(c)))
    assert chain.head() == (1, first.state_digest)
    assert all(store.get(key) == value for key, value in first.write_set)
    second = chain.apply(next_block(chain, [transfer(c, BOB, CAROL, 5), increment(c, ALICE)]))
    assert chain.head() == (2, second.state_digest)

    assert first.parent_digest == GENESIS_DIGEST
    assert second.parent_digest == first.state_digest
    for result in (first, second):
        assert result.state_digest == state_digest(
            result.parent_digest, result.height, result.write_set
        )
        assert result.receipts_root == receipts_root(result.receipts)
        assert all(receipt.ok for receipt in result.receipts)
        assert chain.block_record(result.height) == (result.state_digest, result.receipts_root)
    assert all(store.get(key) == value for key, value in second.write_set)
    assert len({GENESIS_DIGEST, first.state_digest, second.state_digest}) == 3
    assert chain.block_record(3) is None


def test_digest_covers_parent_height_and_writes() -> None:
    writes = ((b"a", b"1"), (b"b", None))
    digest = state_digest(GENESIS_DIGEST, 1, writes)
    assert state_digest(GENESIS_DIGEST, 1, writes) == digest
    assert state_digest(b"\1" * 32, 1, writes) != digest
    assert state_digest(GENESIS_DIGEST, 2, writes) != digest
    assert state_digest(GENESIS_DIGEST, 1, ((b"a", b"1"), (b"b", b""))) != digest
    assert state_digest(GENESIS_DIGEST, 1, ((b"a", b"1"),)) != digest


def test_the_same_block_gives_the_same_digest_on_another_chain(chains: Chains) -> None:
    results = []
    for _ in range(2):
        chain, c = funded(chains, MemoryStorage())
        results.append(chain.apply(next_block(chain, first_block(c))))
    assert results[0].encode() == results[1].encode()


def test_a_block_not_following_the_head_is_refused(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    before = contents(store)
    for height in (0, 2, 5):
        with pytest.raises(ValueError if height == 0 else ChainError):
            chain.apply(Block(height, 1, (increment(c, ALICE),)))
    assert contents(store) == before
    chain.apply(next_block(chain, [increment(c, ALICE)]))
    after_one = contents(store)
    for height in (1, 3):
        with pytest.raises(ChainError, match=f"block {height} does not follow head 1"):
            chain.execute(Block(height, 1, (increment(c, ALICE),)))
    assert contents(store) == after_one
    assert chain.head()[0] == 1


def test_a_result_not_extending_the_head_is_refused(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    stale = chain.execute(next_block(chain, [increment(c, ALICE)]))
    applied = chain.apply(next_block(chain, [increment(c, BOB), increment(c, BOB)]))
    before = contents(store)
    # Same height as the head: refused.
    with pytest.raises(ChainError, match="does not extend head 1"):
        chain.commit(stale)
    # The right height on top of the wrong parent: refused too.
    fresh = chain.execute(next_block(chain, [increment(c, ALICE)]))
    forged = dataclasses.replace(fresh, parent_digest=stale.state_digest)
    with pytest.raises(ChainError):
        chain.commit(forged)
    assert contents(store) == before
    assert chain.head() == (1, applied.state_digest)
    chain.commit(fresh)
    assert chain.head() == (2, fresh.state_digest)


def test_commit_writes_exactly_the_write_set_and_metadata(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    chain.apply(next_block(chain, first_block(c)))
    before = contents(store)
    result = chain.execute(next_block(chain, [transfer(c, BOB, ALICE, 300), increment(c, BOB)]))
    assert contents(store) == before, "execute must not write"
    # BOB's whole balance moves: his balance key is deleted.
    assert any(value is None for _, value in result.write_set)
    chain.commit(result)
    expected = dict(before)
    for key, value in result.write_set:
        if value is None:
            del expected[key]
        else:
            expected[key] = value
    expected[HEIGHT_KEY] = struct.pack(">Q", 2)
    expected[DIGEST_KEY] = result.state_digest
    expected[BLOCK_PREFIX + struct.pack(">Q", 2)] = result.state_digest + result.receipts_root
    assert contents(store) == expected


def test_a_failed_commit_writes_nothing(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    chain.apply(next_block(chain, [increment(c, ALICE)]))
    result = chain.execute(next_block(chain, [increment(c, BOB), mint(c, BOB, BOB, 10)]))
    assert result.write_set
    before = contents(store)
    # The last operation of the batch is invalid: none of the earlier ones may land.
    broken = dataclasses.replace(result, write_set=(*result.write_set, (b"\xff" * 8, "text")))
    with pytest.raises(TypeError):
        chain.commit(broken)
    empty_key = dataclasses.replace(result, write_set=(*result.write_set, (b"", b"x")))
    with pytest.raises(ValueError):
        chain.commit(empty_key)
    assert contents(store) == before
    assert chain.head()[0] == 1
    chain.commit(result)
    assert chain.head() == (2, result.state_digest)


def test_receipts_follow_transaction_order(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    transactions = [
        increment(c, ALICE),
        obj(c, "put", BOB, b"bob's"),
        increment(c, BOB),
        obj(c, "get", CAROL, BOB),
        increment(c, CAROL),
        obj(c, "get", CAROL, ALICE),
        increment(c, ALICE),
    ]
    for result in both_modes(chain, next_block(chain, transactions)):
        got = [(r.status, r.return_data) for r in result.receipts]
        assert got == [
            (Status.OK, u64(1)),
            (Status.OK, b""),
            (Status.OK, u64(2)),
            (Status.OK, b"bob's"),
            (Status.OK, u64(3)),
            (Status.REVERTED, b""),
            (Status.OK, u64(4)),
        ]
        assert result.receipts[5].error == "none"


def test_failed_transactions_contribute_no_writes(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    chain.apply(next_block(chain, [mint(c, ALICE, ALICE, 100)]))
    transactions = [
        transfer(c, ALICE, BOB, 500),  # insufficient balance: reverted
        obj(c, "put", CAROL, b"never", gas_limit=1_500),  # out of gas
        obj(c, "write_shared", ALICE, b"spun"),
        obj(c, "spin", BOB, gas_limit=50_000),  # out of gas
        obj(c, "fail", CAROL),  # reverted
        Transaction(c.counter, "no_such_method", sender=ALICE),  # rejected
        obj(c, "put", BOB, b"kept"),
    ]
    sequential, parallel = both_modes(chain, next_block(chain, transactions))
    assert parallel.encode() == sequential.encode()
    statuses = [r.status for r in sequential.receipts]
    assert statuses == [
        Status.REVERTED, Status.OUT_OF_GAS, Status.OK, Status.OUT_OF_GAS, Status.REVERTED,
        Status.REJECTED, Status.OK,
    ]  # fmt: skip
    assert sequential.receipts[0].error == "insufficient balance"
    assert sequential.receipts[3].gas_used == 50_000
    for receipt in sequential.receipts:
        assert receipt.ok or receipt.write_set == ()
    state_key = OwnershipRegistry.state_key
    assert dict(sequential.write_set) == {
        state_key(c.objects, object_key(BOB)): b"kept",
        state_key(c.objects, b"shared"): b"spun",
    }
    chain.commit(sequential)
    view = [obj(c, "get", ALICE, CAROL), obj(c, "get", ALICE, BOB), obj(c, "read_shared", ALICE)]
    reads = chain.execute(next_block(chain, view)).receipts
    assert [(r.status, r.return_data) for r in reads] == [
        (Status.REVERTED, b""), (Status.OK, b"kept"), (Status.OK, b"spun")
    ]  # fmt: skip
    balance = chain.execute(next_block(chain, [Transaction(c.token, "balance", ALICE, sender=BOB)]))
    assert balance.receipts[0].return_data == u64(100)


def test_sequential_equals_parallel_on_a_simple_block(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    chain.apply(next_block(chain, first_block(c)))
    transactions = [
        transfer(c, ALICE, BOB, 10),
        transfer(c, BOB, CAROL, 20),
        transfer(c, CAROL, ALICE, 5),
        increment(c, ALICE),
        increment(c, BOB),
        register(c, CAROL, b"carol", b"c"),
        list_names(c, ALICE, b""),
        obj(c, "bump", ALICE),
        obj(c, "bump", ALICE),
    ]
    sequential, parallel = both_modes(chain, next_block(chain, transactions))
    assert sequential.stats.mode == "sequential"
    assert parallel.stats.mode == "parallel"
    assert not parallel.stats.fell_back_to_sequential
    assert parallel.encode() == sequential.encode()
    assert parallel == sequential
    listing = sequential.receipts[6].return_data
    assert b"bob" in listing and b"carol" in listing
    chain.commit(parallel)
    assert chain.head() == (2, sequential.state_digest)


def test_one_transaction_or_one_thread_runs_sequentially(chains: Chains) -> None:
    chain, c = funded(chains, MemoryStorage())
    single = chain.execute(next_block(chain, [increment(c, ALICE)]), mode="parallel")
    assert single.stats.mode == "sequential" and single.stats.fell_back_to_sequential
    lone = chains(MemoryStorage(), threads=1)
    deploy_all(lone)
    block = next_block(lone, [increment(c, ALICE), increment(c, BOB)])
    result = lone.execute(block, mode="parallel")
    assert result.stats.fallback_reason == "one thread or one transaction"
    assert result.encode() == lone.execute(block, mode="sequential").encode()
    with pytest.raises(ValueError, match="mode"):
        lone.execute(block, mode="speculative")
