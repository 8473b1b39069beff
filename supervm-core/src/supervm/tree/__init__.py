"""The state tree: a Jellyfish Merkle tree over key hashes, with inclusion and exclusion proofs.

:class:`JellyfishTree` reads a versioned tree through a state view and
computes the writes of each new version; :class:`TreeRestore` builds one version
from its leaves in key-hash order (a snapshot import); :func:`verify` checks a
:class:`Proof` against a root hash. The format is described in ``docs/tree.md``.
"""

from __future__ import annotations

from supervm.tree.hashing import (
    PLACEHOLDER,
    internal_hash,
    key_hash,
    leaf_hash,
    value_hash,
)
from supervm.tree.jmt import JellyfishTree, TreeUpdate
from supervm.tree.node import (
    Child,
    InternalNode,
    LeafNode,
    Node,
    NodeKey,
    TreeError,
    decode_node,
    decode_stale_record,
    encode_stale_record,
    node_storage_key,
    root_record_key,
    stale_record_key,
)
from supervm.tree.proof import Proof, ProofError, verify
from supervm.tree.restore import TreeRestore

__all__ = [
    "PLACEHOLDER",
    "Child",
    "InternalNode",
    "JellyfishTree",
    "LeafNode",
    "Node",
    "NodeKey",
    "Proof",
    "ProofError",
    "TreeError",
    "TreeRestore",
    "TreeUpdate",
    "decode_node",
    "decode_stale_record",
    "encode_stale_record",
    "internal_hash",
    "key_hash",
    "leaf_hash",
    "node_storage_key",
    "root_record_key",
    "stale_record_key",
    "value_hash",
    "verify",
]
