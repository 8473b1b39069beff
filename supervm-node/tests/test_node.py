"""The node in process: signed deploys, mints and transfers from many threads into
blocks on a memory store and on RocksDB; refusals; the block pipeline; restarts; metrics.

Everything is real: PyNaCl keys, the token contract, the chain on real stores. A replay of
the node's committed blocks on a fresh chain must give the same headers.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervm import open_storage
from supervm.chain import Block, Chain, Transaction
from supervm.chain.workload import token_code
from supervm.memory import MemoryStorage
from supervm.storage import Storage
from supervm.vm import Status
from supervm.vm.runtime import DEPLOY_ADDRESS, contract_address, deploy_input
from supervm_node.errors import Refusal, TransactionRefused
from supervm_node.keys import KeyPair
from supervm_node.mempool import MempoolLimits
from supervm_node.node import MAX_TRANSACTION_SIZE, Node, NodeConfigError
from supervm_node.pipeline import BlockPipeline, Committed
from supervm_node.signing import sign_transaction

CHAIN = 7
MINTED = 1_000_000
TIMEOUT = 20.0


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"."))


OWNER = key("owner")


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def deploy_tx(k: KeyPair, nonce: int, salt: bytes = b"") -> tuple[Transaction, bytes]:
    code = token_code()
    tx = sign_transaction(
        k, chain_id=CHAIN, nonce=nonce, contract=DEPLOY_ADDRESS, method="deploy",
        input=deploy_input(code, salt),
    )  # fmt: skip
    return tx, contract_address(code, salt)


def call(k: KeyPair, nonce: int, token: bytes, method: str, data: bytes, **kw: Any) -> Transaction:
    return sign_transaction(
        k, chain_id=CHAIN, nonce=nonce, contract=token, method=method, input=data, **kw
    )


def wait_included(node: Node, hashes: list[bytes], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    left = list(hashes)
    while left:
        info = node.lookup(left[-1])
        if info is not None and info.status == "included":
            left.pop()
            continue
        assert time.monotonic() < deadline, f"{len(left)} transactions not included in time"
        node.wait_for_block(node.chain.head().height, 0.05)


def balance(node: Node, token: bytes, account: bytes) -> int:
    receipt = node.chain.runtime.run(
        token, "balance", account, sender=account, view=node.chain.latest()
    )
    assert receipt.status is Status.OK, receipt.error
    return int(struct.unpack("<Q", receipt.return_data)[0])


def open_store(kind: str, path: Path) -> Storage:
    if kind == "memory":
        return open_storage("memory://")
    return open_storage(f"rocksdb://{path.resolve()}")


@pytest.fixture(params=["memory", "rocksdb"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    store = open_store(request.param, tmp_path / "db")
    n = Node(store, chain_id=CHAIN, block_time_ms=20, backend=request.param)
    n.start()
    yield n
    n.stop()
    store.close()


def setup_token(node: Node, holders: list[KeyPair]) -> bytes:
    """Deploy the token by a signed transaction and mint ``MINTED`` to each holder."""
    tx, token = deploy_tx(OWNER, 0)
    node.submit(tx)
    mints = [
        call(OWNER, 1 + i, token, "mint", k.address + u64(MINTED)) for i, k in enumerate(holders)
    ]
    # The deploy is pending: calls to its address are let in already.
    hashes = [node.submit(m) for m in mints]
    wait_included(node, [tx.hash, *hashes])
    info = node.lookup(tx.hash)
    assert info is not None and info.receipt is not None and info.receipt.status is Status.OK
    assert info.receipt.return_data == token
    return token


def replay(node: Node) -> None:
    """Every committed block, applied on a fresh chain, gives the same header."""
    fresh = Chain(MemoryStorage())
    try:
        height = node.chain.head().height
        assert height > 0
        for h in range(1, height + 1):
            block = node.chain.block(h)
            assert block is not None
            fresh.apply(block)
            assert fresh.header(h) == node.chain.header(h), h
        assert fresh.head() == node.chain.head()
    finally:
        fresh.close()


def test_signed_transfers_from_many_threads(node: Node) -> None:
    senders = [key(f"sender {i}") for i in range(6)]
    others = [key(f"other {i}").address for i in range(4)]
    token = setup_token(node, senders)
    per_sender = 50
    rng = random.Random(5)
    expected = {k.address: MINTED for k in senders} | dict.fromkeys(others, 0)
    plans: list[list[Transaction]] = []
    for k in senders:
        txs = []
        for n in range(per_sender):
            to = rng.choice([*others, *(s.address for s in senders)])
            amount = rng.randint(1, 1000)
            expected[k.address] -= amount
            expected[to] += amount
            txs.append(call(k, n, token, "transfer", to + u64(amount)))
        plans.append(txs)
    errors: list[BaseException] = []
    hashes: list[bytes] = []
    lock = threading.Lock()

    def submit(txs: list[Transaction]) -> None:
        try:
            for tx in txs:
                h = node.submit(tx)
                with lock:
                    hashes.append(h)
        except BaseException as exc:
            errors.append(exc)

    start_height = node.chain.head().height
    threads = [threading.Thread(target=submit, args=(txs,)) for txs in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(hashes) == len(senders) * per_sender
    wait_included(node, hashes)
    head = node.chain.head()
    assert head.height > start_height
    # Every receipt of every block is ok, and every transaction is in exactly one block.
    seen: dict[bytes, int] = {}
    for h in range(1, head.height + 1):
        block, receipts = node.chain.block(h), node.chain.receipts(h)
        assert block is not None and receipts is not None
        assert len(receipts) == len(block.transactions)
        assert all(r.status is Status.OK for r in receipts), [r.error for r in receipts]
        for i, tx in enumerate(block.transactions):
            assert tx.hash not in seen
            seen[tx.hash] = h
            assert node.chain.find_transaction(tx.hash) == (h, i)
    assert set(hashes) <= set(seen)
    for tx_hash in hashes:
        info = node.lookup(tx_hash)
        assert info is not None and info.status == "included" and info.height == seen[tx_hash]
        header = node.chain.header(seen[tx_hash])
        assert header is not None and info.block_hash == header.hash
    # Each sender's nonces were used in order, across blocks.
    for k in senders:
        order = [
            tx.nonce
            for h in range(1, head.height + 1)
            for tx in node.chain.block(h).transactions  # type: ignore[union-attr]
            if tx.sender == k.address
        ]
        assert order == list(range(per_sender))
        assert node.chain_nonce(k.address) == per_sender
    assert node.chain_nonce(OWNER.address) == 1 + len(senders)
    for account, amount in expected.items():
        assert balance(node, token, account) == amount
    assert node.mempool.count == 0 and node.mempool.bytes == 0
    replay(node)


def refuse(node: Node, reason: Refusal, tx: Transaction) -> TransactionRefused:
    count, head = node.mempool.count, node.chain.head()
    with pytest.raises(TransactionRefused) as info:
        node.submit(tx)
    assert info.value.reason is reason, info.value
    assert info.value.code == reason.code
    assert node.mempool.count == count and node.chain.head() == head
    return info.value


def test_refusals(node: Node) -> None:
    alice = key("alice")
    token = setup_token(node, [alice])
    first = call(alice, 0, token, "transfer", b"\1" * 20 + u64(5))
    wait_included(node, [node.submit(first)])
    assert node.chain_nonce(alice.address) == 1
    # Nothing pending now: no block is made while refusals are checked.
    assert node.mempool.count == 0
    nxt = call(alice, 1, token, "transfer", b"\1" * 20 + u64(5))

    wrong_chain = sign_transaction(
        alice, chain_id=CHAIN + 1, nonce=1, contract=token, method="transfer",
        input=b"\1" * 20 + u64(5),
    )  # fmt: skip
    assert refuse(node, Refusal.WRONG_CHAIN, wrong_chain).details == {"expected": CHAIN}
    # Forged: another transaction's signature; a flipped bit; another key's signature.
    refuse(node, Refusal.BAD_SIGNATURE, nxt.with_signature(first.signature))
    flipped = bytearray(nxt.signature)
    flipped[17] ^= 0x10
    refuse(node, Refusal.BAD_SIGNATURE, nxt.with_signature(bytes(flipped)))
    refuse(node, Refusal.BAD_SIGNATURE, nxt.with_signature(key("eve").sign(nxt.signing_payload())))
    refuse(node, Refusal.BAD_SIGNATURE, nxt.with_signature(b""))
    # A tampered amount under the original signature.
    tampered = Transaction(
        token, "transfer", b"\1" * 20 + u64(5000), gas_limit=nxt.gas_limit, nonce=1,
        chain_id=CHAIN, public_key=alice.public_key, signature=nxt.signature,
    )  # fmt: skip
    refuse(node, Refusal.BAD_SIGNATURE, tampered)
    # Replays: the included transaction itself, and its nonce in another transaction.
    refuse(node, Refusal.DUPLICATE, first)
    refuse(node, Refusal.DUPLICATE, Transaction.decode(first.encode()))
    low = refuse(
        node, Refusal.NONCE_TOO_LOW, call(alice, 0, token, "transfer", b"\2" * 20 + u64(1))
    )
    assert low.details == {"expected": 1}
    # Too big.
    huge = call(alice, 1, token, "transfer", b"\0" * (MAX_TRANSACTION_SIZE + 1))
    assert refuse(node, Refusal.OVERSIZED, huge).details == {"limit": MAX_TRANSACTION_SIZE}
    # No contract there (and no deploy of one pending).
    refuse(node, Refusal.NO_CONTRACT, call(alice, 1, b"\x77" * 20, "transfer", b""))
    # Unsigned.
    unsigned = Transaction(token, "transfer", b"\1" * 20 + u64(5), sender=alice.address)
    refuse(node, Refusal.BAD_SIGNATURE, unsigned)
    with pytest.raises(TypeError):
        node.submit(first.encode())  # type: ignore[arg-type]
    # After all that, the right transaction goes in and is included.
    assert node.mempool.next_nonce(alice.address) == 1
    wait_included(node, [node.submit(nxt)])
    info = node.lookup(nxt.hash)
    assert info is not None and info.receipt is not None and info.receipt.status is Status.OK
    assert node.lookup(b"\0" * 32) is None

    # The refusals were counted, by reason.
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(node.registry).decode())
    }
    refused = {
        s.labels["reason"]: s.value
        for s in families["supervm_transactions_refused"].samples
        if s.name == "supervm_transactions_refused_total"
    }
    assert refused == {
        "wrong_chain": 1.0, "bad_signature": 6.0, "duplicate": 2.0, "nonce_too_low": 1.0,
        "oversized": 1.0, "no_contract": 1.0,
    }  # fmt: skip


def test_a_pending_deploy_lets_calls_to_its_address_in(tmp_path: Path) -> None:
    store = open_storage("memory://")
    node = Node(store, chain_id=CHAIN, block_time_ms=20)
    try:
        deployer, minter = key("deployer"), key("minter")
        deploy, token = deploy_tx(deployer, 0, salt=b"pending")
        refuse(node, Refusal.NO_CONTRACT, call(minter, 0, token, "mint", minter.address + u64(9)))
        node.submit(deploy)  # not producing: it stays pending
        mint = call(minter, 0, token, "mint", minter.address + u64(9))
        node.submit(mint)
        info = node.lookup(mint.hash)
        assert info is not None and info.status == "pending" and node.mempool.count == 2
        assert node.chain.head().height == 0
        node.start()
        wait_included(node, [deploy.hash, mint.hash])
        for tx in (deploy, mint):
            got = node.lookup(tx.hash)
            assert got is not None and got.receipt is not None
            assert got.receipt.status is Status.OK, got.receipt.error
        assert balance(node, token, minter.address) == 9
        # Deployed and committed: calls are let in from the store now.
        again = call(minter, 1, token, "mint", minter.address + u64(1))
        wait_included(node, [node.submit(again)])
        assert balance(node, token, minter.address) == 10
        replay(node)
    finally:
        node.stop()
        store.close()


# -- the pipeline ---------------------------------------------------------------------------


def _pipeline_lists(token: bytes) -> tuple[list[list[Transaction]], set[bytes]]:
    """Blocks' worth of transactions: mints, then transfers on what earlier blocks left,
    with bad signatures here and there (and one list of nothing but)."""
    rng = random.Random(11)
    holders = [key(f"holder {i}") for i in range(5)]
    owner = key("pipeline owner")
    lists = [
        [call(owner, i, token, "mint", k.address + u64(10_000)) for i, k in enumerate(holders)]
    ]
    nonces = dict.fromkeys((k.address for k in holders), 0)
    bad: set[bytes] = set()
    for block in range(8):
        txs = []
        for _ in range(40):
            k = rng.choice(holders)
            to = rng.choice(holders).address
            tx = call(k, nonces[k.address], token, "transfer", to + u64(rng.randint(1, 50)))
            if rng.random() < 0.15:
                # A forgery claiming the same nonce (it must not use it up).
                forged = Transaction(
                    token, "transfer", to + u64(9999), gas_limit=tx.gas_limit, nonce=tx.nonce,
                    chain_id=CHAIN, public_key=k.public_key, signature=tx.signature,
                )  # fmt: skip
                txs.append(forged)
                bad.add(forged.hash)
            txs.append(tx)
            nonces[k.address] += 1
        lists.append(txs)
        if block == 3:
            eve = key("eve")
            lists.append(
                [call(eve, 0, token, "mint", eve.address + u64(1)).with_signature(bytes(64))]
            )
            bad.add(lists[-1][0].hash)
    return lists, bad


def _run_pipeline(
    threads: int, *, always_parallel: bool = False
) -> tuple[Chain, list[Committed], list[Transaction]]:
    chain = Chain(MemoryStorage(), threads=threads)
    if always_parallel:
        # Cheap transfers run sequentially by the executor's own judgement; here every
        # block goes through Block-STM, on the uncommitted parent's state.
        chain.executor.min_parallel_gas = 0
    token = chain.deploy(token_code(), timestamp=1)
    lists, _bad = _pipeline_lists(token)
    committed: list[Committed] = []
    refused: list[Transaction] = []
    pipeline = BlockPipeline(
        chain, threads=threads, on_commit=committed.append, on_refused=refused.extend,
        timestamp=lambda: 1000,
    )  # fmt: skip
    for txs in lists:
        pipeline.submit(txs)
    pipeline.submit([])  # nothing: no block
    assert pipeline.drain(timeout=TIMEOUT)
    assert pipeline.in_flight() == 0 and pipeline.error is None
    pipeline.close()
    assert pipeline.stats.blocks == len(committed) == len(lists) - 1
    assert pipeline.stats.refused == len(refused)
    assert pipeline.stats.transactions == sum(len(c.result.transactions) for c in committed)
    assert all(set(c.seconds) == {"signatures", "execute", "commit"} for c in committed)
    return chain, committed, refused


def test_the_pipeline_gives_the_same_blocks_on_one_and_two_threads() -> None:
    runs = {
        "1 thread": _run_pipeline(1),
        "2 threads": _run_pipeline(2),
        "2 threads, Block-STM": _run_pipeline(2, always_parallel=True),
    }
    modes = [c.result.stats.mode for c in runs["2 threads, Block-STM"][1]]
    assert "parallel" in modes, [
        c.result.stats.fallback_reason for c in runs["2 threads, Block-STM"][1]
    ]
    # The reference: the same blocks, filtered by hand, applied one by one.
    reference = Chain(MemoryStorage(), threads=1)
    token = reference.deploy(token_code(), timestamp=1)
    lists, bad = _pipeline_lists(token)
    for txs in lists:
        good = tuple(tx for tx in txs if tx.hash not in bad)
        if good:
            reference.apply(Block(reference.head().height + 1, 1000, good), mode="sequential")
    height = reference.head().height
    assert height == 1 + len(lists) - 1  # the deploy, and every list but the forged one
    for threads, (chain, committed, refused) in runs.items():
        assert {tx.hash for tx in refused} == bad, threads
        assert [c.result.height for c in committed] == list(range(2, height + 1))
        assert chain.head() == reference.head(), threads
        for h in range(1, height + 1):
            assert chain.header(h) == reference.header(h), (threads, h)
            block = chain.block(h)
            assert block is not None and not {tx.hash for tx in block.transactions} & bad
            receipts = chain.receipts(h)
            assert receipts is not None
            assert all(r.status is Status.OK for r in receipts), (h, [r.error for r in receipts])
        chain.close()
    reference.close()


def test_the_pipeline_refuses_bad_threads_and_closes_cleanly() -> None:
    chain = Chain(MemoryStorage())
    try:
        for threads in (0, -2, 1.5, "2"):
            with pytest.raises(ValueError, match="threads"):
                BlockPipeline(chain, threads=threads)  # type: ignore[arg-type]
        pipeline = BlockPipeline(chain, threads=2)
        assert pipeline.drain(timeout=1.0)  # nothing submitted
        pipeline.close()
        assert chain.head().height == 0
    finally:
        chain.close()


# -- restarts and metrics ------------------------------------------------------------------------


def test_a_node_restarts_on_its_rocksdb_store(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    alice = key("alice")
    store = open_store("rocksdb", path)
    node = Node(store, chain_id=CHAIN, block_time_ms=20, backend="rocksdb")
    node.start()
    try:
        token = setup_token(node, [alice])
        sent = [call(alice, n, token, "transfer", b"\3" * 20 + u64(10)) for n in range(5)]
        for tx in sent:
            node.submit(tx)
        wait_included(node, [tx.hash for tx in sent])
        head = node.chain.head()
    finally:
        node.stop()
        store.close()

    store = open_store("rocksdb", path)
    node = Node(store, chain_id=CHAIN, block_time_ms=20, backend="rocksdb")
    try:
        assert node.chain.head() == head
        assert node.chain_nonce(alice.address) == 5 and node.mempool.next_nonce(alice.address) == 5
        for tx in sent:
            info = node.lookup(tx.hash)
            assert info is not None and info.status == "included" and info.transaction == tx
        refuse(node, Refusal.DUPLICATE, sent[-1])
        refuse(node, Refusal.NONCE_TOO_LOW, call(alice, 4, token, "transfer", b"\4" * 20 + u64(1)))
        node.start()
        more = call(alice, 5, token, "transfer", b"\3" * 20 + u64(10))
        wait_included(node, [node.submit(more)])
        assert node.chain.head().height > head.height
        assert balance(node, token, alice.address) == MINTED - 60
        replay(node)
        head = node.chain.head()
    finally:
        node.stop()
        store.close()

    store = open_store("rocksdb", path)
    try:
        with pytest.raises(NodeConfigError, match="chain 7"):
            Node(store, chain_id=8)
        # The store is untouched: the right chain id still opens it.
        again = Node(store, chain_id=CHAIN)
        assert again.chain.head() == head
        again.chain.close()
    finally:
        store.close()


def _samples(node: Node) -> list[tuple[str, dict[str, str], float]]:
    text = generate_latest(node.registry).decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_the_metrics_after_blocks(node: Node) -> None:
    alice = key("alice")
    token = setup_token(node, [alice])
    txs = [call(alice, n, token, "transfer", b"\5" * 20 + u64(1)) for n in range(20)]
    for tx in txs:
        node.submit(tx)
    wait_included(node, [tx.hash for tx in txs])
    refuse(node, Refusal.NO_CONTRACT, call(alice, 20, b"\x66" * 20, "x", b""))
    refuse(node, Refusal.DUPLICATE, txs[0])
    head = node.chain.head().height
    samples = _samples(node)

    def value(name: str, **labels: str) -> float:
        found = [
            v
            for n, ls, v in samples
            if n == name and all(ls.get(k) == w for k, w in labels.items())
        ]
        assert found, (name, labels)
        return sum(found)

    assert value("supervm_blocks_total") == head
    assert value("supervm_head_height") == head
    # The deploy, one mint, 20 transfers.
    assert value("supervm_transactions_total") == 22
    assert value("supervm_transactions_admitted_total") == 22
    for stage in ("signatures", "execute", "commit"):
        assert value("supervm_pipeline_stage_seconds_count", stage=stage) == head
        assert value("supervm_pipeline_stage_seconds_sum", stage=stage) >= 0
    assert value("supervm_block_transactions_sum") == 22
    assert value("supervm_mempool_transactions") == 0
    assert value("supervm_mempool_bytes") == 0
    assert value("supervm_gas_used_total") > 0
    backend = node.storage.backend  # type: ignore[attr-defined]
    assert backend in ("memory", "rocksdb")
    assert value("supervm_storage_operations_total", backend=backend, operation="get") > 0
    assert (
        value("supervm_storage_operations_total", backend=backend, operation="write_batch") >= head
    )
    assert value("supervm_storage_written_bytes_total", backend=backend) > 0
    assert value("supervm_transactions_refused_total", reason="no_contract") == 1
    assert value("supervm_transactions_refused_total", reason="duplicate") == 1
    assert not [n for n, ls, _ in samples if ls.get("backend") not in (None, backend)]


def test_a_full_mempool_refuses_and_a_node_stops_and_starts_again() -> None:
    store = open_storage("memory://")
    node = Node(
        store, chain_id=CHAIN, block_time_ms=20, threads=1, mempool=MempoolLimits(max_count=3)
    )
    try:
        deploy, token = deploy_tx(OWNER, 0)
        first = [
            node.submit(deploy),
            node.submit(call(OWNER, 1, token, "mint", OWNER.address + u64(100))),
            node.submit(call(OWNER, 2, token, "transfer", b"\1" * 20 + u64(1))),
        ]
        refuse(node, Refusal.MEMPOOL_FULL, call(OWNER, 3, token, "transfer", b"\1" * 20 + u64(1)))
        refuse(node, Refusal.MEMPOOL_FULL, call(key("bob"), 0, token, "mint", b"\1" * 20 + u64(1)))
        assert node.mempool.next_nonce(OWNER.address) == 3
        for _ in range(2):  # start, stop, and start again: the same node goes on
            node.start()
            assert node.producing and node.health()["ok"] is True
            wait_included(node, first)  # the full mempool empties into blocks
            tx = call(OWNER, node.mempool.next_nonce(OWNER.address), token, "transfer",
                      b"\2" * 20 + u64(1))  # fmt: skip
            wait_included(node, [node.submit(tx)])
            node.stop()
            assert not node.producing
        assert node.chain_nonce(OWNER.address) == 5
        assert balance(node, token, OWNER.address) == 97
        replay(node)
    finally:
        node.stop()
        store.close()
