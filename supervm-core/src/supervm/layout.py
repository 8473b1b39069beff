"""The on-disk key layout: every key prefix SuperVM writes, and the layout version.

==========================  =====================================================
key                         value
==========================  =====================================================
``c`` + address + key       a contract's state (``key`` as the contract sees it)
``m/code/`` + code hash     contract code (wasm bytes), by SHA-256
``m/contract/`` + address   the code hash deployed at a contract address
``o/`` + state key          the account that owns that state key (ownership)
``meta/height``             height of the last committed block (8 bytes, big-endian)
``meta/digest``             state digest of the last committed block (32 bytes)
``meta/block/`` + height    state digest + receipts root of the block at that height
``meta/layout``             this layout's version (4 bytes, big-endian)
==========================  =====================================================

A store gets the version marker with its first write by SuperVM. Opening a
store whose marker names another version fails with :class:`LayoutVersionError`;
a store without a marker was written before markers existed (version 1) or is
new.
"""

from __future__ import annotations

import struct

from supervm.errors import LayoutVersionError
from supervm.storage import BatchOp, Storage

__all__ = [
    "BLOCK_PREFIX",
    "CODE_PREFIX",
    "CONTRACT_PREFIX",
    "DIGEST_KEY",
    "HEIGHT_KEY",
    "LAYOUT_KEY",
    "LAYOUT_VERSION",
    "MARKER",
    "OWNER_PREFIX",
    "STATE_PREFIX",
    "block_key",
    "check_layout",
    "state_key",
]

#: Version of the layout this SuperVM reads and writes.
LAYOUT_VERSION = 1

STATE_PREFIX = b"c"
CODE_PREFIX = b"m/code/"
CONTRACT_PREFIX = b"m/contract/"
OWNER_PREFIX = b"o/"
HEIGHT_KEY = b"meta/height"
DIGEST_KEY = b"meta/digest"
BLOCK_PREFIX = b"meta/block/"
LAYOUT_KEY = b"meta/layout"

#: The batch operation that stamps a store with this layout's version.
MARKER: BatchOp = (LAYOUT_KEY, struct.pack(">I", LAYOUT_VERSION))


def state_key(contract: bytes, key: bytes) -> bytes:
    """The storage key of ``key`` in ``contract``'s namespace."""
    return STATE_PREFIX + contract + key


def block_key(height: int) -> bytes:
    """The storage key of the block record at ``height``."""
    return BLOCK_PREFIX + struct.pack(">Q", height)


def check_layout(storage: Storage) -> bool:
    """Whether ``storage`` carries this layout's marker; raise if it carries another.

    Returns ``False`` for a store without a marker (new, or written before
    markers existed): the caller adds :data:`MARKER` to its first write.
    """
    raw = storage.get(LAYOUT_KEY)
    if raw is None:
        return False
    if len(raw) != 4:
        raise LayoutVersionError(
            f"the store's layout marker ({raw[:16].hex()}) is not one this SuperVM knows; "
            f"it reads and writes layout version {LAYOUT_VERSION}",
            found=None,
            supported=LAYOUT_VERSION,
        )
    (found,) = struct.unpack(">I", raw)
    if found == LAYOUT_VERSION:
        return True
    if found > LAYOUT_VERSION:
        why = "newer than this SuperVM, which reads"
        hint = ": upgrade SuperVM to open it"
    else:
        why = "unknown to this SuperVM, which reads"
        hint = ""
    raise LayoutVersionError(
        f"the store uses on-disk layout version {found}, {why} layout version "
        f"{LAYOUT_VERSION}{hint}",
        found=found,
        supported=LAYOUT_VERSION,
    )
