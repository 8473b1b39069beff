"""The mempool: per-sender nonce order, no gaps, refusals, limits, commits and returns.

Its ``chain_nonce`` is a real chain's (a token deployed on a memory store): committing
means applying the taken transactions as a block, so the nonces the mempool falls back
on are the ones the executor wrote.
"""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervm.chain import Block, Chain, Transaction
from supervm.chain.accounts import read_nonce
from supervm.chain.workload import token_code
from supervm.memory import MemoryStorage
from supervm.vm import Status
from supervm_node.errors import Refusal, TransactionRefused
from supervm_node.keys import KeyPair
from supervm_node.mempool import Mempool, MempoolLimits
from supervm_node.signing import sign_transaction

CHAIN = 7
TO = b"\x42" * 20


@dataclass
class Setup:
    chain: Chain
    token: bytes

    def nonce(self, address: bytes) -> int:
        return read_nonce(self.chain.latest(), address)

    def mempool(self, **limits: int) -> Mempool:
        return Mempool(self.nonce, MempoolLimits(**limits) if limits else None)

    def tx(self, k: KeyPair, nonce: int, amount: int = 1) -> Transaction:
        return sign_transaction(
            k, chain_id=CHAIN, nonce=nonce, contract=self.token, method="transfer",
            input=TO + struct.pack("<Q", amount),
        )  # fmt: skip

    def commit(self, txs: list[Transaction]) -> None:
        """Apply ``txs`` as the next block (transfers of nothing minted: they revert, but
        their nonces advance)."""
        result = self.chain.apply(Block(self.chain.head().height + 1, 0, tuple(txs)))
        assert all(r.status in (Status.OK, Status.REVERTED) for r in result.receipts), [
            r.error for r in result.receipts
        ]


@pytest.fixture
def setup() -> Iterator[Setup]:
    chain = Chain(MemoryStorage(), threads=1)
    token = chain.deploy(token_code())
    yield Setup(chain, token)
    chain.close()


def key(i: int) -> KeyPair:
    return KeyPair.from_seed(i.to_bytes(4, "big") * 8)


def size(tx: Transaction) -> int:
    return len(tx.encode())


def refused(reason: Refusal, pool: Mempool, tx: Transaction) -> TransactionRefused:
    count, pending, used = pool.count, pool.pending, pool.bytes
    with pytest.raises(TransactionRefused) as info:
        pool.add(tx)
    assert info.value.reason is reason, info.value
    assert (pool.count, pool.pending, pool.bytes) == (count, pending, used)
    return info.value


def test_each_senders_transactions_come_out_in_nonce_order(setup: Setup) -> None:
    pool = setup.mempool()
    keys = [key(i) for i in range(4)]
    txs = [setup.tx(k, n) for k in keys for n in range(8)]
    random.Random(1).shuffle(txs)
    for tx in txs:
        pool.add(tx)
    assert pool.count == pool.pending == 32
    assert pool.bytes == sum(map(size, txs))
    taken = pool.take(1000)
    assert sorted(taken, key=lambda t: t.hash) == sorted(txs, key=lambda t: t.hash)
    for k in keys:
        assert [t.nonce for t in taken if t.sender == k.address] == list(range(8))
    # Taken but not committed: still held (and counted), no longer pending.
    assert pool.count == 32 and pool.pending == 0 and pool.take(1000) == []
    assert all(pool.get(t.hash) == t for t in txs)


def test_take_returns_contiguous_runs_and_never_a_gap(setup: Setup) -> None:
    pool = setup.mempool()
    a, b = key(1), key(2)
    for n in (0, 1, 2, 4, 5):
        pool.add(setup.tx(a, n))
    for n in (1, 2):  # b's nonce 0 is missing
        pool.add(setup.tx(b, n))
    assert pool.ready() == 1
    taken = pool.take(100)
    assert [(t.sender, t.nonce) for t in taken] == [(a.address, 0), (a.address, 1), (a.address, 2)]
    assert pool.pending == 4 and pool.ready() == 0 and pool.take(100) == []
    pool.add(setup.tx(a, 3))
    pool.add(setup.tx(b, 0))
    taken = pool.take(100)
    by_sender: dict[bytes, list[int]] = {}
    for t in taken:
        assert t.nonce is not None
        by_sender.setdefault(t.sender, []).append(t.nonce)
    assert by_sender == {a.address: [3, 4, 5], b.address: [0, 1, 2]}
    assert pool.pending == 0


def test_take_honours_its_limit_and_takes_turns(setup: Setup) -> None:
    pool = setup.mempool()
    a, b = key(1), key(2)
    for n in range(5):
        pool.add(setup.tx(a, n))
        pool.add(setup.tx(b, n))
    first = pool.take(3)
    assert [(t.sender, t.nonce) for t in first] == [(a.address, n) for n in range(3)]
    # a's rest goes to the back: b's turn.
    second = pool.take(4)
    assert [(t.sender, t.nonce) for t in second] == [(b.address, n) for n in range(4)]
    rest = pool.take(100)
    assert [(t.sender, t.nonce) for t in rest] == [(a.address, 3), (a.address, 4), (b.address, 4)]
    assert pool.take(0) == [] and pool.pending == 0


def test_a_future_nonce_within_the_window_waits_for_the_gap(setup: Setup) -> None:
    pool = setup.mempool(nonce_window=10)
    a = key(1)
    pool.add(setup.tx(a, 2))
    pool.add(setup.tx(a, 9))  # the last one the window holds
    assert pool.pending == 2 and pool.ready() == 0 and pool.take(10) == []
    assert pool.next_nonce(a.address) == 0
    pool.add(setup.tx(a, 0))
    assert pool.ready() == 1
    assert [t.nonce for t in pool.take(10)] == [0]
    assert pool.next_nonce(a.address) == 1
    pool.add(setup.tx(a, 1))
    assert [t.nonce for t in pool.take(10)] == [1, 2]
    assert pool.next_nonce(a.address) == 3 and pool.pending == 1


def test_nonces_beyond_the_window_are_too_high(setup: Setup) -> None:
    pool = setup.mempool(nonce_window=10)
    a = key(1)
    error = refused(Refusal.NONCE_TOO_HIGH, pool, setup.tx(a, 10))
    assert error.details == {"expected": 0} and error.code == -32004
    refused(Refusal.NONCE_TOO_HIGH, pool, setup.tx(a, 2**63))
    # The window moves with what is taken.
    for n in range(5):
        pool.add(setup.tx(a, n))
    pool.take(100)
    pool.add(setup.tx(a, 14))
    refused(Refusal.NONCE_TOO_HIGH, pool, setup.tx(a, 15))


def test_nonces_below_the_next_are_too_low(setup: Setup) -> None:
    pool = setup.mempool()
    a = key(1)
    txs = [setup.tx(a, n) for n in range(3)]
    setup.commit(txs)  # the chain's nonce of a is now 3
    assert setup.nonce(a.address) == 3 and pool.next_nonce(a.address) == 3
    for n in range(3):
        error = refused(Refusal.NONCE_TOO_LOW, pool, setup.tx(a, n, amount=99))
        assert error.details == {"expected": 3}
    pool.add(setup.tx(a, 3))
    # A taken (not yet committed) nonce is used too, by another transaction or the same.
    taken = pool.take(10)
    assert [t.nonce for t in taken] == [3]
    refused(Refusal.NONCE_TOO_LOW, pool, setup.tx(a, 3, amount=99))


def test_duplicates_are_refused(setup: Setup) -> None:
    pool = setup.mempool()
    a = key(1)
    tx = setup.tx(a, 0)
    pool.add(tx)
    refused(Refusal.DUPLICATE, pool, tx)
    refused(Refusal.DUPLICATE, pool, Transaction.decode(tx.encode()))
    # The same nonce in another transaction, while the first is pending.
    other = setup.tx(a, 0, amount=2)
    assert other.hash != tx.hash
    refused(Refusal.DUPLICATE, pool, other)
    later = setup.tx(a, 5)
    pool.add(later)
    refused(Refusal.DUPLICATE, pool, setup.tx(a, 5, amount=7))
    # Taken into a block not committed yet: still a duplicate by hash.
    pool.take(10)
    refused(Refusal.DUPLICATE, pool, tx)


def test_the_count_limit_fills_the_mempool_and_changes_nothing(setup: Setup) -> None:
    pool = setup.mempool(max_count=3)
    a, b = key(1), key(2)
    for n in range(3):
        pool.add(setup.tx(a, n))
    before = (pool.count, pool.pending, pool.bytes, pool.ready(), pool.next_nonce(b.address))
    refused(Refusal.MEMPOOL_FULL, pool, setup.tx(a, 3))
    refused(Refusal.MEMPOOL_FULL, pool, setup.tx(b, 0))
    assert (pool.count, pool.pending, pool.bytes, pool.ready(), pool.next_nonce(b.address)) == (
        before
    )
    # Nothing of the refused sender was kept.
    assert b.address not in pool._queues and b.address not in pool._next
    # Taken is still held: the limit counts it until the block commits.
    taken = pool.take(10)
    refused(Refusal.MEMPOOL_FULL, pool, setup.tx(b, 0))
    setup.commit(taken)
    pool.committed(taken)
    assert pool.count == 0 and pool.bytes == 0
    pool.add(setup.tx(b, 0))


def test_the_bytes_limit_fills_the_mempool_and_changes_nothing(setup: Setup) -> None:
    a = key(1)
    one = size(setup.tx(a, 0))
    pool = setup.mempool(max_bytes=2 * one + one // 2)
    pool.add(setup.tx(a, 0))
    pool.add(setup.tx(a, 1))
    assert pool.bytes == 2 * one
    error = refused(Refusal.MEMPOOL_FULL, pool, setup.tx(a, 2))
    assert "bytes" in str(error) and error.code == -32001
    refused(Refusal.MEMPOOL_FULL, pool, setup.tx(key(2), 0))
    assert pool.count == 2 and pool.next_nonce(a.address) == 2
    assert [t.nonce for t in pool.take(10)] == [0, 1]


def test_committed_frees_the_bytes_and_the_chains_nonce_rules_again(setup: Setup) -> None:
    pool = setup.mempool()
    a, b = key(1), key(2)
    for n in range(4):
        pool.add(setup.tx(a, n))
    pool.add(setup.tx(b, 0))
    taken = pool.take(3)  # a: 0, 1, 2
    assert [t.nonce for t in taken] == [0, 1, 2]
    setup.commit(taken)
    pool.committed(taken)
    # a still has 3 pending: the mempool's own count rules.
    assert pool.count == 2 and pool.bytes == size(setup.tx(a, 3)) + size(setup.tx(b, 0))
    assert all(pool.get(t.hash) is None for t in taken)
    assert pool.next_nonce(a.address) == 4
    rest = pool.take(10)
    assert sorted((t.sender, t.nonce) for t in rest) == sorted([(a.address, 3), (b.address, 0)])
    setup.commit(rest)
    pool.committed(rest)
    assert pool.count == pool.pending == pool.bytes == 0
    # Nothing held: the chain's nonce (what the executor wrote) is the truth.
    assert pool.next_nonce(a.address) == setup.nonce(a.address) == 4
    assert pool.next_nonce(b.address) == setup.nonce(b.address) == 1
    refused(Refusal.NONCE_TOO_LOW, pool, setup.tx(a, 3, amount=5))
    pool.add(setup.tx(a, 4))
    # Committing what is not held (or twice) changes nothing.
    pool.committed(rest)
    assert pool.count == 1


def test_returned_drops_the_senders_run(setup: Setup) -> None:
    pool = setup.mempool()
    a, b = key(1), key(2)
    a_txs = [setup.tx(a, n) for n in range(5)]
    for tx in a_txs:
        pool.add(tx)
    pool.add(setup.tx(b, 0))
    pool.add(setup.tx(b, 1))
    taken = pool.take(3)
    assert taken == a_txs[:3]
    b_bytes = size(setup.tx(b, 0)) + size(setup.tx(b, 1))
    dropped = pool.returned([taken[1]])
    # a from nonce 1 on is gone, taken and pending; nonce 0 (an earlier block) stays; b too.
    assert sorted(t.nonce for t in dropped) == [1, 2, 3, 4]
    assert pool.count == 3 and pool.pending == 2 and pool.bytes == b_bytes + size(a_txs[0])
    assert pool.get(a_txs[0].hash) is not None
    assert all(pool.get(tx.hash) is None for tx in a_txs[1:])
    assert pool.next_nonce(a.address) == 1
    # a's nonces from 1 are free again.
    pool.add(a_txs[1])
    assert [t.nonce for t in pool.take(10) if t.sender == a.address] == [1]
    assert pool.next_nonce(b.address) == 2


def test_next_nonce_follows_the_chain_and_the_mempool(setup: Setup) -> None:
    pool = setup.mempool()
    a = key(1)
    assert pool.next_nonce(a.address) == 0
    pool.add(setup.tx(a, 0))
    pool.add(setup.tx(a, 1))
    pool.add(setup.tx(a, 3))  # a gap at 2
    assert pool.next_nonce(a.address) == 2
    pool.add(setup.tx(a, 2))
    assert pool.next_nonce(a.address) == 4
    taken = pool.take(10)
    assert pool.next_nonce(a.address) == 4
    setup.commit(taken)
    pool.committed(taken)
    assert pool.next_nonce(a.address) == setup.nonce(a.address) == 4


def test_adding_from_many_threads_keeps_each_senders_order(setup: Setup) -> None:
    pool = setup.mempool()
    senders, per_sender = 8, 60
    keys = [key(100 + i) for i in range(senders)]
    batches = []
    for i, k in enumerate(keys):
        txs = [setup.tx(k, n) for n in range(per_sender)]
        random.Random(i).shuffle(txs)  # out of order, within the window
        batches.append(txs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(senders)

    def add(txs: list[Transaction]) -> None:
        try:
            barrier.wait()
            for tx in txs:
                pool.add(tx)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(txs,)) for txs in batches]
    for t in threads:
        t.start()
    # Meanwhile, take blocks as they become ready.
    taken: list[Transaction] = []
    while any(t.is_alive() for t in threads):
        taken += pool.take(37)
    for t in threads:
        t.join()
    taken += pool.take(10_000)
    assert errors == []
    assert len(taken) == senders * per_sender and pool.pending == 0
    assert pool.count == senders * per_sender
    for k in keys:
        assert [t.nonce for t in taken if t.sender == k.address] == list(range(per_sender))


# -- a model ------------------------------------------------------------------------------

_KEYS = [key(200 + i) for i in range(3)]
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 9), st.integers(1, 2)),
        st.tuples(st.just("take"), st.integers(0, 5)),
        st.tuples(st.just("commit"), st.integers(0, 3)),
        st.tuples(st.just("return"), st.integers(0, 3)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_random_sequences_match_a_model(ops: list[tuple[Any, ...]]) -> None:
    """Adds, takes, commits and returns against a model of what the mempool promises:
    no replays, no gaps, each sender's nonces in order, exact counts and bytes."""
    chain = Chain(MemoryStorage(), threads=1)
    try:
        token = chain.deploy(token_code())
        setup = Setup(chain, token)
        pool = setup.mempool(max_count=12, nonce_window=6)
        pending: dict[bytes, dict[int, Transaction]] = {k.address: {} for k in _KEYS}
        blocks: list[list[Transaction]] = []  # taken, in order, not committed
        next_take = {k.address: 0 for k in _KEYS}

        def held() -> list[Transaction]:
            return [t for q in pending.values() for t in q.values()] + [
                t for b in blocks for t in b
            ]

        for op in ops:
            if op[0] == "add":
                _, who, ahead, amount = op
                k = _KEYS[who]
                base = next_take[k.address]
                nonce = max(0, base + ahead - 2)  # sometimes below the next, or too far
                tx = setup.tx(k, nonce, amount)
                if tx.hash in {t.hash for t in held()}:
                    expect: Refusal | None = Refusal.DUPLICATE
                elif nonce < base:
                    expect = Refusal.NONCE_TOO_LOW
                elif nonce >= base + 6:
                    expect = Refusal.NONCE_TOO_HIGH
                elif nonce in pending[k.address]:
                    expect = Refusal.DUPLICATE
                elif len(held()) >= 12:
                    expect = Refusal.MEMPOOL_FULL
                else:
                    expect = None
                if expect is None:
                    pool.add(tx)
                    pending[k.address][nonce] = tx
                else:
                    refused(expect, pool, tx)
            elif op[0] == "take":
                limit = op[1]
                got = pool.take(limit)
                assert len(got) <= limit
                for t in got:
                    assert t.nonce == next_take[t.sender], "a gap or a replay"
                    assert pending[t.sender].pop(t.nonce) == t
                    next_take[t.sender] += 1
                if len(got) < limit:  # nothing ready is left behind
                    assert all(next_take[a] not in pending[a] for a in pending)
                if got:
                    blocks.append(got)
            elif op[0] == "commit" and blocks:
                # The oldest block commits (blocks commit in order).
                block = blocks.pop(0)
                setup.commit(block)
                pool.committed(block)
                for a in pending:
                    if not any(t.sender == a for t in held()):
                        next_take[a] = setup.nonce(a)
            elif op[0] == "return" and len(blocks) == 1:
                # The one block in flight was not made: its senders lose everything held.
                block = blocks.pop()
                pool.returned(block)
                for a in {t.sender for t in block}:
                    pending[a].clear()
                    next_take[a] = setup.nonce(a)
            everything = held()
            assert pool.count == len(everything)
            assert pool.pending == sum(len(q) for q in pending.values())
            assert pool.bytes == sum(map(size, everything))
            for k in _KEYS:
                expected = next_take[k.address]
                while expected in pending[k.address]:
                    expected += 1
                assert pool.next_nonce(k.address) == expected
    finally:
        chain.close()
