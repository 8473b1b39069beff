"""Runtime behaviour on both call paths: receipts, atomicity, isolation, gas."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
import wasmtime

from supervm.layout import STATE_PREFIX
from supervm.vm import Runtime, Status

from .conftest import wat_contract

SENDER = b"\xaa" * 20

# increment(): count += 1 under key "count"; returns the new count.
COUNTER = wat_contract(
    """
  (func (export "increment")
    (i64.store (i32.const 16) (i64.const 0))
    (if (i32.eq (call $get (i32.const 0) (i32.const 5)) (i32.const 8))
      (then (call $read_register (i32.const 16))))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (call $set (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
    (call $return (i32.const 16) (i32.const 8)))
  (func (export "write_then_revert")
    (call $set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))
    (call $revert (i32.const 32) (i32.const 4)))
  (func (export "write_then_trap")
    (call $set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))
    unreachable)
  (func (export "write_then_spin")
    (call $set (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 5))
    (loop $l (br $l)))
  (func (export "echo")
    (call $read_register (i32.const 1024) (drop (call $input)))
    (call $return (i32.const 1024) (call $input)))
  (func (export "whoami")
    (call $return (i32.const 2048) (call $caller))
    (call $read_register (i32.const 2048))
    (call $return (i32.const 2048) (call $caller)))
  (func (export "event")
    (call $emit (i32.const 0) (i32.const 5) (i32.const 32) (i32.const 4)))
""",
    data='(data (i32.const 0) "count") (data (i32.const 32) "nope")',
)


def count_of(runtime: Runtime, address: bytes) -> int | None:
    raw = runtime.storage.get(STATE_PREFIX + address + b"count")
    return None if raw is None else struct.unpack("<Q", raw)[0]


def test_counter_increments_and_records_sets(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    first = runtime.call(address, "increment", sender=SENDER)
    second = runtime.call(address, "increment", sender=SENDER)
    assert first.status is Status.OK and second.status is Status.OK
    assert struct.unpack("<Q", second.return_data) == (2,)
    key = STATE_PREFIX + address + b"count"
    assert first.read_set == (key,)
    assert second.write_set == ((key, struct.pack("<Q", 2)),)
    assert count_of(runtime, address) == 2
    assert 0 < first.gas_used < 10_000


@pytest.mark.parametrize(
    ("method", "status", "error"),
    [
        ("write_then_revert", Status.REVERTED, "nope"),
        ("write_then_trap", Status.TRAPPED, "wasm trap: unreachable code reached"),
        ("write_then_spin", Status.OUT_OF_GAS, "out of gas"),
    ],
)
def test_failed_calls_leave_no_write(
    runtime: Runtime, method: str, status: Status, error: str
) -> None:
    address = runtime.deploy(COUNTER)
    runtime.call(address, "increment", sender=SENDER)
    before = list(runtime.storage.scan(b""))
    receipt = runtime.call(address, method, sender=SENDER, gas_limit=200_000)
    assert receipt.status is status
    assert receipt.error == error
    assert receipt.write_set == ()
    assert list(runtime.storage.scan(b"")) == before
    if status is Status.OUT_OF_GAS:
        assert receipt.gas_used == 200_000


def test_input_caller_and_events(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    assert runtime.call(address, "echo", b"hello", sender=SENDER).return_data == b"hello"
    assert runtime.call(address, "whoami", sender=b"bob").return_data == b"bob"
    receipt = runtime.call(address, "event", sender=SENDER)
    assert [(e.contract, e.topic, e.data) for e in receipt.events] == [(address, b"count", b"nope")]


def test_fast_and_public_paths_agree(both_paths: Callable[[], tuple[Runtime, Runtime]]) -> None:
    fast, public = both_paths()
    receipts = []
    for runtime in (fast, public):
        address = runtime.deploy(COUNTER)
        calls = [("increment", b""), ("echo", b"x" * 100), ("write_then_revert", b""),
                 ("write_then_trap", b""), ("write_then_spin", b""), ("event", b""),
                 ("increment", b"")]  # fmt: skip
        receipts.append(
            [
                runtime.call(address, m, i, sender=SENDER, gas_limit=50_000).encode()
                for m, i in calls
            ]
        )
    assert receipts[0] == receipts[1]


def test_gas_limit_is_exact(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    probe = runtime.call(address, "echo", b"abc", sender=SENDER, commit=False)
    used = probe.gas_used
    exact = runtime.call(address, "echo", b"abc", sender=SENDER, gas_limit=used)
    assert exact.status is Status.OUT_OF_GAS
    assert exact.gas_used == used
    enough = runtime.call(address, "echo", b"abc", sender=SENDER, gas_limit=used + 1)
    assert enough.status is Status.OK
    assert enough.gas_used == used


def test_same_call_same_gas_every_time(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    runtime.call(address, "increment", sender=SENDER)
    gas = {runtime.call(address, "increment", sender=SENDER).gas_used for _ in range(20)}
    assert len(gas) == 1


def test_rejected_calls(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    missing = runtime.call(b"\x01" * 20, "increment", sender=SENDER)
    assert missing.status is Status.REJECTED and "no contract" in (missing.error or "")
    no_method = runtime.call(address, "nope", sender=SENDER)
    assert no_method.status is Status.REJECTED and "no method 'nope'" in (no_method.error or "")
    big_input = runtime.call(address, "echo", b"x" * (64 * 1024 + 1), sender=SENDER)
    assert big_input.status is Status.REJECTED
    no_sender = runtime.call(address, "echo", sender=b"")
    assert no_sender.status is Status.REJECTED
    assert runtime.call(address, "echo", sender=SENDER, gas_limit=10).status is Status.OUT_OF_GAS
    with pytest.raises(TypeError):
        runtime.call("addr", "echo", sender=SENDER)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        runtime.call(address, "echo", "text", sender=SENDER)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        runtime.call(address, "echo", sender=SENDER, gas_limit=-1)


def test_execute_runs_code_without_deploying(runtime: Runtime) -> None:
    receipt = runtime.execute(COUNTER, "increment", 7, 1000)
    assert receipt.status is Status.OK
    assert struct.unpack("<Q", receipt.return_data) == (1,)
    assert not list(runtime.storage.scan(b"m/"))
    again = runtime.execute(COUNTER, "increment")
    assert struct.unpack("<Q", again.return_data) == (2,)


def test_deploy_is_idempotent_and_salted(runtime: Runtime) -> None:
    first = runtime.deploy(COUNTER)
    assert runtime.deploy(COUNTER) == first
    other = runtime.deploy(COUNTER, salt=b"2")
    assert other != first and len(other) == 20
    runtime.call(first, "increment", sender=SENDER)
    assert count_of(runtime, first) == 1
    assert count_of(runtime, other) is None
    assert runtime.contract_code(first) == COUNTER


def test_code_may_be_any_bytes_like(runtime: Runtime) -> None:
    wat = '(module (memory (export "memory") 1) (func (export "noop")))'
    built = wasmtime.wat2wasm(wat)
    assert isinstance(built, bytearray)  # what wasmtime itself hands out
    address = runtime.deploy(built)
    assert address == runtime.deploy(bytes(built)) == runtime.deploy(memoryview(built))
    assert runtime.compile(built).code_hash == runtime.compile(bytes(built)).code_hash
    stored = runtime.contract_code(address)
    assert type(stored) is bytes and stored == built
    assert runtime.call(address, "noop", sender=SENDER).ok
    assert runtime.execute(bytearray(COUNTER), "increment").ok
    assert runtime.execute(memoryview(COUNTER), "increment").return_data == struct.pack("<Q", 2)


@pytest.mark.parametrize("code", ["(module)", [0, 97, 115, 109], None, 42])
def test_code_that_is_not_bytes_like_is_refused(runtime: Runtime, code: object) -> None:
    message = f"contract code must be bytes, bytearray or memoryview, not {type(code).__name__}"
    with pytest.raises(TypeError, match=message):
        runtime.deploy(code)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        runtime.compile(code)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        runtime.execute(code, "increment")  # type: ignore[arg-type]
