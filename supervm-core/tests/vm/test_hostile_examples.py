"""The hostile example contracts in examples/contracts/wat end exactly as documented."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from supervm.vm import InvalidContractError, Limits, Runtime, Status

WAT = Path(__file__).resolve().parents[3] / "examples" / "contracts" / "wat"
SENDER = b"\x0c" * 20


def deploy(runtime: Runtime, name: str) -> bytes:
    return runtime.deploy((WAT / f"{name}.wasm").read_bytes())


def state(runtime: Runtime) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in runtime.storage.scan(b"c")]


@pytest.mark.parametrize(
    ("name", "method", "status"),
    [
        ("infinite_loop", "spin", Status.OUT_OF_GAS),
        ("deep_recursion", "recurse", Status.TRAPPED),
        ("memory_bomb", "huge_return", Status.TRAPPED),
        ("bad_pointer", "storage_set_oob_key", Status.TRAPPED),
        ("bad_pointer", "storage_set_oob_value", Status.TRAPPED),
        ("bad_pointer", "storage_get_oob_key", Status.TRAPPED),
        ("bad_pointer", "read_register_oob", Status.TRAPPED),
        ("bad_pointer", "read_register_edge", Status.TRAPPED),
        ("bad_pointer", "return_data_oob", Status.TRAPPED),
        ("bad_pointer", "emit_event_oob", Status.TRAPPED),
        ("bad_pointer", "negative_key_len", Status.TRAPPED),
        ("bad_pointer", "negative_value_len", Status.TRAPPED),
        ("bad_pointer", "negative_return_len", Status.TRAPPED),
        ("big_key", "big_key", Status.TRAPPED),
        ("big_key", "big_key_get", Status.TRAPPED),
        ("big_key", "empty_key", Status.TRAPPED),
        ("big_key", "big_value", Status.TRAPPED),
    ],
)
def test_hostile_call_fails_and_writes_nothing(
    runtime: Runtime, name: str, method: str, status: Status
) -> None:
    address = deploy(runtime, name)
    before = state(runtime)
    receipt = runtime.call(address, method, sender=SENDER, gas_limit=2_000_000)
    assert receipt.status is status, receipt
    assert receipt.write_set == () and receipt.events == ()
    assert state(runtime) == before


def test_limits_that_fit(runtime: Runtime) -> None:
    address = deploy(runtime, "big_key")
    assert runtime.call(address, "max_key", sender=SENDER).return_data == b"v"
    assert runtime.call(address, "max_value", sender=SENDER, gas_limit=10**7).ok


def test_memory_bomb_is_capped(runtime: Runtime) -> None:
    address = deploy(runtime, "memory_bomb")
    pages = runtime.call(address, "grow", sender=SENDER, gas_limit=10**8)
    assert struct.unpack("<I", pages.return_data) == (Limits().max_memory_pages,)
    huge = runtime.call(address, "grow_huge", sender=SENDER)
    assert struct.unpack("<i", huge.return_data) == (-1,)


def test_leak_probe_stays_clean(runtime: Runtime) -> None:
    address = deploy(runtime, "leak_probe")
    for method in ("probe", "probe_memory", "probe_global"):
        results = {runtime.call(address, method, sender=SENDER).return_data for _ in range(4)}
        assert results == {b"clean"}, method


def test_nan_is_canonical(runtime: Runtime) -> None:
    address = deploy(runtime, "float_nan")
    assert runtime.call(address, "nan", sender=SENDER).return_data == bytes.fromhex(
        "000000000000f87f"
    )
    assert runtime.call(address, "nan32", sender=SENDER).return_data == bytes.fromhex("0000c07f")


def test_out_of_gas_without_a_trap(runtime: Runtime) -> None:
    address = deploy(runtime, "out_of_gas_no_trap")
    enough = runtime.call(address, "burn", sender=SENDER, gas_limit=100_000)
    assert enough.ok
    short = runtime.call(address, "burn", sender=SENDER, gas_limit=enough.gas_used - 50)
    assert short.status is Status.OUT_OF_GAS
    assert short.gas_used == enough.gas_used - 50


def test_unknown_import_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidContractError, match="not_a_host_function"):
        deploy(runtime, "unknown_import")
