"""The SuperVM node: keys (``supervm_node.keys``), signing (``supervm_node.signing``), the
mempool, the block pipeline and the node (``supervm_node.node``), JSON-RPC
(``supervm_node.rpc``), metrics, and the ``supervm node``, ``keys`` and ``tx`` commands."""

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
