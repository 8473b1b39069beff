"""The state root, history, proofs, revert and pruning agree on every back end.

The same deterministic token chain (``crash_worker.build_block``) is built on
every first-party back end; its roots must equal those of a memory-store replay
and of a from-scratch rebuild over the flat state, every kept height must read
as the replay, proofs must verify against the headers, and revert then
re-apply and pruning must leave the same chain. A Hypothesis test then drives
random blocks of sets and deletes, reverts and prunes on each back end and
compares every root with a rebuild.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervm.chain import Block, Chain, PrunedHeightError, Transaction
from supervm.layout import in_state_tree, state_key
from supervm.storage import Storage
from supervm.tree import verify
from supervm.tree.rebuild import root_of
from supervm.vm.runtime import contract_address

from .backends import ALL_BACKENDS, fresh_store
from .crash_support import Replay
from .crash_worker import ACCOUNTS, OWNER, ROOT, TOKEN, build_block, u64

CONTRACTS = ROOT / "examples" / "contracts"

SEED = 99
TOP = 10


def tree_state(store: Storage) -> dict[bytes, bytes]:
    return {k: v for k, v in store.scan(b"") if in_state_tree(k)}


@pytest.fixture(scope="module")
def reference() -> tuple[Replay, dict[int, dict[bytes, bytes]]]:
    replay = Replay(SEED)
    states: dict[int, dict[bytes, bytes]] = {0: {}}
    for height in range(1, TOP + 1):
        replay.extend_to(height)
        states[height] = tree_state(replay.store)
    return replay, states


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_roots_history_proofs_revert_and_pruning_on_every_backend(
    backend: str, tmp_path: Path, reference: tuple[Replay, dict[int, dict[bytes, bytes]]]
) -> None:
    replay, states = reference
    with fresh_store(backend, tmp_path) as store:
        chain = Chain(store, threads=2)
        chain.executor.min_parallel_gas = 0
        try:
            for height in range(1, TOP + 1):
                mode = "parallel" if height % 2 else "sequential"
                chain.apply(build_block(TOKEN, SEED, height), mode=mode)
                assert chain.head() == replay_head(replay, height)
            assert chain.head().state_root == root_of(tree_state(store))
            assert chain.tree.check(TOP) == len(states[TOP])
            keys = sorted({k for state in states.values() for k in state})
            for height in range(0, TOP + 1):
                view = chain.at(height)
                assert dict(view.scan(b"")) == states[height], height
                for key in keys[::7]:
                    assert view.get(key) == states[height].get(key)
            # Proofs of balances as the token sees them, present and absent.
            for height in (2, TOP // 2, TOP):
                header = chain.header(height)
                assert header is not None
                for account in (ACCOUNTS[0], ACCOUNTS[1], b"\x77" * 20):
                    balance = b"bal/" + account  # the token's key for a balance
                    proof = chain.prove_state(TOKEN, balance, height)
                    assert proof.value == states[height].get(state_key(TOKEN, balance))
                    assert (proof.value is None) == (account == b"\x77" * 20)
                    assert verify(header.state_root, proof.key, proof.value, proof.proof)
            # Revert three blocks, re-apply them: the same chain.
            chain.revert_to(TOP - 3)
            assert chain.head() == replay_head(replay, TOP - 3)
            assert tree_state(store) == states[TOP - 3]
            for height in range(TOP - 2, TOP + 1):
                chain.apply(build_block(TOKEN, SEED, height), mode="sequential")
            assert chain.head() == replay_head(replay, TOP)
            # Prune to the last four blocks.
            report = chain.prune(keep_blocks=4)
            assert report.complete and report.horizon == TOP - 4 and report.keys > 0
            with pytest.raises(PrunedHeightError):
                chain.at(TOP - 5)
            for height in range(TOP - 4, TOP + 1):
                assert dict(chain.at(height).scan(b"")) == states[height]
            assert chain.tree.check(TOP) == len(states[TOP])
        finally:
            chain.close()


def replay_head(replay: Replay, height: int) -> tuple[int, bytes, bytes]:
    header = replay.chain.header(height)
    assert header is not None
    return (height, header.hash, header.state_root)


# -- random blocks, reverts and prunes on every back end --------------------------------

move = st.one_of(
    st.tuples(st.just("transfer"), st.integers(0, 7), st.integers(0, 7), st.integers(1, 40)),
    st.tuples(st.just("register"), st.integers(0, 7), st.sampled_from([b"al", b"alb", b"b"])),
    st.tuples(st.just("list"), st.integers(0, 7), st.sampled_from([b"", b"a", b"al"])),
)
step = st.one_of(
    st.tuples(st.just("block"), st.lists(move, min_size=1, max_size=6)),
    st.tuples(st.just("revert"), st.integers(1, 3)),
    st.tuples(st.just("prune"), st.integers(1, 4)),
)  # fmt: skip


REGISTRY = contract_address((CONTRACTS / "registry.wasm").read_bytes())


def moves_block(height: int, moves: list[tuple[object, ...]]) -> Block:
    """Transfers (the whole of a small balance deletes its key), names registered in the
    registry, and listings of its names (prefix scans)."""
    txs = []
    for kind, sender, arg, *rest in moves:
        assert isinstance(sender, int)
        who = ACCOUNTS[sender]
        if kind == "transfer":
            assert isinstance(arg, int)
            amount = rest[0]
            assert isinstance(amount, int)
            txs.append(Transaction(TOKEN, "transfer", ACCOUNTS[arg] + u64(amount), sender=who))
        elif kind == "register":
            assert isinstance(arg, bytes)
            data = bytes([len(arg)]) + arg + who[:3]
            txs.append(Transaction(REGISTRY, "register", data, sender=who))
        else:
            assert isinstance(arg, bytes)
            txs.append(Transaction(REGISTRY, "list", arg, sender=who))
    return Block(height, 1_700_000_000 + height, tuple(txs))


def mint_block(height: int) -> Block:
    txs = tuple(
        Transaction(TOKEN, "mint", account + u64(20 + i), sender=OWNER)
        for i, account in enumerate(ACCOUNTS[:8])
    )
    return Block(height, 1_700_000_000 + height, txs)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_random_steps_keep_the_root_equal_to_a_rebuild(backend: str, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    @settings(
        max_examples=6 if backend in ("postgresql", "mariadb") else 12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(steps=st.lists(step, min_size=3, max_size=10))
    def run(steps: list[tuple[object, ...]]) -> None:
        with fresh_store(backend, tmp_path / f"case{next(counter)}") as store:
            chain = Chain(store, threads=1)
            try:
                chain.executor.min_parallel_gas = 0
                chain.apply(build_block(TOKEN, SEED, 1), mode="sequential")
                chain.apply(mint_block(2), mode="sequential")
                assert chain.deploy((CONTRACTS / "registry.wasm").read_bytes()) == REGISTRY
                roots = {h: chain.header(h).state_root for h in (1, 2, 3)}  # type: ignore[union-attr]
                for kind, arg in steps:
                    head = chain.head().height
                    if kind == "block":
                        assert isinstance(arg, list)
                        block = moves_block(head + 1, arg)
                        result = chain.execute(block, mode="parallel")
                        sequential = chain.execute(block, mode="sequential")
                        assert result.encode() == sequential.encode()
                        chain.commit(result)
                        roots[head + 1] = result.state_root
                    elif kind == "revert":
                        assert isinstance(arg, int)
                        target = max(head - arg, max(chain.horizon(), 3))
                        chain.revert_to(target)
                        roots = {h: r for h, r in roots.items() if h <= target}
                    else:
                        assert isinstance(arg, int)
                        chain.prune(keep_blocks=arg)
                    state = tree_state(store)
                    head = chain.head()
                    assert head.state_root == root_of(state) == roots[head.height]
                    assert chain.tree.check(head.height) == len(state)
                for height in range(max(chain.horizon(), 1), chain.head().height + 1):
                    header = chain.header(height)
                    assert header is not None and header.state_root == roots[height]
                    assert root_of(dict(chain.at(height).scan(b""))) == roots[height]
            finally:
                chain.close()

    run()
