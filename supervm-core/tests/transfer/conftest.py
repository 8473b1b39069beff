"""Chains to move between stores: token blocks, and bulk blocks of many keys."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import supervm
from supervm.chain import Block, BlockResult, Chain, Transaction
from supervm.chain.block import receipts_root, transactions_root
from supervm.chain.header import BlockHeader
from supervm.chain.workload import MINTER, accounts, token_code, transfers
from supervm.layout import in_state_tree
from supervm.registry import available_backends
from supervm.storage import Storage
from supervm.vm.runtime import contract_address

TOKEN = contract_address(token_code())
ACCOUNTS = accounts(40)


def extend(chain: Chain, blocks: int, seed: int = 1) -> None:
    """Extend a token chain by ``blocks`` transfer blocks (deploying and minting first)."""
    if chain.head().height == 0:
        chain.deploy(token_code(), timestamp=1)
        mints = tuple(
            Transaction(TOKEN, "mint", a + struct.pack("<Q", 10**9), sender=MINTER)
            for a in ACCOUNTS
        )
        chain.apply(Block(2, 2, mints), mode="sequential")
    for _ in range(blocks):
        height = chain.head().height + 1
        txs = transfers(TOKEN, ACCOUNTS, 30, seed * 1000 + height, oversized=0.1)
        chain.apply(Block(height, height, tuple(txs)), mode="sequential")


def bulk_block(
    chain: Chain, pairs: Sequence[tuple[bytes, bytes | None]], timestamp: int = 0
) -> BlockResult:
    """Commit a block with no transactions that writes ``pairs`` (imported, not executed)."""
    head = chain.head()
    write_set = tuple(sorted(pairs))
    tree = chain.tree.update(
        head.height + 1, write_set, base_version=head.height or None, checked=True
    )
    header = BlockHeader(
        head.height + 1, head.block_hash, timestamp, transactions_root(()), tree.root_hash,
        receipts_root(()),
    )  # fmt: skip
    return chain.import_block(header, (), write_set)


def state_of(storage: Storage) -> dict[bytes, bytes]:
    """The state pairs of a store (no chain records)."""
    return {k: v for k, v in storage.scan(b"") if in_state_tree(k)}


class Builder:
    """Makes chains on fresh stores and extends them deterministically."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.opened: list[tuple[Chain, Storage]] = []
        self._count = 0

    def store(self, backend: str = "memory") -> Storage:
        self._count += 1
        if backend == "memory":
            return supervm.open_storage("memory://")
        if backend not in available_backends():
            pytest.skip(f"the {backend} back end is not installed")
        return supervm.open_storage(f"{backend}://{self.tmp}/{backend}-{self._count}")

    def chain(self, storage: Storage | None = None) -> Chain:
        storage = self.store() if storage is None else storage
        chain = Chain(storage, threads=1)
        self.opened.append((chain, storage))
        return chain

    def token_chain(self, blocks: int, seed: int = 1, storage: Storage | None = None) -> Chain:
        """A chain: the token deployed, a mint block, then ``blocks`` transfer blocks."""
        chain = self.chain(storage)
        extend(chain, blocks, seed)
        return chain

    def close(self) -> None:
        for chain, storage in reversed(self.opened):
            chain.close()
            if not storage.closed:
                storage.close()

    token = TOKEN
    accounts = ACCOUNTS
    extend = staticmethod(extend)
    bulk_block = staticmethod(bulk_block)
    state_of = staticmethod(state_of)


@pytest.fixture
def builder(tmp_path: Path) -> Iterator[Builder]:
    made = Builder(tmp_path)
    yield made
    made.close()
