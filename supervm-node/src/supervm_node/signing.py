"""Signed transactions: signing with a key pair, and checking signatures in parallel.

A signature is ed25519 (PyNaCl, libsodium) over
:meth:`~supervm.chain.Transaction.signing_payload`: a domain tag and the transaction's
canonical encoding without the signature, so it covers the chain id, the nonce, the public
key, the call and its gas limit. libsodium runs without the GIL, so
:class:`SignatureChecker` checks a block's signatures on several threads at once.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

from supervm.chain import Transaction
from supervm.vm.runtime import DEFAULT_GAS_LIMIT
from supervm_node.keys import KeyPair

__all__ = ["SignatureChecker", "sign_transaction", "verify_transaction"]

#: Fewer signatures than this are checked on the calling thread.
_MIN_PARALLEL = 64


def sign_transaction(
    key: KeyPair,
    *,
    chain_id: int,
    nonce: int,
    contract: bytes,
    method: str,
    input: bytes = b"",
    gas_limit: int = DEFAULT_GAS_LIMIT,
    owned: bool = False,
) -> Transaction:
    """A transaction from ``key``'s address, signed by ``key``."""
    unsigned = Transaction(
        contract, method, input, gas_limit=gas_limit, owned=owned, nonce=nonce,
        chain_id=chain_id, public_key=key.public_key,
    )  # fmt: skip
    return unsigned.with_signature(key.sign(unsigned.signing_payload()))


def verify_transaction(tx: Transaction) -> bool:
    """Whether ``tx`` is signed and its signature verifies under its public key."""
    if tx.nonce is None or len(tx.signature) != 64:
        return False
    try:
        crypto_sign_open(tx.signature + tx.signing_payload(), tx.public_key)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True


def _verify_all(txs: Sequence[Transaction]) -> list[bool]:
    return [verify_transaction(tx) for tx in txs]


def _verify_signed(items: list[tuple[bytes, bytes]]) -> list[bool]:
    """Whether each (signature + payload, public key) verifies (in a worker process)."""
    results = []
    for signed, public_key in items:
        try:
            crypto_sign_open(signed, public_key)
        except (BadSignatureError, CryptoError, ValueError):
            results.append(False)
        else:
            results.append(True)
    return results


class SignatureChecker:
    """Checks the signatures of many transactions on ``threads`` threads, or with
    ``processes=True`` in that many worker processes (one process with ``threads=1``).

    libsodium runs without the GIL, but each check takes the GIL to enter and leave it:
    next to a thread that holds the GIL (executing a block), checking threads wait for
    it at every signature. Worker processes have a GIL each; a block's signatures travel
    to them as bytes. Workers start on first use (processes by ``spawn``); after
    :meth:`close` the next check starts them again.
    """

    def __init__(self, threads: int = 2, *, processes: bool = False) -> None:
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be an int >= 1, not {threads!r}")
        self.threads = threads
        self.processes = processes
        self._pool: Executor | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the workers now rather than on the first check."""
        if self.processes:
            self._workers().submit(_verify_signed, []).result()

    def _workers(self) -> Executor:
        with self._lock:
            if self._pool is None:
                if self.processes:
                    context = multiprocessing.get_context("spawn")
                    self._pool = ProcessPoolExecutor(self.threads, mp_context=context)
                else:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="supervm-sigs")
            return self._pool

    def check(self, txs: Sequence[Transaction]) -> list[bool]:
        """Whether each of ``txs`` is signed and verifies, in order."""
        if (self.threads == 1 and not self.processes) or len(txs) < _MIN_PARALLEL:
            return _verify_all(txs)
        size = -(-len(txs) // self.threads)
        results: list[bool] = []
        if not self.processes:
            parts = [txs[at : at + size] for at in range(0, len(txs), size)]
            for part in self._workers().map(_verify_all, parts):
                results += part
            return results
        signed = [tx.nonce is not None and len(tx.signature) == 64 for tx in txs]
        items = [
            (tx.signature + tx.signing_payload(), tx.public_key)
            for tx, ok in zip(txs, signed, strict=True)
            if ok
        ]
        verdicts: list[bool] = []
        for part in self._workers().map(
            _verify_signed, [items[at : at + size] for at in range(0, len(items), size)]
        ):
            verdicts += part
        found = iter(verdicts)
        return [next(found) if ok else False for ok in signed]

    def close(self) -> None:
        """Stop the worker threads or processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
