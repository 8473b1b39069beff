"""The signed token-transfer workload: keys, a signed deployment and mints, and
transfers between the keys with the balances they imply.

The node's tests and its benchmark send it, from this one place.
"""

from __future__ import annotations

import struct

from supervm.chain import Transaction
from supervm.chain.workload import token_code
from supervm.vm.runtime import DEPLOY_ADDRESS, contract_address, deploy_input
from supervm_node.keys import KeyPair
from supervm_node.signing import sign_transaction

__all__ = ["TOKEN", "TRANSFER_GAS", "Workload", "u64"]

#: Where the workload's token lives (its address depends only on its code).
TOKEN = contract_address(token_code())
#: Gas limit of each mint and transfer.
TRANSFER_GAS = 200_000


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


class Workload:
    """Keys (from ``seed``: the same on every run), their next nonces, and the balances
    the transactions signed so far imply once all are included."""

    def __init__(self, senders: int, *, chain_id: int, seed: int = 1, mint: int = 10**9) -> None:
        if not 1 <= senders <= 255:
            raise ValueError(f"senders must be 1 to 255, not {senders!r}")
        self.chain_id = chain_id
        self.keys = [KeyPair.from_seed(bytes([seed, i]) * 16) for i in range(senders + 1)]
        self.owner = self.keys[0]
        self.senders = self.keys[1:]
        self.nonces = {key.address: 0 for key in self.keys}
        self.balances = {key.address: 0 for key in self.keys}
        self.mint = mint

    def sign(self, key: KeyPair, contract: bytes, method: str, data: bytes) -> Transaction:
        nonce = self.nonces[key.address]
        self.nonces[key.address] = nonce + 1
        return sign_transaction(
            key, chain_id=self.chain_id, nonce=nonce, contract=contract, method=method,
            input=data, gas_limit=TRANSFER_GAS if method != "deploy" else 10_000_000,
        )  # fmt: skip

    def setup(self) -> list[Transaction]:
        """The deployment and a mint to every sender (all from the owner, in nonce order)."""
        txs = [self.sign(self.owner, DEPLOY_ADDRESS, "deploy", deploy_input(token_code()))]
        for key in self.senders:
            txs.append(self.sign(self.owner, TOKEN, "mint", key.address + u64(self.mint)))
            self.balances[key.address] += self.mint
        return txs

    def transfers(self, key: KeyPair, count: int, seed: int) -> list[Transaction]:
        """``count`` transfers from ``key`` to the other senders."""
        txs = []
        for i in range(count):
            to = self.senders[(seed + i * 7) % len(self.senders)]
            amount = 1 + (seed + i) % 50
            txs.append(self.sign(key, TOKEN, "transfer", to.address + u64(amount)))
            self.balances[key.address] -= amount
            self.balances[to.address] += amount
        return txs
