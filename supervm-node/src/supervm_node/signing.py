"""Signed transactions: signing with a key pair, and checking signatures in parallel.

A signature is ed25519 (PyNaCl, libsodium) over
:meth:`~supervm.chain.Transaction.signing_payload`: a domain tag and the transaction's
canonical encoding without the signature, so it covers the chain id, the nonce, the public
key, the call and its gas limit. libsodium runs without the GIL, so
:class:`SignatureChecker` checks a block's signatures on several threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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


class SignatureChecker:
    """Checks the signatures of many transactions on ``threads`` threads."""

    def __init__(self, threads: int = 2) -> None:
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be an int >= 1, not {threads!r}")
        self.threads = threads
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="supervm-sigs") if threads > 1 else None
        )

    def check(self, txs: Sequence[Transaction]) -> list[bool]:
        """Whether each of ``txs`` is signed and verifies, in order."""
        if self._pool is None or len(txs) < _MIN_PARALLEL:
            return _verify_all(txs)
        size = -(-len(txs) // self.threads)
        parts = [txs[at : at + size] for at in range(0, len(txs), size)]
        results: list[bool] = []
        for part in self._pool.map(_verify_all, parts):
            results += part
        return results

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
