"""The SuperVM node: ed25519 keys and addresses (``supervm_node.keys``), the ``supervm keys``
commands; signed transactions, the mempool, JSON-RPC and metrics come next."""

from supervm_node.keys import (
    ADDRESS_DOMAIN,
    ADDRESS_SIZE,
    KEY_FILE_FORMAT,
    KEY_FILE_KIND,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    KeyFileError,
    KeyPair,
    address_of,
    load_key,
    save_key,
    verify,
)

__version__ = "0.1.0"

__all__ = [
    "ADDRESS_DOMAIN",
    "ADDRESS_SIZE",
    "KEY_FILE_FORMAT",
    "KEY_FILE_KIND",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "KeyFileError",
    "KeyPair",
    "__version__",
    "address_of",
    "load_key",
    "save_key",
    "verify",
]
