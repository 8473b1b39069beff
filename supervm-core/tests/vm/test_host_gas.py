"""Every host function charges exactly what the ABI table says: base + per byte x bytes moved."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervm.memory import MemoryStorage
from supervm.vm.abi import HOST_FUNCTIONS, HostFunctionSpec, Limits
from supervm.vm.host import CORE_FUNCTIONS, Host, Revert
from supervm.vm.plugins import plugin_host_functions

NAMESPACE = b"ns/"
ADDRESS = b"\xad" * 20
SENDER = b"\x5e" * 17
INPUT = b"input bytes: 23 of them"
KEY, VALUE = b"key-7", b"value of 16 byte"


class FakeHost(Host):
    """A host over a bytearray memory; wasm never spends fuel."""

    memory = bytearray(4096)

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self.memory[ptr : ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        self.memory[ptr : ptr + len(data)] = data

    def fuel_left(self) -> int:
        return self.budget


def new_host() -> FakeHost:
    store = MemoryStorage()
    store.set(NAMESPACE + KEY, VALUE)
    store.set(NAMESPACE + b"k2", b"v" * 9)
    host = FakeHost(store, NAMESPACE, ADDRESS, SENDER, INPUT, 5, 6, Limits())
    host.start_metering(10**12)
    host.memory[0 : len(KEY)] = KEY
    return host


# For each function: (wasm arguments, bytes the call moves), after any setup on the host.
Case = Callable[[FakeHost], tuple[tuple[int, ...], int]]


def _read_register(host: FakeHost) -> tuple[tuple[int, ...], int]:
    host.register = b"r" * 11
    return (100,), 11


def _iter_next(host: FakeHost) -> tuple[tuple[int, ...], int]:
    host.storage_iter(0, 0)
    return (0,), len(b"k2")  # keys come in order: "k2" before "key-7"


def _iter_next_at_end(host: FakeHost) -> tuple[tuple[int, ...], int]:
    host.memory[1000:1002] = b"zz"
    host.storage_iter(1000, 2)  # no key starts with "zz"
    return (0,), 0


def _iter_value(host: FakeHost) -> tuple[tuple[int, ...], int]:
    host.storage_iter(0, 0)
    host.storage_iter_next(0)
    return (0,), 9


CASES: dict[str, Case] = {
    "read_register": _read_register,
    "input": lambda host: ((), len(INPUT)),
    "caller": lambda host: ((), len(SENDER)),
    "address": lambda host: ((), len(ADDRESS)),
    "block_height": lambda host: ((), 0),
    "block_timestamp": lambda host: ((), 0),
    "storage_get": lambda host: ((0, len(KEY)), len(KEY) + len(VALUE)),
    "storage_set": lambda host: ((0, len(KEY), 200, 33), len(KEY) + 33),
    "storage_delete": lambda host: ((0, len(KEY)), len(KEY)),
    "storage_iter": lambda host: ((0, 3), 3),
    "storage_iter_next": _iter_next,
    "storage_iter_value": _iter_value,
    "return_data": lambda host: ((300, 41), 41),
    "revert": lambda host: ((300, 13), 13),
    "emit_event": lambda host: ((300, 7, 400, 29), 7 + 29),
    "sha256": lambda host: ((300, 50), 50),
}

# Calls that move a different number of bytes than the main case.
EXTRA_CASES: list[tuple[str, Case]] = [
    ("storage_get", lambda host: ((1000, 4), 4)),  # absent key: the key only
    ("storage_iter_next", _iter_next_at_end),
    ("read_register", lambda host: ((100,), 0)),  # empty register
    ("storage_set", lambda host: ((0, len(KEY), 0, 0), len(KEY))),  # empty value
]

IMPLEMENTATIONS = {spec.name: (spec, impl) for spec, impl in CORE_FUNCTIONS}
IMPLEMENTATIONS.update({spec.name: (spec, impl) for spec, impl in plugin_host_functions()})


def charged(name: str, case: Case) -> tuple[HostFunctionSpec, int, int]:
    """(spec, host gas the call charged, bytes it moved)."""
    spec, impl = IMPLEMENTATIONS[name]
    host = new_host()
    args, moved = case(host)
    before = host.host_gas
    try:
        impl(host, *args)
    except Revert:
        assert name == "revert"
    return spec, host.host_gas - before, moved


def test_every_function_has_a_case() -> None:
    assert {spec.name for spec in HOST_FUNCTIONS} <= set(CASES)
    assert set(CASES) == set(IMPLEMENTATIONS)


@pytest.mark.parametrize("name", [spec.name for spec in HOST_FUNCTIONS] + ["sha256"])
def test_host_function_charges_what_the_table_says(name: str) -> None:
    spec, gas, moved = charged(name, CASES[name])
    assert gas == spec.base_gas + spec.byte_gas * moved


@pytest.mark.parametrize(("name", "case"), EXTRA_CASES, ids=[name for name, _ in EXTRA_CASES])
def test_other_sizes_charge_what_the_table_says(name: str, case: Case) -> None:
    spec, gas, moved = charged(name, case)
    assert gas == spec.base_gas + spec.byte_gas * moved


def test_the_table_is_abi_v1() -> None:
    """The gas schedule is consensus: these numbers never change within ABI v1."""
    assert {spec.name: (spec.base_gas, spec.byte_gas) for spec in HOST_FUNCTIONS} == {
        "read_register": (10, 1),
        "input": (20, 1),
        "caller": (20, 1),
        "address": (20, 1),
        "block_height": (10, 0),
        "block_timestamp": (10, 0),
        "storage_get": (200, 1),
        "storage_set": (400, 2),
        "storage_delete": (300, 1),
        "storage_iter": (300, 1),
        "storage_iter_next": (100, 1),
        "storage_iter_value": (50, 1),
        "return_data": (20, 1),
        "revert": (20, 1),
        "emit_event": (200, 2),
    }
