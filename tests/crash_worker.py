"""Commit deterministic token blocks to a store until told to stop or killed.

Usage: ``python crash_worker.py URL START_HEIGHT COUNT SEED``

Opens the store at ``URL``. ``START_HEIGHT`` is the height the caller expects
the next block to have (the chain's head + 1); a mismatch exits with status 3.
The worker then commits blocks ``head + 1``, ``head + 2``, ... built by
:func:`build_block` from ``(SEED, height)`` alone, ``COUNT`` of them, or
forever when ``COUNT`` is 0. Block 1 deploys the token contract and block 2
mints balances to every account.

Protocol on stdout, one flushed line per event:

- ``READY <head>``: the store is open.
- ``EXECUTED <height>``: the block has been executed; its commit comes next.
- ``ACK <height> <block hash hex>``: :meth:`Chain.apply` returned, the block
  is committed.

The test imports :func:`build_block`, :data:`TOKEN` and :data:`ACCOUNTS` to
replay the same chain independently.
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
from pathlib import Path

import supervm
from supervm.chain import Block, Chain, Transaction
from supervm.chain.chain import DEPLOYER
from supervm.vm.runtime import DEPLOY_ADDRESS, DEPLOY_METHOD, contract_address, deploy_input

ROOT = Path(__file__).resolve().parent.parent
TOKEN_WASM = ROOT / "examples" / "contracts" / "token.wasm"

#: The account that mints at genesis and so owns the token.
OWNER = b"\xee" * 20
ACCOUNT_COUNT = 48
ACCOUNTS = tuple(
    hashlib.sha256(b"crash-worker/account" + struct.pack(">I", i)).digest()[:20]
    for i in range(ACCOUNT_COUNT)
)
GENESIS_TIMESTAMP = 1_700_000_000


def token_code() -> bytes:
    return TOKEN_WASM.read_bytes()


#: The token's address (the contract block 1 deploys).
TOKEN = contract_address(token_code())


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def build_block(token: bytes, seed: int, height: int) -> Block:
    """Block ``height`` of the chain for ``seed``: a function of ``(seed, height)`` only.

    Height 1 deploys the token; height 2 mints large balances to even accounts
    and tiny ones to odd accounts. Later blocks hold 50-200 calls: mostly transfers, whose small
    amounts often drain a tiny balance (a deleted key) and whose huge amounts
    revert, plus owner mints, mints by others (revert) and malformed input
    (revert).
    """
    rng = random.Random(f"crash-worker/{seed}/{height}")
    timestamp = GENESIS_TIMESTAMP + height
    txs: list[Transaction] = []
    if height == 1:
        deploy = deploy_input(token_code())
        txs.append(Transaction(DEPLOY_ADDRESS, DEPLOY_METHOD, deploy, sender=DEPLOYER))
        return Block(height, timestamp, tuple(txs))
    if height == 2:
        for i, account in enumerate(ACCOUNTS):
            amount = 1_000_000 if i % 2 == 0 else rng.randint(1, 30)
            txs.append(Transaction(token, "mint", account + u64(amount), sender=OWNER))
        return Block(height, timestamp, tuple(txs))
    for _ in range(rng.randint(50, 200)):
        sender = rng.choice(ACCOUNTS)
        recipient = rng.choice(ACCOUNTS)
        kind = rng.random()
        if kind < 0.03:
            txs.append(Transaction(token, "transfer", recipient[:7], sender=sender))
        elif kind < 0.06:
            txs.append(Transaction(token, "mint", recipient + u64(5), sender=sender))
        elif kind < 0.09:
            amount = rng.randint(1, 1000)
            txs.append(Transaction(token, "mint", recipient + u64(amount), sender=OWNER))
        else:
            size = rng.random()
            if size < 0.6:
                amount = rng.randint(1, 30)
            elif size < 0.9:
                amount = rng.randint(1, 50_000)
            else:
                amount = 10**15
            txs.append(Transaction(token, "transfer", recipient + u64(amount), sender=sender))
    return Block(height, timestamp, tuple(txs))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: crash_worker.py URL START_HEIGHT COUNT SEED\n")
        return 2
    url, start, count, seed = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    storage = supervm.open_storage(url)
    chain = Chain(storage, threads=1)
    token = TOKEN
    head = chain.head().height
    if head + 1 != start:
        sys.stderr.write(f"expected to start at height {start}, but the head is {head}\n")
        return 3
    say(f"READY {head}")
    committed = 0
    while count == 0 or committed < count:
        height = head + 1

        def executed(done: int, total: int, height: int = height) -> None:
            if done == total:
                say(f"EXECUTED {height}")

        result = chain.apply(build_block(token, seed, height), mode="sequential", progress=executed)
        say(f"ACK {height} {result.block_hash.hex()}")
        head = height
        committed += 1
    chain.close()
    storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
