"""Accounts of signed transactions: addresses from public keys, and nonces in state.

An address is the first 20 bytes of ``SHA-256(b"supervm/address/v1" + public_key)``
(an ed25519 public key, 32 bytes). Each sender's nonce (8 bytes, big-endian; absent: 0)
lives in state under :data:`NONCE_ACCOUNT`'s namespace, so the state root commits to
it; no contract can live at that address (contract addresses are hashes).
"""

from __future__ import annotations

import hashlib
import struct

from supervm.layout import state_key
from supervm.state import StateView

__all__ = [
    "ADDRESS_DOMAIN",
    "ADDRESS_SIZE",
    "NONCE_ACCOUNT",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "address_of",
    "nonce_key",
    "read_nonce",
]

ADDRESS_DOMAIN = b"supervm/address/v1"
ADDRESS_SIZE = 20
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: The reserved address whose namespace holds every sender's nonce.
NONCE_ACCOUNT = b"\0" * 19 + b"\1"


def address_of(public_key: bytes) -> bytes:
    """The 20-byte address of an ed25519 public key."""
    if not isinstance(public_key, bytes | bytearray | memoryview):
        raise TypeError(f"public key must be bytes, not {type(public_key).__name__}")
    key = bytes(public_key)
    if len(key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must be {PUBLIC_KEY_SIZE} bytes, not {len(key)}")
    return hashlib.sha256(ADDRESS_DOMAIN + key).digest()[:ADDRESS_SIZE]


def nonce_key(address: bytes) -> bytes:
    """The state key holding ``address``'s next nonce."""
    return state_key(NONCE_ACCOUNT, address)


def read_nonce(view: StateView, address: bytes) -> int:
    """The nonce the chain expects next from ``address`` in ``view`` (0 for a new sender)."""
    raw = view.get(nonce_key(address))
    return 0 if raw is None else int(struct.unpack(">Q", raw)[0])
