"""The on-disk key layout: every key prefix SuperVM writes, and the layout version.

==========================  =====================================================
key                         value
==========================  =====================================================
``c`` + address + key       a contract's state (``key`` as the contract sees it)
``m/code/`` + code hash     contract code (wasm bytes), by SHA-256
``m/contract/`` + address   the code hash deployed at a contract address
``o/`` + state key          the account that owns that state key (ownership)
``meta/height``             height of the last committed block (8 bytes, big-endian)
``meta/header/`` + height   the block header at that height (:mod:`supervm.chain.header`)
``meta/block/`` + height    the block's transactions (its body)
``meta/hash/`` + block hash the height of the block with that hash (8 bytes)
``meta/receipts/`` + height the block's receipts (status, return data, gas, error,
                            events; :func:`supervm.chain.block.encode_receipts`)
``meta/tx/`` + tx hash      where a committed transaction is: height (8 bytes) and
                            index in its block (4 bytes)
``meta/chain_id``           the chain id a node runs this store with (8 bytes)
``meta/layout``             this layout's version (4 bytes, big-endian)
``meta/pruned``             the lowest height whose state is kept (absent: 0)
``meta/keep_blocks``        how many recent blocks' history to keep (absent: all)
``meta/light/``             a light client's own records: ``header/`` + height its
                            headers, ``height`` its head, ``chain_id`` its chain
``meta/incomplete``         an unfinished snapshot import or migration into this
                            store (JSON: its operation and progress); a store
                            holding it is not opened as a chain
``h/i/`` + len + key + hgt  the key's value before the block at that height
                            (0x00: absent, 0x01 + value; len: 2 bytes)
                            (:mod:`supervm.chain.history`)
``h/c/`` + height           the keys that block changed (2-byte length + key each)
``t/n/`` + node key         a state-tree node (:mod:`supervm.tree`); the node key is
                            the version (8 bytes, big-endian), the nibble count
                            (1 byte) and the packed nibble path
``t/r/`` + version          the node key of the tree's root at that version
                            (empty: the empty tree)
``t/s/`` + version          the tree nodes made stale at that version (their keys)
==========================  =====================================================

The state tree covers contract state, code and contract records: every key
outside ``meta/``, ``t/``, ``h/`` and ``o/`` (:func:`in_state_tree`). Ownership
records are assigned between blocks by the node's registry, outside the
chain's history, and so are not under the root.

Heights are 8 bytes big-endian everywhere, so keys of one prefix sort by
height. A store gets the version marker with its first write by SuperVM.
Opening a store whose marker names another version fails with
:class:`LayoutVersionError`; a store without a marker is new (or was written
by version 1, which had no state tree and no headers: such a store cannot be
read by this version).

Version history: 1, a chained state digest and block records; 2, the state
tree, block headers, block bodies and per-block history.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from supervm.errors import LayoutVersionError
from supervm.storage import BatchOp, Storage

__all__ = [
    "BLOCK_PREFIX",
    "CHAIN_ID_KEY",
    "CHANGE_PREFIX",
    "CODE_PREFIX",
    "CONTRACT_PREFIX",
    "HASH_PREFIX",
    "HEADER_PREFIX",
    "HEIGHT_KEY",
    "HISTORY_PREFIX",
    "INCOMPLETE_KEY",
    "KEEP_BLOCKS_KEY",
    "LAYOUT_KEY",
    "LAYOUT_VERSION",
    "LIGHT_PREFIX",
    "MARKER",
    "OWNER_PREFIX",
    "PRUNED_KEY",
    "RECEIPTS_PREFIX",
    "STATE_PREFIX",
    "TREE_NODE_PREFIX",
    "TREE_ROOT_PREFIX",
    "TREE_STALE_PREFIX",
    "TX_PREFIX",
    "block_key",
    "check_layout",
    "hash_key",
    "header_key",
    "in_state_tree",
    "receipts_key",
    "state_key",
    "state_pairs",
    "state_ranges",
    "tx_key",
]

#: Version of the layout this SuperVM reads and writes.
LAYOUT_VERSION = 2

STATE_PREFIX = b"c"
CODE_PREFIX = b"m/code/"
CONTRACT_PREFIX = b"m/contract/"
OWNER_PREFIX = b"o/"
HEIGHT_KEY = b"meta/height"
HEADER_PREFIX = b"meta/header/"
BLOCK_PREFIX = b"meta/block/"
HASH_PREFIX = b"meta/hash/"
LAYOUT_KEY = b"meta/layout"
RECEIPTS_PREFIX = b"meta/receipts/"
TX_PREFIX = b"meta/tx/"
CHAIN_ID_KEY = b"meta/chain_id"
TREE_NODE_PREFIX = b"t/n/"
TREE_ROOT_PREFIX = b"t/r/"
TREE_STALE_PREFIX = b"t/s/"
CHANGE_PREFIX = b"h/c/"
HISTORY_PREFIX = b"h/i/"
PRUNED_KEY = b"meta/pruned"
KEEP_BLOCKS_KEY = b"meta/keep_blocks"
INCOMPLETE_KEY = b"meta/incomplete"
LIGHT_PREFIX = b"meta/light/"
_OUTSIDE_TREE = (b"meta/", b"t/", b"h/", OWNER_PREFIX)

#: The batch operation that stamps a store with this layout's version.
MARKER: BatchOp = (LAYOUT_KEY, struct.pack(">I", LAYOUT_VERSION))


def state_key(contract: bytes, key: bytes) -> bytes:
    """The storage key of ``key`` in ``contract``'s namespace."""
    return STATE_PREFIX + contract + key


def in_state_tree(key: bytes) -> bool:
    """Whether ``key`` is state the tree commits to (not chain metadata, the tree or owners)."""
    return not key.startswith(_OUTSIDE_TREE)


def state_ranges() -> list[tuple[bytes | None, bytes | None]]:
    """Key ranges ``[start, end)`` (``None``: unbounded) holding exactly the state keys."""
    ranges: list[tuple[bytes | None, bytes | None]] = []
    start: bytes | None = None
    for prefix in sorted(_OUTSIDE_TREE):
        ranges.append((start, prefix))
        start = prefix[:-1] + bytes((prefix[-1] + 1,))
    ranges.append((start, None))
    return ranges


def state_pairs(storage: Storage) -> Iterator[tuple[bytes, bytes]]:
    """The latest state pairs of ``storage`` (no chain records), in key order."""
    if storage.capabilities.range_scan:
        for start, end in state_ranges():
            yield from storage.scan_range(start, end)
    else:
        yield from (pair for pair in storage.scan(b"") if in_state_tree(pair[0]))


def block_key(height: int) -> bytes:
    """The storage key of the body (transactions) of the block at ``height``."""
    return BLOCK_PREFIX + struct.pack(">Q", height)


def receipts_key(height: int) -> bytes:
    """The storage key of the receipts of the block at ``height``."""
    return RECEIPTS_PREFIX + struct.pack(">Q", height)


def tx_key(tx_hash: bytes) -> bytes:
    """The storage key of where the committed transaction ``tx_hash`` is."""
    return TX_PREFIX + tx_hash


def header_key(height: int) -> bytes:
    """The storage key of the header of the block at ``height``."""
    return HEADER_PREFIX + struct.pack(">Q", height)


def hash_key(block_hash: bytes) -> bytes:
    """The storage key of the height of the block whose hash is ``block_hash``."""
    return HASH_PREFIX + block_hash


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
