"""Ownership of objects: storage keys that only one account may write."""

from __future__ import annotations

import threading

from supervm.layout import OWNER_PREFIX, state_key
from supervm.storage import Storage

__all__ = ["OwnershipRegistry"]


class OwnershipRegistry:
    """Maps contract state keys to owning accounts, persisted in the store.

    Assignments are made between blocks (they are written at once); during a
    block the registry is read-only, so every execution mode sees the same owners.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._owners: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        for key, owner in storage.scan(OWNER_PREFIX):
            self._owners[key[len(OWNER_PREFIX) :]] = owner

    @staticmethod
    def state_key(contract: bytes, key: bytes) -> bytes:
        """The storage key of ``key`` in ``contract``'s namespace."""
        return state_key(contract, key)

    def assign(self, contract: bytes, key: bytes, owner: bytes) -> None:
        """Make ``owner`` the only account whose calls may write ``key`` of ``contract``."""
        for name, value in (("contract", contract), ("key", key), ("owner", owner)):
            if type(value) is not bytes or not value:
                raise TypeError(f"{name} must be non-empty bytes")
        full = self.state_key(contract, key)
        with self._lock:
            self._storage.set(OWNER_PREFIX + full, owner)
            self._owners[full] = owner

    def release(self, contract: bytes, key: bytes) -> None:
        """Remove ownership of ``key`` of ``contract``."""
        full = self.state_key(contract, key)
        with self._lock:
            self._storage.delete(OWNER_PREFIX + full)
            self._owners.pop(full, None)

    def owner(self, state_key: bytes) -> bytes | None:
        """The owner of a full state key, or ``None`` for a shared object."""
        return self._owners.get(state_key)

    def __len__(self) -> int:
        return len(self._owners)
