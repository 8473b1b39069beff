"""Reads at any kept height, proofs, revert and pruning, against a replay of the blocks."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervm.chain import Block, Chain, PrunedHeightError, StateProof, Transaction
from supervm.layout import CHANGE_PREFIX, HISTORY_PREFIX, in_state_tree, state_key
from supervm.storage import Storage
from supervm.tree import ProofError, verify
from supervm.tree.rebuild import root_of

from .conftest import (
    ADDRESSES,
    Contracts,
    account,
    deploy_all,
    mint,
    new_chain,
    obj,
    object_key,
    open_store,
    transfer,
)

ACCOUNTS = [account(i) for i in range(6)]

# One operation of a block: poke an object (a set), mint, or transfer (the whole
# balance moved deletes the sender's balance key).
operation = st.one_of(
    st.tuples(st.just("poke"), st.integers(0, 5), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("mint"), st.integers(0, 5), st.integers(1, 50)),
    st.tuples(st.just("transfer"), st.integers(0, 5), st.integers(0, 5), st.integers(1, 60)),
)
blocks = st.lists(st.lists(operation, min_size=1, max_size=8), min_size=2, max_size=7)


def transaction(c: Contracts, op: tuple[object, ...]) -> Transaction:
    kind = op[0]
    if kind == "poke":
        _, who, data = op
        assert isinstance(who, int) and isinstance(data, bytes)
        return obj(c, "poke", ACCOUNTS[0], ACCOUNTS[who] + data)
    if kind == "mint":
        _, who, amount = op
        assert isinstance(who, int) and isinstance(amount, int)
        return mint(c, ACCOUNTS[0], ACCOUNTS[who], amount)
    _, sender, to, amount = op
    assert isinstance(sender, int) and isinstance(to, int) and isinstance(amount, int)
    return transfer(c, ACCOUNTS[sender], ACCOUNTS[to], amount)


def tree_state(store: Storage) -> dict[bytes, bytes]:
    return {k: v for k, v in store.scan(b"") if in_state_tree(k)}


@dataclass
class Run:
    """A chain and what its state was after every block."""

    chain: Chain
    states: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    blocks: dict[int, Block] = field(default_factory=dict)
    hashes: dict[int, bytes] = field(default_factory=dict)

    def apply(self, block: Block, mode: str = "sequential") -> None:
        result = self.chain.apply(block, mode=mode)
        self.blocks[block.height] = block
        self.hashes[block.height] = result.block_hash
        self.states[block.height] = tree_state(self.chain.storage)


def build(storage: Storage, scenario: list[list[tuple[object, ...]]]) -> Run:
    chain = new_chain(storage, threads=2)
    run = Run(chain)
    run.states[0] = {}
    c = deploy_all(chain)
    for height in range(1, chain.head().height + 1):
        run.states[height] = {}  # filled below: the deploy blocks' states
    # The deploy blocks' states: replay them from the block bodies.
    replay = new_chain(open_store("memory", Path(".")), threads=1)
    for height in range(1, chain.head().height + 1):
        block = chain.block(height)
        assert block is not None
        replay.apply(block, mode="sequential")
        run.states[height] = tree_state(replay.storage)
        run.blocks[height] = block
        header = chain.header(height)
        assert header is not None
        run.hashes[height] = header.hash
    replay.close()
    for ops in scenario:
        height = chain.head().height + 1
        run.apply(Block(height, 1_700_000_000 + height, tuple(transaction(c, op) for op in ops)))
    return run


def all_keys(run: Run) -> set[bytes]:
    return {key for state in run.states.values() for key in state} | {b"c" + b"\1" * 20 + b"x"}


def check_every_height(run: Run, low: int = 0) -> None:
    chain = run.chain
    head = chain.head().height
    keys = sorted(all_keys(run))
    for height in range(low, head + 1):
        expected = run.states[height]
        view = chain.at(height)
        assert dict(view.scan(b"")) == expected, f"scan at {height}"
        namespace = b"c" + ADDRESSES.objects
        assert list(view.scan(namespace)) == sorted(
            (k, v) for k, v in expected.items() if k.startswith(namespace)
        )
        for key in keys:
            assert view.get(key) == expected.get(key), (height, key)
        root = root_of(expected)
        if height:
            header = chain.header(height)
            assert header is not None and header.state_root == root
            assert chain.tree.check(height) == len(expected)
        for key in keys[:: max(1, len(keys) // 6)]:
            proof = chain.prove(key, height)
            assert proof.value == expected.get(key)
            assert proof.state_root == root and proof.verify(root)
            assert StateProof.decode(proof.encode()) == proof
            assert not verify(root, key, b"forged", proof.proof)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=blocks)
def test_every_height_reads_as_the_replay_and_proves(
    scenario: list[list[tuple[object, ...]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_store("memory", Path(tmp))
        run = build(storage, scenario)
        try:
            check_every_height(run)
        finally:
            run.chain.close()


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(scenario=blocks, back=st.integers(1, 4))
def test_revert_restores_the_recorded_state_and_reapplying_gives_the_same_chain(
    backend: str, tmp_path: Path, scenario: list[list[tuple[object, ...]]], back: int
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        storage = open_store(backend, Path(tmp))
        run = build(storage, scenario)
        chain = run.chain
        try:
            head = chain.head().height
            target = max(0, head - back)
            report = chain.revert_to(target)
            assert report.from_height == head and report.to_height == target
            assert chain.head().height == target
            assert tree_state(storage) == run.states[target]
            if target:
                assert chain.head().block_hash == run.hashes[target]
                assert chain.tree.check(target) == len(run.states[target])
            for height in range(target + 1, head + 1):
                assert chain.header(height) is None and chain.block(height) is None
                assert storage.get(CHANGE_PREFIX + height.to_bytes(8, "big")) is None
            check_every_height(run if target == head else _trimmed(run, target))
            # Re-applying the same blocks gives the same chain, byte for byte.
            for height in range(target + 1, head + 1):
                result = chain.apply(run.blocks[height], mode="parallel")
                assert result.block_hash == run.hashes[height], height
                assert tree_state(storage) == run.states[height]
            check_every_height(run)
        finally:
            chain.close()
            storage.close()


def _trimmed(run: Run, top: int) -> Run:
    return Run(
        run.chain,
        {h: s for h, s in run.states.items() if h <= top},
        {h: b for h, b in run.blocks.items() if h <= top},
        {h: x for h, x in run.hashes.items() if h <= top},
    )


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_pruning_keeps_the_last_blocks_and_refuses_below(backend: str, tmp_path: Path) -> None:
    storage = open_store(backend, tmp_path)
    scenario = [[("poke", i % 6, b"v%d" % i), ("mint", i % 5, 3), ("transfer", 1, 2, 100)]
                for i in range(12)]  # fmt: skip
    run = build(storage, scenario)
    chain = run.chain
    try:
        head = chain.head().height
        before = sum(1 for _ in storage.scan(b""))
        report = chain.prune(keep_blocks=5)
        horizon = head - 5
        assert report.horizon == horizon == chain.horizon()
        assert report.complete and report.keys > 0 and report.bytes > 0
        assert report.change_sets > 0 and report.tree_nodes > 0
        # What it deleted is gone; it added the horizon record.
        assert sum(1 for _ in storage.scan(b"")) == before - report.keys + 1
        for height in range(0, horizon):
            with pytest.raises(PrunedHeightError, match=f"height {height} is pruned"):
                chain.at(height)
            with pytest.raises(PrunedHeightError):
                chain.prove(object_key(ACCOUNTS[0]), height)
            with pytest.raises(PrunedHeightError):
                chain.revert_to(height)
        check_every_height(run, low=horizon)
        assert chain.tree.check(head) == len(run.states[head])
        # No change record of a block at or below the horizon is left, nor its history.
        for key, _ in storage.scan(CHANGE_PREFIX):
            assert int.from_bytes(key[len(CHANGE_PREFIX) : len(CHANGE_PREFIX) + 8], "big") > horizon
        for key, _ in storage.scan(HISTORY_PREFIX):
            assert int.from_bytes(key[-8:], "big") > horizon
        # Pruning again finds nothing more; the chain goes on and can be reverted above it.
        assert chain.prune(keep_blocks=5).keys == 0
        chain.revert_to(horizon)
        assert tree_state(storage) == run.states[horizon]
    finally:
        chain.close()
        storage.close()


def test_keep_blocks_is_recorded_in_the_store_and_pruning_is_resumable(tmp_path: Path) -> None:
    storage = open_store("rocksdb", tmp_path)
    scenario = [[("poke", i % 6, b"x" * (i + 1)), ("mint", 0, 1)] for i in range(10)]
    run = build(storage, scenario)
    run.chain.close()
    chain = Chain(storage, threads=1, keep_blocks=3)
    try:
        assert Chain(storage, threads=1).keep_blocks == 3
        head = chain.head().height
        first = chain.prune(max_keys=5)
        assert not first.complete and first.horizon == head - 3
        # Reads below the horizon fail at once, before the pruning has finished.
        with pytest.raises(PrunedHeightError):
            chain.at(head - 4)
        rest = chain.prune()
        assert rest.complete
        assert chain.prune().keys == 0
        run.chain = chain
        check_every_height(run, low=head - 3)
    finally:
        chain.close()
        storage.close()


def test_background_pruning_follows_new_blocks(tmp_path: Path) -> None:
    storage = open_store("memory", tmp_path)
    run = build(storage, [[("mint", 0, 1)] for _ in range(3)])
    chain = run.chain
    c = ADDRESSES
    try:
        chain.history.set_keep_blocks(2)
        chain.start_pruning(interval=0.01)
        for _ in range(6):
            height = chain.head().height + 1
            run.apply(Block(height, height, (mint(c, ACCOUNTS[0], ACCOUNTS[1], 1),)))
        head = chain.head().height
        for _ in range(500):
            if chain.horizon() == head - 2:
                break
            import time

            time.sleep(0.01)
        chain.stop_pruning()
        assert chain.horizon() == head - 2
        check_every_height(run, low=head - 2)
    finally:
        chain.close()


def test_bad_heights_and_keys_are_refused(tmp_path: Path) -> None:
    storage = open_store("memory", tmp_path)
    run = build(storage, [[("mint", 0, 1)]])
    chain = run.chain
    try:
        head = chain.head().height
        with pytest.raises(ValueError, match="above the head"):
            chain.at(head + 1)
        with pytest.raises(ValueError, match="above the head"):
            chain.revert_to(head + 1)
        with pytest.raises(ValueError, match="int >= 0"):
            chain.at(-1)
        with pytest.raises(ValueError, match="metadata"):
            chain.prove(b"meta/height")
        with pytest.raises(ValueError, match="metadata"):
            chain.at(head).get(b"meta/height")
        with pytest.raises(TypeError):
            chain.prove("text")  # type: ignore[arg-type]
        absent = chain.prove_state(ADDRESSES.objects, b"nothing here")
        assert absent.value is None and absent.verify()
        assert absent.key == state_key(ADDRESSES.objects, b"nothing here")
        with pytest.raises(ProofError):
            StateProof.decode(absent.encode()[:-1] + b"")  # truncated
        assert chain.revert_to(head).operations == 0  # nothing above the head
    finally:
        chain.close()


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_reader_at_a_height_sees_that_height_while_blocks_commit(
    backend: str, tmp_path: Path
) -> None:
    import threading

    storage = open_store(backend, tmp_path)
    run = build(storage, [[("poke", i % 6, b"a%d" % i), ("mint", i % 6, 2)] for i in range(4)])
    chain = run.chain
    c = ADDRESSES
    pinned = chain.head().height
    expected = run.states[pinned]
    view = chain.at(pinned)
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def read() -> None:
        while not stop.is_set():
            got = dict(view.scan(b""))
            if got != expected:
                failures.append(f"scan differs after {len(seen)} reads")
                return
            for key, value in expected.items():
                if view.get(key) != value:
                    failures.append(f"{key.hex()} differs")
                    return
            seen.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            height = chain.head().height + 1
            ops = (obj(c, "poke", ACCOUNTS[0], ACCOUNTS[i % 6] + b"new%d" % i),
                   transfer(c, ACCOUNTS[i % 6], ACCOUNTS[(i + 1) % 6], 1))  # fmt: skip
            chain.apply(Block(height, height, ops))
    finally:
        stop.set()
        reader.join()
        chain.close()
        storage.close()
    assert not failures, failures
    assert seen, "the reader never finished a read"
