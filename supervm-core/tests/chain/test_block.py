"""Chain basics: the head, headers and their links, block bodies and atomic commits."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from supervm.chain import (
    GENESIS,
    Block,
    BlockHeader,
    Chain,
    ChainError,
    OwnershipRegistry,
    Transaction,
)
from supervm.chain.block import (
    decode_transactions,
    encode_receipts,
    encode_transactions,
    receipts_root,
    transactions_root,
)
from supervm.chain.header import ZERO_HASH, BlockFormatError
from supervm.layout import (
    HEIGHT_KEY,
    block_key,
    hash_key,
    header_key,
    in_state_tree,
    receipts_key,
    tx_key,
)
from supervm.memory import MemoryStorage
from supervm.storage import Storage
from supervm.tree import PLACEHOLDER
from supervm.tree.rebuild import root_of
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
    wasm,
)

Chains = Callable[..., Chain]


def tree_state(store: Storage) -> dict[bytes, bytes]:
    """The pairs of the store the state tree commits to."""
    return {key: value for key, value in store.scan(b"") if in_state_tree(key)}


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
    assert chain.head() == GENESIS == (0, ZERO_HASH, PLACEHOLDER)
    assert chain.header(0) is None and chain.header(1) is None
    assert chain.block(1) is None
    with pytest.raises(ValueError, match="height"):
        chain.header(-1)


def test_deploying_makes_a_block_and_redeploying_does_not(chains: Chains, store: Storage) -> None:
    chain = chains(store)
    c = deploy_all(chain)
    assert chain.head().height == 4
    for height in range(1, 5):
        block = chain.block(height)
        assert block is not None and len(block.transactions) == 1
        assert block.transactions[0].method == "deploy"
    head = chain.head()
    assert deploy_all(chain) == c
    assert chain.head() == head
    assert head.state_root == root_of(tree_state(store))


def test_apply_moves_the_head_and_links_headers(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    base = chain.head()
    block = next_block(chain, first_block(c))
    first = chain.apply(block)
    assert chain.head() == (base.height + 1, first.block_hash, first.state_root)
    assert all(store.get(key) == value for key, value in first.write_set)
    second = chain.apply(next_block(chain, [transfer(c, BOB, CAROL, 5), increment(c, ALICE)]))
    assert chain.head() == (base.height + 2, second.block_hash, second.state_root)

    assert first.parent_hash == base.block_hash
    assert second.parent_hash == first.block_hash
    assert chain.block(first.height) == block
    for result in (first, second):
        assert result.receipts_root == receipts_root(result.receipts)
        assert all(receipt.ok for receipt in result.receipts)
        assert chain.header(result.height) == result.header
        assert chain.height_of(result.block_hash) == result.height
        stored = chain.block(result.height)
        assert stored is not None
        assert result.header.transactions_root == transactions_root(stored.transactions)
    assert all(store.get(key) == value for key, value in second.write_set)
    assert len({base.state_root, first.state_root, second.state_root}) == 3
    assert second.state_root == root_of(tree_state(store))
    assert chain.header(second.height + 1) is None
    assert chain.height_of(b"\1" * 32) is None


def test_the_header_encodes_every_field_and_its_hash_covers_them() -> None:
    header = BlockHeader(7, b"\1" * 32, 99, b"\2" * 32, b"\3" * 32, b"\4" * 32)
    assert BlockHeader.decode(header.encode()) == header
    changed = [
        dataclasses.replace(header, height=8),
        dataclasses.replace(header, parent_hash=b"\x09" * 32),
        dataclasses.replace(header, timestamp=100),
        dataclasses.replace(header, transactions_root=b"\x09" * 32),
        dataclasses.replace(header, state_root=b"\x09" * 32),
        dataclasses.replace(header, receipts_root=b"\x09" * 32),
    ]
    assert len({header.hash, *(h.hash for h in changed)}) == 7
    raw = header.encode()
    for bad in (raw[:-1], raw + b"\0", b"\2" + raw[1:], b""):
        with pytest.raises(BlockFormatError):
            BlockHeader.decode(bad)
    with pytest.raises(ValueError, match="parent_hash"):
        BlockHeader(1, b"short", 0, *(b"\0" * 32,) * 3)


def test_transactions_encode_canonically() -> None:
    tx = Transaction(b"\7" * 20, "transfer", b"data", sender=b"\x08" * 20, gas_limit=5, owned=True)
    assert Transaction.decode(tx.encode()) == tx
    assert decode_transactions(encode_transactions([tx, tx])) == (tx, tx)
    assert tx.hash != dataclasses.replace(tx, owned=False).hash
    for bad in (tx.encode()[:-1], tx.encode() + b"\0", b"\x09" + tx.encode()[1:]):
        with pytest.raises(BlockFormatError):
            Transaction.decode(bad)
    assert transactions_root([]) != transactions_root([tx])
    assert transactions_root([tx, tx]) != transactions_root([tx])


def test_the_same_block_gives_the_same_result_on_another_chain(chains: Chains) -> None:
    results = []
    for _ in range(2):
        chain, c = funded(chains, MemoryStorage())
        results.append(chain.apply(next_block(chain, first_block(c))))
    assert results[0].encode() == results[1].encode()
    assert results[0].block_hash == results[1].block_hash


def test_a_block_not_following_the_head_is_refused(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    before = contents(store)
    head = chain.head().height
    for height in (0, head, head + 2):
        with pytest.raises(ValueError if height == 0 else ChainError):
            chain.apply(Block(height, 1, (increment(c, ALICE),)))
    assert contents(store) == before
    chain.apply(next_block(chain, [increment(c, ALICE)]))
    after_one = contents(store)
    head = chain.head().height
    for height in (head, head + 2):
        with pytest.raises(ChainError, match=f"block {height} does not follow head {head}"):
            chain.execute(Block(height, 1, (increment(c, ALICE),)))
    assert contents(store) == after_one
    assert chain.head().height == head


def test_a_result_not_extending_the_head_is_refused(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    stale = chain.execute(next_block(chain, [increment(c, ALICE)]))
    applied = chain.apply(next_block(chain, [increment(c, BOB), increment(c, BOB)]))
    before = contents(store)
    # Same height as the head: refused.
    with pytest.raises(ChainError, match=f"does not extend head {applied.height}"):
        chain.commit(stale)
    # The right height on top of the wrong parent: refused too.
    fresh = chain.execute(next_block(chain, [increment(c, ALICE)]))
    forged = dataclasses.replace(
        fresh, header=dataclasses.replace(fresh.header, parent_hash=stale.block_hash)
    )
    with pytest.raises(ChainError):
        chain.commit(forged)
    assert contents(store) == before
    assert chain.head() == (applied.height, applied.block_hash, applied.state_root)
    chain.commit(fresh)
    assert chain.head() == (fresh.height, fresh.block_hash, fresh.state_root)


def test_commit_writes_exactly_the_write_set_and_metadata(chains: Chains, store: Storage) -> None:
    chain, c = funded(chains, store)
    chain.apply(next_block(chain, first_block(c)))
    before = contents(store)
    result = chain.execute(next_block(chain, [transfer(c, BOB, ALICE, 300), increment(c, BOB)]))
    assert contents(store) == before, "execute must not write"
    # BOB's whole balance moves: his balance key is deleted.
    assert any(value is None for _, value in result.write_set)
    # History: each written key's value before the block, and the block's change record.
    history = chain.history.block_ops(result.height, result.write_set)
    assert len(history) == len(result.write_set) + 1
    chain.commit(result)
    expected = dict(before)
    for key, value in (*result.write_set, *history, *result.tree.writes):
        if value is None:
            del expected[key]
        else:
            expected[key] = value
    height = result.height
    expected[HEIGHT_KEY] = struct.pack(">Q", height)
    expected[header_key(height)] = result.header.encode()
    expected[block_key(height)] = encode_transactions(result.transactions)
    expected[hash_key(result.block_hash)] = struct.pack(">Q", height)
    expected[receipts_key(height)] = encode_receipts(result.receipts)
    for index, tx in enumerate(result.transactions):
        expected[tx_key(tx.hash)] = struct.pack(">QI", height, index)
    assert contents(store) == expected
    assert result.state_root == root_of(tree_state(store))


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
    assert chain.head().height == result.height - 1
    chain.commit(result)
    assert chain.head() == (result.height, result.block_hash, result.state_root)


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
    assert chain.head() == (sequential.height, sequential.block_hash, sequential.state_root)


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


def test_the_worked_example_of_docs_chain_md_is_what_the_code_gives() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "chain.md").read_text()
    chain = Chain(MemoryStorage(), threads=1)
    try:
        token = chain.deploy(wasm("token.wasm"))
        alice = b"\x0a" * 20
        mint_tx = Transaction(token, "mint", alice + u64(1000), sender=alice)
        result = chain.apply(Block(2, 1_700_000_000, (mint_tx,)))
        header = result.header
        assert header.hash.hex() in docs
        for root in (header.parent_hash, header.transactions_root, header.state_root,
                     header.receipts_root):  # fmt: skip
            assert root.hex() in docs
        proof = chain.prove_state(token, b"bal/" + alice)
        assert len(proof.encode()) == 267 and proof.verify(header.state_root)
        assert proof.proof.leaf is not None
        assert proof.proof.leaf[0].hex()[:8] in docs and proof.proof.siblings[0].hex()[:8] in docs
        absent = chain.prove_state(token, b"bal/" + b"\x0b" * 20)
        assert len(absent.encode()) == 255 and absent.value is None
        assert absent.verify(header.state_root)
    finally:
        chain.close()


def test_the_merkle_root_has_rfc_6962s_shape() -> None:
    import hashlib

    from supervm.chain.header import merkle_root

    def reference(items: list[bytes]) -> bytes:
        if len(items) == 1:
            return hashlib.sha256(b"\0" + items[0]).digest()
        split = 1 << ((len(items) - 1).bit_length() - 1)
        return hashlib.sha256(b"\1" + reference(items[:split]) + reference(items[split:])).digest()

    for count in range(1, 70):
        items = [bytes([i, count]) for i in range(count)]
        assert merkle_root(items) == reference(items), count
    assert merkle_root([b"a", b"b"]) != merkle_root([b"b", b"a"])
