"""The mempool: signed transactions waiting for a block, per sender in nonce order.

Bounded by count and bytes. A transaction is taken into a block only when its nonce is
the next one its sender can use (after the chain's and after those already taken), so a
block never holds a gap or a replay. Taken transactions stay known (``lookup``,
duplicate checks, byte accounting) until their block commits (:meth:`Mempool.committed`)
or is dropped (:meth:`Mempool.returned`).

What the mempool checks itself: duplicates, nonces (too low: a replay; too far ahead:
beyond the window), capacity. Signatures, chain ids, sizes and contracts are checked by
:class:`supervm_node.node.Node` before :meth:`Mempool.add`.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import dataclass

from supervm.chain import Transaction
from supervm_node.errors import Refusal, TransactionRefused

__all__ = ["Mempool", "MempoolLimits"]


@dataclass(frozen=True)
class MempoolLimits:
    """How much the mempool holds, and how far ahead of a sender's nonce it looks."""

    max_count: int = 100_000
    max_bytes: int = 64 << 20
    nonce_window: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_count", "max_bytes", "nonce_window"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"mempool {name} must be an int >= 1, not {value!r}")


class Mempool:
    """Pending and taken transactions, thread-safe.

    ``chain_nonce(address)`` gives the nonce the committed chain expects next from a
    sender; the mempool asks it for a sender it holds nothing of.
    """

    def __init__(
        self, chain_nonce: Callable[[builtins.bytes], int], limits: MempoolLimits | None = None
    ) -> None:
        self.limits = limits or MempoolLimits()
        self._chain_nonce = chain_nonce
        self._lock = threading.Lock()
        #: Transactions by hash: pending and taken into a block not committed yet.
        self._known: dict[builtins.bytes, Transaction] = {}
        self._taken: set[builtins.bytes] = set()
        #: Pending transactions per sender, by nonce.
        self._queues: dict[builtins.bytes, dict[int, Transaction]] = {}
        #: The next nonce to take into a block, per sender with anything known.
        self._next: dict[builtins.bytes, int] = {}
        #: How many known transactions each sender has (pending + taken).
        self._held: dict[builtins.bytes, int] = {}
        #: Senders whose next nonce is pending, in the order they became ready.
        self._ready: dict[builtins.bytes, None] = {}
        self._bytes = 0
        self._pending = 0

    # -- reading ---------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Transactions held: pending and taken into blocks not committed yet."""
        return len(self._known)

    @property
    def pending(self) -> int:
        """Transactions waiting to be taken into a block."""
        return self._pending

    @property
    def bytes(self) -> int:
        """Encoded size of the transactions held."""
        return self._bytes

    @property
    def max_count(self) -> int:
        return self.limits.max_count

    @property
    def max_bytes(self) -> int:
        return self.limits.max_bytes

    def get(self, tx_hash: builtins.bytes) -> Transaction | None:
        """The held transaction ``tx_hash`` (pending or taken), if any."""
        return self._known.get(tx_hash)

    def next_nonce(self, address: builtins.bytes) -> int:
        """The nonce the mempool would take next from ``address`` (after what it holds)."""
        with self._lock:
            base = self._base(address)
            queue = self._queues.get(address, {})
            while base in queue:
                base += 1
            return base

    def _base(self, sender: builtins.bytes) -> int:
        """The next nonce to take from ``sender``; call with the lock held."""
        nonce = self._next.get(sender)
        return self._chain_nonce(sender) if nonce is None else nonce

    # -- adding ------------------------------------------------------------------------

    def add(self, tx: Transaction) -> None:
        """Hold ``tx`` until a block takes it, or raise :class:`TransactionRefused`."""
        assert tx.nonce is not None, "the node admits only signed transactions"
        size = len(tx.encode())
        sender, nonce = tx.sender, tx.nonce
        with self._lock:
            if tx.hash in self._known:
                raise TransactionRefused(
                    Refusal.DUPLICATE, f"transaction {tx.hash.hex()} is already pending"
                )
            base = self._base(sender)
            if nonce < base:
                raise TransactionRefused(
                    Refusal.NONCE_TOO_LOW,
                    f"nonce {nonce} of sender {sender.hex()} is already used (the next is {base})",
                    expected=base,
                )
            window = self.limits.nonce_window
            if nonce >= base + window:
                raise TransactionRefused(
                    Refusal.NONCE_TOO_HIGH,
                    f"nonce {nonce} of sender {sender.hex()} is too far ahead: the next is "
                    f"{base}, and at most {window} ahead are held",
                    expected=base,
                )
            queue = self._queues.get(sender)
            if queue is not None and nonce in queue:
                raise TransactionRefused(
                    Refusal.DUPLICATE,
                    f"sender {sender.hex()} already has a pending transaction with nonce "
                    f"{nonce} ({queue[nonce].hash.hex()})",
                )
            if len(self._known) >= self.limits.max_count:
                raise TransactionRefused(
                    Refusal.MEMPOOL_FULL,
                    f"the mempool is full: it holds {len(self._known)} transactions, its limit",
                )
            if self._bytes + size > self.limits.max_bytes:
                raise TransactionRefused(
                    Refusal.MEMPOOL_FULL,
                    f"the mempool is full: {self._bytes} of {self.limits.max_bytes} bytes used",
                )
            # Only now is anything of a new sender kept: a refusal leaves no trace.
            self._queues.setdefault(sender, {})[nonce] = tx
            self._known[tx.hash] = tx
            self._next.setdefault(sender, base)
            self._held[sender] = self._held.get(sender, 0) + 1
            self._bytes += size
            self._pending += 1
            if nonce == base:
                self._ready.setdefault(sender)

    # -- taking into blocks ---------------------------------------------------------------

    def take(self, limit: int) -> list[Transaction]:
        """Up to ``limit`` transactions for the next block: each sender's run of
        consecutive nonces, senders in the order they became ready."""
        taken: list[Transaction] = []
        with self._lock:
            while self._ready and len(taken) < limit:
                sender = next(iter(self._ready))
                queue = self._queues[sender]
                nonce = self._next[sender]
                while nonce in queue and len(taken) < limit:
                    tx = queue.pop(nonce)
                    taken.append(tx)
                    self._taken.add(tx.hash)
                    nonce += 1
                self._next[sender] = nonce
                del self._ready[sender]
                if nonce in queue:
                    self._ready[sender] = None  # to the back: the others' turn
                if not queue:
                    del self._queues[sender]
            self._pending -= len(taken)
        return taken

    def ready(self) -> int:
        """How many senders have a transaction that can be taken now."""
        return len(self._ready)

    def committed(self, txs: list[Transaction] | tuple[Transaction, ...]) -> None:
        """``txs`` are in a committed block: forget them."""
        with self._lock:
            for tx in txs:
                if self._known.pop(tx.hash, None) is None:
                    continue
                self._taken.discard(tx.hash)
                self._bytes -= len(tx.encode())
                held = self._held[tx.sender] - 1
                if held:
                    self._held[tx.sender] = held
                else:
                    # Nothing left of this sender: the chain's nonce is the truth again.
                    del self._held[tx.sender]
                    self._next.pop(tx.sender, None)
                    self._queues.pop(tx.sender, None)
                    self._ready.pop(tx.sender, None)

    def returned(self, txs: list[Transaction]) -> list[Transaction]:
        """``txs`` were taken but their block will not be made: drop them and what their
        senders have from their lowest nonce on (pending or taken); those nonces are free
        again, and what those senders have in earlier blocks stays. What was dropped."""
        lowest: dict[builtins.bytes, int] = {}
        for tx in txs:
            assert tx.nonce is not None
            lowest[tx.sender] = min(tx.nonce, lowest.get(tx.sender, tx.nonce))
        dropped: list[Transaction] = []
        with self._lock:
            for tx in list(self._known.values()):
                start = lowest.get(tx.sender)
                if start is None or tx.nonce is None or tx.nonce < start:
                    continue
                dropped.append(tx)
                del self._known[tx.hash]
                self._bytes -= len(tx.encode())
                if tx.hash in self._taken:
                    self._taken.discard(tx.hash)
                else:
                    self._pending -= 1
                    queue = self._queues.get(tx.sender)
                    if queue is not None:
                        queue.pop(tx.nonce, None)
                held = self._held[tx.sender] - 1
                if held:
                    self._held[tx.sender] = held
                else:
                    del self._held[tx.sender]
            for sender, start in lowest.items():
                self._ready.pop(sender, None)
                if not self._queues.get(sender):
                    self._queues.pop(sender, None)
                if sender in self._held:
                    if sender in self._next:
                        self._next[sender] = min(self._next[sender], start)
                else:
                    self._next.pop(sender, None)
        return dropped
