"""Chains to move between back ends, and the checks that a copy is the same chain.

Shared by ``test_transfer_backends.py`` (snapshot and sync round trips between
every pair of a ring of back ends) and ``test_crash_transfer.py`` (kill -9
during ``supervm snapshot import`` and ``supervm sync apply``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import supervm
from supervm.chain import Block, BlockResult, Chain
from supervm.chain.block import receipts_root, transactions_root
from supervm.chain.header import BlockHeader
from supervm.layout import OWNER_PREFIX, STATE_PREFIX, in_state_tree, state_key
from supervm.storage import Storage

from .backends import SERVER_BACKENDS, require_server, url_for
from .crash_worker import TOKEN, build_block

#: The token's own keys in the store (its balances and owner record).
TOKEN_NAMESPACE = STATE_PREFIX + TOKEN
#: The contract the bulk blocks write under (no code: only its keys).
BULK_CONTRACT = hashlib.sha256(b"transfer-tests/bulk").digest()[:20]


def state_of(storage: Storage) -> dict[bytes, bytes]:
    """The state pairs of a store (the pairs under the state root)."""
    return {k: v for k, v in storage.scan(b"") if in_state_tree(k)}


def owners_of(storage: Storage) -> dict[bytes, bytes]:
    return dict(storage.scan(OWNER_PREFIX))


def token_block(seed: int, height: int) -> Block:
    """Block ``height`` of the token chain for ``seed`` (deploy, mint, then transfers that
    revert, delete drained balances and mint)."""
    return build_block(TOKEN, seed, height)


def extend_token(chain: Chain, seed: int, height: int) -> None:
    """Execute token blocks until ``chain`` stands at ``height``."""
    while chain.head().height < height:
        chain.apply(token_block(seed, chain.head().height + 1), mode="sequential")


def bulk_key(i: int) -> bytes:
    return state_key(BULK_CONTRACT, struct.pack(">Q", i))


def bulk_value(i: int, version: int) -> bytes:
    return hashlib.sha256(struct.pack(">QQ", i, version)).digest()[: 8 + i % 24]


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


class Site:
    """A store of one back end that tests open, close and reopen by URL.

    A memory store lives in this process only, so it is kept open (and only the
    in-process API reaches it); every other store is opened afresh by
    :meth:`open` and closed after, so that a CLI run in between may take its lock.
    """

    def __init__(self, backend: str, workdir: Path) -> None:
        if backend in SERVER_BACKENDS:
            require_server(backend)
        workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.url = url_for(backend, workdir)
        self._memory = supervm.open_storage(self.url) if backend == "memory" else None

    @property
    def cli(self) -> bool:
        """Whether another process (or the CLI in this one) can open the store by URL."""
        return self._memory is None

    @contextmanager
    def open(self) -> Iterator[Storage]:
        if self._memory is not None:
            yield self._memory
            return
        storage = supervm.open_storage(self.url)
        try:
            yield storage
        finally:
            storage.close()

    @contextmanager
    def chain(self) -> Iterator[Chain]:
        with self.open() as storage:
            chain = Chain(storage, threads=1)
            try:
                yield chain
            finally:
                chain.close()

    def drop(self) -> None:
        if self.backend in SERVER_BACKENDS:
            storage = supervm.open_storage(self.url)
            storage.drop()  # type: ignore[attr-defined]
            storage.close()
        elif self._memory is not None:
            self._memory.close()
