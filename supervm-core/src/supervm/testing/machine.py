"""Conformance kit, the state machine: random operations compared with the memory store."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from supervm.memory import MemoryStorage
from supervm.registry import open_storage
from supervm.storage import Storage
from supervm.testing.base import KitBase
from supervm.testing.strategies import batch_ops, keys, prefixes, values

__all__ = ["MachineConformance", "StorageMachine", "run_storage_machine"]


class _AbortBatch(Exception):
    pass


class StorageMachine(RuleBasedStateMachine):
    """Random operation sequences on a back end and on :class:`MemoryStorage`.

    Subclasses set :meth:`make_url` (a fresh, empty store each call) and may
    override :meth:`cleanup_url`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.url = self.make_url()
        self.store: Storage = open_storage(self.url)
        self.model = MemoryStorage()

    def make_url(self) -> str:
        raise NotImplementedError

    def cleanup_url(self, url: str) -> None:
        """Remove what a store left outside the work directory (tables, say)."""

    @rule(key=keys, value=values)
    def set(self, key: bytes, value: bytes) -> None:
        self.store.set(key, value)
        self.model.set(key, value)

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.store.delete(key)
        self.model.delete(key)

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.store.get(key) == self.model.get(key), f"get({key!r}) differs"

    @rule(prefix=prefixes)
    def scan(self, prefix: bytes) -> None:
        got = list(self.store.scan(prefix))
        want = list(self.model.scan(prefix))
        assert got == want, f"scan({prefix!r}): {got!r} != {want!r}"

    @rule(ops=batch_ops, abort=st.booleans())
    def batch(self, ops: list[tuple[bytes, bytes | None]], abort: bool) -> None:
        try:
            with self.store.batch() as b:
                for key, value in ops:
                    if value is None:
                        b.delete(key)
                    else:
                        b.set(key, value)
                if abort:
                    raise _AbortBatch
        except _AbortBatch:
            return
        self.model.write_batch(ops)

    @rule(ops=batch_ops)
    def write_batch(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        self.store.write_batch(ops)
        self.model.write_batch(ops)

    @precondition(lambda self: self.store.capabilities.persistent)
    @rule()
    def close_and_reopen(self) -> None:
        self.store.close()
        self.store = open_storage(self.url)

    @invariant()
    def same_contents(self) -> None:
        got = list(self.store.scan(b""))
        want = list(self.model.scan(b""))
        assert got == want, f"contents differ: {got!r} != {want!r}"

    def teardown(self) -> None:
        self.store.close()
        self.cleanup_url(self.url)


def run_storage_machine(
    make_url: Callable[[], str],
    cleanup_url: Callable[[str], None] | None = None,
    *,
    max_examples: int = 40,
    steps: int = 30,
    **extra: Any,
) -> None:
    """Run :class:`StorageMachine` against the back end ``make_url`` opens."""

    class Machine(StorageMachine):
        def make_url(self) -> str:
            return make_url()

        def cleanup_url(self, url: str) -> None:
            if cleanup_url is not None:
                cleanup_url(url)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            **extra,
        ),
    )


class MachineConformance(KitBase):
    """The state machine against the back end, for :attr:`machine_examples` examples."""

    #: Hypothesis examples for the state machine test; lower it for slow servers.
    machine_examples: int = 40
    #: Steps per example.
    machine_steps: int = 30

    def test_state_machine_matches_memory_store(self, tmp_path: Path) -> None:
        counter = itertools.count()

        def make_url() -> str:
            return self.storage_url(tmp_path / f"machine-{next(counter)}")

        run_storage_machine(
            make_url,
            self.cleanup_url,
            max_examples=self.machine_examples,
            steps=self.machine_steps,
        )
