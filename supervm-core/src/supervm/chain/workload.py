"""The token-transfer workload: the demo's accounts, mint block and transfer blocks.

``supervm demo`` runs it and the benchmarks measure it, from this one place.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from supervm.chain.block import Block, Transaction
from supervm.chain.chain import Chain
from supervm.errors import SuperVMError

__all__ = [
    "DEMO_MINT",
    "DEMO_SALT",
    "MINTER",
    "SetupResult",
    "accounts",
    "mint_block",
    "setup",
    "token_code",
    "transfers",
]

#: Salt the demo deploys the token with (its own address, apart from other deploys).
DEMO_SALT = b"supervm/demo"
#: Tokens minted to each account that runs low.
DEMO_MINT = 10**9
#: Accounts whose balance fell under this are topped up before a transfer block.
LOW_BALANCE = 10**6
#: Share of transfers asking for more than any balance (they revert).
OVERSIZED = 0.01
#: Gas limit of each transfer.
TRANSFER_GAS = 100_000
#: The account that mints.
MINTER = hashlib.sha256(b"supervm/demo/minter").digest()[:20]


def accounts(count: int) -> list[bytes]:
    """``count`` 20-byte accounts, the same on every run."""
    return [hashlib.sha256(b"supervm/demo/account/%d" % i).digest()[:20] for i in range(count)]


def token_code() -> bytes:
    """The token contract shipped with the package (``examples/contracts/token.wasm``)."""
    return (resources.files("supervm") / "contracts" / "token.wasm").read_bytes()


def transfers(
    token: bytes,
    senders: Sequence[bytes],
    count: int,
    seed: int,
    *,
    oversized: float = OVERSIZED,
    recipients: Sequence[bytes] | None = None,
) -> list[Transaction]:
    """``count`` transfers between random accounts; a share ``oversized`` ask too much.

    ``recipients`` defaults to ``senders``.
    """
    rng = random.Random(seed)
    targets = senders if recipients is None else recipients
    txs = []
    for _ in range(count):
        sender = rng.choice(senders)
        recipient = rng.choice(targets)
        amount = 2**63 if rng.random() < oversized else rng.randint(1, 100)
        data = recipient + struct.pack("<Q", amount)
        txs.append(Transaction(token, "transfer", data, sender=sender, gas_limit=TRANSFER_GAS))
    return txs


def mint_block(height: int, token: bytes, to: Sequence[bytes], amount: int = DEMO_MINT) -> Block:
    """A block minting ``amount`` to each of ``to``."""
    mints = tuple(
        Transaction(token, "mint", account + struct.pack("<Q", amount), sender=MINTER)
        for account in to
    )
    return Block(height, int(time.time()), mints)


@dataclass(frozen=True)
class SetupResult:
    """The block that topped up low balances."""

    height: int
    minted: int


def setup(chain: Chain, token: bytes, holders: Sequence[bytes]) -> SetupResult | None:
    """Mint to the holders whose balance is low, in a block of its own; None when none are."""
    needy = []
    for account in holders:
        receipt = chain.runtime.run(token, "balance", account, sender=MINTER, view=chain.storage)
        if not receipt.ok:
            raise SuperVMError(f"token balance failed: {receipt.error or receipt.status.value}")
        if struct.unpack("<Q", receipt.return_data)[0] < LOW_BALANCE:
            needy.append(account)
    if not needy:
        return None
    height = chain.head().height
    # Every mint updates the total supply: the block is one chain of conflicts, so it
    # runs sequentially.
    result = chain.apply(mint_block(height + 1, token, needy), mode="sequential")
    for receipt in result.receipts:
        if not receipt.ok:
            raise SuperVMError(
                f"setup block {result.height}: mint failed ({receipt.error or receipt.status})"
            )
    return SetupResult(result.height, len(needy))
