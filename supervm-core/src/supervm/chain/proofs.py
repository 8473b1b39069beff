"""A proof of one key's value (or absence) in the state at a height, as a node hands it out.

:class:`StateProof` bundles what a light client needs besides the root it
trusts: the key, the value (``None`` for an absent key), the height and root
it is claimed against, and the tree proof. Its canonical encoding::

    version (1 byte, 1) | height (8 bytes, big-endian) | state root (32 bytes)
    | key length (4 bytes) | key | 0x00 (absent) or 0x01 + value length (4 bytes) + value
    | tree proof (the rest; see docs/tree.md)

:meth:`StateProof.verify` checks it against a root the caller trusts (by
default the root it names, which says only that the proof is consistent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from supervm.tree import Proof, ProofError, verify

__all__ = ["StateProof"]

_VERSION = 1


@dataclass(frozen=True)
class StateProof:
    """A key's value (``None``: absent) at ``height``, whose state root is ``state_root``."""

    key: bytes
    value: bytes | None
    height: int
    state_root: bytes
    proof: Proof

    def verify(self, root: bytes | None = None) -> bool:
        """Whether the proof shows ``value`` for ``key`` under ``root`` (default: its own)."""
        return verify(self.state_root if root is None else root, self.key, self.value, self.proof)

    def encode(self) -> bytes:
        """The canonical bytes (see the module docstring)."""
        parts = [
            struct.pack(">BQ", _VERSION, self.height),
            self.state_root,
            struct.pack(">I", len(self.key)),
            self.key,
        ]
        if self.value is None:
            parts.append(b"\0")
        else:
            parts += [b"\1", struct.pack(">I", len(self.value)), self.value]
        parts.append(self.proof.encode())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> StateProof:
        """The proof encoded in ``data``; :class:`~supervm.tree.ProofError` for anything else."""
        if type(data) is not bytes:
            raise ProofError(f"a state proof is bytes, not {type(data).__name__}")
        try:
            version, height = struct.unpack_from(">BQ", data, 0)
            if version != _VERSION:
                raise ProofError(f"state proof format {version} is unknown (this reads 1)")
            at = 9
            root = data[at : at + 32]
            at += 32
            (size,) = struct.unpack_from(">I", data, at)
            at += 4
            key = data[at : at + size]
            at += size
            flag = data[at]
            at += 1
            value: bytes | None = None
            if flag == 1:
                (size,) = struct.unpack_from(">I", data, at)
                at += 4
                value = data[at : at + size]
                at += size
                if len(value) != size:
                    raise ProofError("truncated state proof (value)")
            elif flag != 0:
                raise ProofError(f"malformed state proof: value flag {flag}")
        except (struct.error, IndexError):
            raise ProofError(f"truncated state proof ({len(data)} bytes)") from None
        if len(root) != 32 or len(key) == 0:
            raise ProofError("truncated state proof (root or key)")
        return cls(key, value, height, root, Proof.decode(data[at:]))

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (bytes in hex)."""
        return {
            "key": self.key.hex(),
            "value": None if self.value is None else self.value.hex(),
            "height": self.height,
            "state_root": self.state_root.hex(),
            "proof": self.proof.to_json(),
        }

    @classmethod
    def from_json(cls, data: object) -> StateProof:
        """The proof in a dict made by :meth:`to_json`; ProofError for anything else."""
        if not isinstance(data, dict):
            raise ProofError("a state proof in JSON is an object")
        try:
            key = bytes.fromhex(data["key"])
            raw_value = data["value"]
            value = None if raw_value is None else bytes.fromhex(raw_value)
            height = data["height"]
            root = bytes.fromhex(data["state_root"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProofError(f"malformed state proof JSON: {exc}") from None
        if type(height) is not int or height < 0 or len(root) != 32 or not key:
            raise ProofError("malformed state proof JSON: height, state_root or key")
        return cls(key, value, height, root, Proof.from_json(data.get("proof")))
