"""Why the node refuses a transaction: one error class, one code per reason."""

from __future__ import annotations

import enum

from supervm.errors import SuperVMError

__all__ = ["Refusal", "TransactionRefused"]


class Refusal(enum.StrEnum):
    """A reason to refuse a transaction; its JSON-RPC error code is :attr:`code`."""

    MEMPOOL_FULL = "mempool_full"
    DUPLICATE = "duplicate"
    NONCE_TOO_LOW = "nonce_too_low"
    NONCE_TOO_HIGH = "nonce_too_high"
    WRONG_CHAIN = "wrong_chain"
    BAD_SIGNATURE = "bad_signature"
    OVERSIZED = "oversized"
    NO_CONTRACT = "no_contract"
    READ_ONLY = "read_only"

    @property
    def code(self) -> int:
        """The JSON-RPC error code (docs/rpc.md)."""
        return _CODES[self]


_CODES = {
    Refusal.MEMPOOL_FULL: -32001,
    Refusal.DUPLICATE: -32002,
    Refusal.NONCE_TOO_LOW: -32003,
    Refusal.NONCE_TOO_HIGH: -32004,
    Refusal.WRONG_CHAIN: -32005,
    Refusal.BAD_SIGNATURE: -32006,
    Refusal.OVERSIZED: -32007,
    Refusal.NO_CONTRACT: -32008,
    Refusal.READ_ONLY: -32012,
}


class TransactionRefused(SuperVMError):
    """The node will not take a transaction; :attr:`reason` says why, the message how."""

    def __init__(self, reason: Refusal, message: str, **details: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.details = details

    @property
    def code(self) -> int:
        return self.reason.code
