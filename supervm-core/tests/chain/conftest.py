"""Helpers for chain tests: the example contracts, accounts, transactions and stores."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import supervm
from supervm.chain import Block, BlockResult, Chain, Transaction
from supervm.memory import MemoryStorage
from supervm.registry import available_backends
from supervm.storage import Storage
from supervm.vm.runtime import contract_address

CONTRACTS = Path(__file__).resolve().parents[3] / "examples" / "contracts"
STORES = ["memory", "rocksdb"]


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def account(i: int) -> bytes:
    """A 20-byte address, distinct for each ``i`` in 0..254."""
    return bytes([i + 1]) * 20


ALICE, BOB, CAROL = (account(i) for i in range(3))


class Contracts(NamedTuple):
    token: bytes
    counter: bytes
    registry: bytes
    objects: bytes


def wasm(name: str) -> bytes:
    return (CONTRACTS / name).read_bytes()


FILES = ("token.wasm", "counter.wasm", "registry.wasm", "wat/objects.wasm")
#: Where the contracts are deployed (the address depends only on the code).
ADDRESSES = Contracts(*(contract_address(wasm(name)) for name in FILES))


def deploy_all(chain: Chain) -> Contracts:
    deployed = Contracts(*(chain.deploy(wasm(name)) for name in FILES))
    assert deployed == ADDRESSES
    return deployed


def new_chain(storage: Storage, *, threads: int = 2, max_reexecution_factor: int = 3) -> Chain:
    """A chain whose parallel mode runs Block-STM however short the transactions are."""
    chain = Chain(storage, threads=threads, max_reexecution_factor=max_reexecution_factor)
    chain.executor.min_parallel_gas = 0
    return chain


def open_store(backend: str, directory: Path) -> Storage:
    """A fresh (or reopened) store; skips when the back end is not installed."""
    if backend == "memory":
        return MemoryStorage()
    if backend not in available_backends():
        pytest.skip(f"the {backend} back end is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    return supervm.open_storage(f"{backend}://{directory / backend}")


def contents(storage: Storage) -> dict[bytes, bytes]:
    """Every key and value in the store."""
    return dict(storage.scan(b""))


def both_modes(chain: Chain, block: Block) -> tuple[BlockResult, BlockResult]:
    """The block executed sequentially and in parallel on the chain's head."""
    return chain.execute(block, mode="sequential"), chain.execute(block, mode="parallel")


def next_block(chain: Chain, transactions: list[Transaction]) -> Block:
    height = chain.head()[0] + 1
    return Block(height, 1_700_000_000 + height, tuple(transactions))


# -- transactions --------------------------------------------------------------------------

GAS = 10_000_000


def mint(c: Contracts, owner: bytes, to: bytes, amount: int) -> Transaction:
    return Transaction(c.token, "mint", to + u64(amount), sender=owner)


def transfer(
    c: Contracts, sender: bytes, to: bytes, amount: int, *, gas_limit: int = GAS
) -> Transaction:
    return Transaction(c.token, "transfer", to + u64(amount), sender=sender, gas_limit=gas_limit)


def increment(c: Contracts, sender: bytes, *, gas_limit: int = GAS) -> Transaction:
    return Transaction(c.counter, "increment", b"", sender=sender, gas_limit=gas_limit)


def register(
    c: Contracts, sender: bytes, name: bytes, value: bytes, *, owned: bool = False
) -> Transaction:
    data = bytes([len(name)]) + name + value
    return Transaction(c.registry, "register", data, sender=sender, owned=owned)


def list_names(c: Contracts, sender: bytes, prefix: bytes, *, owned: bool = False) -> Transaction:
    return Transaction(c.registry, "list", prefix, sender=sender, owned=owned)


def obj(
    c: Contracts,
    method: str,
    sender: bytes,
    data: bytes = b"",
    *,
    owned: bool = False,
    gas_limit: int = GAS,
) -> Transaction:
    """A call of the objects contract."""
    return Transaction(c.objects, method, data, sender=sender, gas_limit=gas_limit, owned=owned)


def object_key(address: bytes) -> bytes:
    """The key of ``address``'s object in the objects contract."""
    return b"obj/" + address


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def chains() -> Iterator[Callable[..., Chain]]:
    """``chains(storage, **kw)``: chains that are closed after the test."""
    made: list[Chain] = []

    def make(storage: Storage, **kw: int) -> Chain:
        chain = new_chain(storage, **kw)
        made.append(chain)
        return chain

    yield make
    for chain in made:
        chain.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh store of each kind: memory and RocksDB."""
    storage = open_store(request.param, tmp_path)
    yield storage
    storage.close()
