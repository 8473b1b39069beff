"""Parallel execution (Block-STM) gives byte-for-byte the result of sequential execution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervm.chain import GENESIS, BlockResult, Transaction
from supervm.layout import in_state_tree
from supervm.storage import Storage
from supervm.tree.rebuild import root_of
from supervm.vm import Status

from .conftest import (
    ADDRESSES,
    ALICE,
    BOB,
    GAS,
    STORES,
    Contracts,
    account,
    both_modes,
    contents,
    deploy_all,
    increment,
    list_names,
    mint,
    new_chain,
    next_block,
    obj,
    object_key,
    open_store,
    register,
    transfer,
    u64,
)

#: Every account starts with this many tokens.
START_BALANCE = 1000


class World:
    """Two chains over one store (two and four threads), reset for each example.

    The chains, and so their runtimes and worker threads, live as long as the
    module: every example reuses the same wasm instances.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.chain = new_chain(storage, threads=2)
        self.wide = new_chain(storage, threads=4)
        self.contracts = ADDRESSES
        self.accounts: list[bytes] = []
        self._owned: list[bytes] = []

    def close(self) -> None:
        self.chain.close()
        self.wide.close()

    def reset(self, accounts: int, owners: set[int]) -> None:
        """Empty the store; deploy, assign the owners' objects and fund every account."""
        c = self.contracts
        for chain in (self.chain, self.wide):
            for key in self._owned:
                chain.ownership.release(c.objects, key)
            assert len(chain.ownership) == 0
        self.storage.write_batch([(key, None) for key, _ in self.storage.scan(b"")])
        assert contents(self.storage) == {}
        assert self.chain.head() == GENESIS
        deploy_all(self.chain)
        self.accounts = [account(i) for i in range(accounts)]
        self._owned = [object_key(self.accounts[i]) for i in sorted(owners)]
        for key in self._owned:
            for chain in (self.chain, self.wide):
                chain.ownership.assign(c.objects, key, key[len(b"obj/") :])
        setup = [mint(c, ALICE, address, START_BALANCE) for address in self.accounts]
        result = self.chain.apply(next_block(self.chain, setup), mode="sequential")
        assert all(receipt.ok for receipt in result.receipts)

    def check_block(self, transactions: list[Transaction]) -> BlockResult:
        """Execute in every mode, compare, commit the sequential result; return it."""
        block = next_block(self.chain, transactions)
        sequential, parallel = both_modes(self.chain, block)
        wide = self.wide.execute(block, mode="parallel")
        assert sequential.stats.mode == "sequential"
        assert parallel.stats.mode == "parallel", parallel.stats.fallback_reason
        assert wide.stats.mode == "parallel", wide.stats.fallback_reason
        assert parallel.encode() == sequential.encode(), difference(sequential, parallel)
        assert wide.encode() == sequential.encode(), difference(sequential, wide)
        # The sequential write set is the ok receipts' writes, later ones winning.
        expected: dict[bytes, bytes | None] = {}
        for receipt in sequential.receipts:
            assert receipt.ok or receipt.write_set == ()
            expected.update(receipt.write_set)
        assert sequential.write_set == tuple(sorted(expected.items()))
        state = contents(self.storage)
        self.chain.commit(sequential)
        for key, value in sequential.write_set:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        after = contents(self.storage)
        # Besides the block's writes only chain records and tree nodes changed.
        assert {k: v for k, v in after.items() if in_state_tree(k)} == {
            k: v for k, v in state.items() if in_state_tree(k)
        }
        tree_state = {k: v for k, v in after.items() if in_state_tree(k)}
        assert self.chain.head().state_root == root_of(tree_state)
        return sequential


def difference(expected: BlockResult, got: BlockResult) -> str:
    """The receipts and write sets where two results of one block differ."""
    lines = []
    for index, (a, b) in enumerate(zip(expected.receipts, got.receipts, strict=True)):
        if a != b:
            lines.append(f"tx {index}: sequential {a}\n      parallel   {b}")
    if expected.write_set != got.write_set:
        lines.append(f"write sets: sequential {expected.write_set}\n parallel {got.write_set}")
    return "\n".join(lines) or "results differ outside receipts and write set"


@pytest.fixture(scope="module", params=STORES)
def worlds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    storage = open_store(request.param, tmp_path_factory.mktemp("world"))
    state = World(storage)
    yield state
    state.close()
    storage.close()


# -- random blocks -------------------------------------------------------------------------

GAS_LIMITS = [GAS, GAS, GAS, GAS, 1_100, 1_600, 2_500, 4_000]
HOT_NAMES = [b"a", b"b", b"ab", b"ba"]
KINDS = [
    "transfer", "transfer", "balance", "increment", "counter_get", "register", "list", "count",
    "bump", "bump", "put", "poke", "get", "read_shared", "write_shared", "spin", "fail",
]  # fmt: skip


@st.composite
def transaction(draw: st.DrawFn, accounts: list[bytes], hot: bool) -> Transaction:
    """One random call: token, counter, registry or objects, sometimes with too little gas."""
    c = ADDRESSES
    sender = draw(st.sampled_from(accounts))
    other = draw(st.sampled_from(accounts))
    gas = draw(st.sampled_from(GAS_LIMITS))
    if hot:
        name = draw(st.sampled_from(HOT_NAMES))
    else:
        name = draw(st.binary(min_size=1, max_size=4).map(lambda b: bytes(97 + x % 8 for x in b)))
    data = draw(st.binary(max_size=12))
    owned = draw(st.booleans())
    kind = draw(st.sampled_from(KINDS))
    if kind == "transfer":
        amount = draw(st.sampled_from([0, 1, 7, 300, 999, START_BALANCE + 1, 5000]))
        return transfer(c, sender, other, amount, gas_limit=gas)
    if kind == "balance":
        return Transaction(c.token, "balance", other, sender=sender, gas_limit=gas)
    if kind == "increment":
        return increment(c, sender, gas_limit=gas)
    if kind == "counter_get":
        return Transaction(c.counter, "get", b"", sender=sender, gas_limit=gas)
    if kind == "register":
        return register(c, sender, name, data)
    if kind == "list":
        return list_names(c, sender, name[: draw(st.integers(0, len(name)))])
    if kind == "count":
        return Transaction(c.registry, "count", b"", sender=sender, gas_limit=gas)
    if kind == "spin":
        return obj(c, "spin", sender, gas_limit=draw(st.sampled_from([1_000, 3_000, 20_000])))
    payload = {"put": data, "write_shared": data, "poke": other + data, "get": other}
    return obj(c, kind, sender, payload.get(kind, b""), owned=owned, gas_limit=gas)


class Scenario(NamedTuple):
    accounts: int
    owners: set[int]
    blocks: list[list[Transaction]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Few accounts and keys (high contention) or many; some owned objects; 2-3 blocks."""
    hot = draw(st.booleans())
    count = 3 if hot else draw(st.integers(6, 16))
    owners = draw(st.sets(st.integers(0, count - 1)))
    tx = transaction([account(i) for i in range(count)], hot)
    blocks = draw(st.lists(st.lists(tx, min_size=2, max_size=24), min_size=2, max_size=3))
    return Scenario(count, owners, blocks)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_random_blocks_parallel_equals_sequential(worlds: World, scenario: Scenario) -> None:
    worlds.reset(scenario.accounts, scenario.owners)
    for transactions in scenario.blocks:
        worlds.check_block(transactions)
    # Four deploy blocks, the setup block, then the scenario's.
    assert worlds.chain.head().height == 5 + len(scenario.blocks)


# -- deterministic blocks ------------------------------------------------------------------


def hot_block(c: Contracts, count: int) -> list[Transaction]:
    """Transfers out of one account, interleaved with increments of one counter."""
    out = []
    for i in range(count):
        if i % 3 == 2:
            out.append(increment(c, account(i % 5)))
        else:
            out.append(transfer(c, ALICE, account(1 + i % 4), 1 + i))
    return out


@pytest.mark.parametrize("backend", STORES)
@pytest.mark.parametrize("threads", [2, 4])
def test_hot_account_block_aborts_and_still_matches(
    backend: str, threads: int, tmp_path: Path
) -> None:
    """Conflicting transactions make Block-STM abort and re-execute; the result is unchanged."""
    storage = open_store(backend, tmp_path)
    chain = new_chain(storage, threads=threads)
    try:
        c = deploy_all(chain)
        chain.apply(next_block(chain, [mint(c, ALICE, ALICE, 10**9)]), mode="sequential")
        aborts = 0
        for _ in range(300):
            block = next_block(chain, hot_block(c, 40))
            sequential, parallel = both_modes(chain, block)
            assert parallel.stats.mode == "parallel"
            assert parallel.encode() == sequential.encode(), difference(sequential, parallel)
            assert parallel.stats.executions >= len(block.transactions)
            aborts += parallel.stats.aborts
            chain.commit(parallel)
            if aborts:
                break
        assert aborts > 0, "no transaction was ever aborted: Block-STM never met a conflict"
        assert parallel.stats.executions > len(block.transactions)
    finally:
        chain.close()
        storage.close()


@pytest.mark.parametrize("backend", STORES)
def test_too_many_reexecutions_fall_back_to_sequential(backend: str, tmp_path: Path) -> None:
    storage = open_store(backend, tmp_path)
    chain = new_chain(storage, threads=2, max_reexecution_factor=0)
    try:
        c = deploy_all(chain)
        chain.apply(next_block(chain, [mint(c, ALICE, ALICE, 10**9)]), mode="sequential")
        block = next_block(chain, hot_block(c, 40))
        sequential, parallel = both_modes(chain, block)
        assert parallel.stats.fell_back_to_sequential
        assert parallel.stats.fallback_reason == "too many re-executions"
        assert parallel.stats.mode == "sequential"
        assert not sequential.stats.fell_back_to_sequential
        assert parallel.encode() == sequential.encode()
        chain.commit(parallel)
        balance = Transaction(c.token, "balance", ALICE, sender=ALICE)
        after = chain.execute(next_block(chain, [balance]), mode="sequential")
        spent = sum(1 + i for i in range(40) if i % 3 != 2)
        assert after.receipts[0].return_data == u64(10**9 - spent)
    finally:
        chain.close()
        storage.close()


def test_world_reset_gives_the_same_results(worlds: World) -> None:
    """Examples start from equal states: resetting the world forgets earlier blocks."""
    c = ADDRESSES
    block = [obj(c, "bump", ALICE, owned=True), increment(c, BOB), obj(c, "poke", BOB, ALICE)]
    digests = []
    for _ in range(2):
        worlds.reset(3, {0})
        result = worlds.check_block(block)
        assert [r.status for r in result.receipts] == [Status.OK, Status.OK, Status.FORBIDDEN]
        assert [r.return_data for r in result.receipts[:2]] == [u64(1), u64(1)]
        assert worlds.wide.head() == worlds.chain.head()
        digests.append(result.state_root)
    assert digests[0] == digests[1]
