"""Concurrent direct calls on one runtime lose no update."""

from __future__ import annotations

import random
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import supervm
from supervm.layout import STATE_PREFIX
from supervm.storage import Storage
from supervm.vm import Receipt, Runtime

from .conftest import wat_contract

TOKEN = (Path(__file__).resolve().parents[3] / "examples" / "contracts" / "token.wasm").read_bytes()
MINTER = b"\x01" * 20
ACCOUNTS = [bytes([i + 2]) * 20 for i in range(6)]
THREADS = 4
TRANSFERS = 300
MINTED = 10**6

# increment(): count += 1 under key "count" (read, then write back).
COUNTER = wat_contract(
    """
  (func (export "increment")
    (i64.store (i32.const 16) (i64.const 0))
    (if (i32.eq (call $get (i32.const 0) (i32.const 5)) (i32.const 8))
      (then (call $read_register (i32.const 16))))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (call $set (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8)))
""",
    data='(data (i32.const 0) "count")',
)


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = "memory://" if request.param == "memory" else "rocksdb://" + str(tmp_path / "db")
    with supervm.open_storage(url) as storage:
        yield storage


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Switch threads as often as CPython allows, so any race window gets hit."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def run_threads(work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def balance(runtime: Runtime, token: bytes, account: bytes) -> int:
    raw = runtime.storage.get(STATE_PREFIX + token + b"bal/" + account)
    return 0 if raw is None else int(struct.unpack("<Q", raw)[0])


@pytest.mark.parametrize("release_gil", [False, True])
@pytest.mark.usefixtures("switch_often")
def test_concurrent_transfers_conserve_every_balance(store: Storage, release_gil: bool) -> None:
    runtime = Runtime(store, release_gil=release_gil)
    token = runtime.deploy(TOKEN)
    for account in ACCOUNTS:
        minted = runtime.call(token, "mint", account + struct.pack("<Q", MINTED), sender=MINTER)
        assert minted.ok, minted
    done: list[list[tuple[bytes, bytes, int, Receipt]]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        rng = random.Random(index)
        for _ in range(TRANSFERS):
            sender, to = rng.sample(ACCOUNTS, 2)
            amount = rng.randrange(1, 1000)
            receipt = runtime.call(token, "transfer", to + struct.pack("<Q", amount), sender=sender)
            done[index].append((sender, to, amount, receipt))

    run_threads(work)
    expected = dict.fromkeys(ACCOUNTS, MINTED)
    ok = 0
    for sender, to, amount, receipt in (item for items in done for item in items):
        assert receipt.ok, receipt  # every balance stays far above what is sent
        ok += 1
        expected[sender] -= amount
        expected[to] += amount
    assert ok == THREADS * TRANSFERS
    final = {account: balance(runtime, token, account) for account in ACCOUNTS}
    assert sum(final.values()) == MINTED * len(ACCOUNTS)
    assert final == expected


@pytest.mark.usefixtures("switch_often")
def test_concurrent_execute_counts_every_increment(store: Storage) -> None:
    runtime = Runtime(store)

    def work(index: int) -> None:
        for _ in range(TRANSFERS):
            assert runtime.execute(COUNTER, "increment").ok

    run_threads(work)
    raw = runtime.storage.get(STATE_PREFIX + supervm.vm.contract_address(COUNTER) + b"count")
    assert raw is not None
    assert struct.unpack("<Q", raw) == (THREADS * TRANSFERS,)
