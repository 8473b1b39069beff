"""Hostile and careless contracts: each defence ends the call cleanly and changes no state."""

from __future__ import annotations

import hashlib
import struct

import pytest
import wasmtime

from supervm.layout import STATE_PREFIX
from supervm.vm import InvalidContractError, Limits, Runtime, Status

from .conftest import IMPORTS, wat_contract

SENDER = b"\xbb" * 20

HOSTILE = wat_contract(
    """
  (global $g (mut i32) (i32.const 0))
  (func (export "spin") (loop $l (br $l)))
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "recurse") (drop (call $down (i32.const 0))))
  (func (export "grow")
    (local $pages i32)
    (block $done (loop $l
      (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (local.set $pages (i32.add (local.get $pages) (i32.const 1)))
      (br $l)))
    (i32.store (i32.const 0) (memory.size))
    (call $return (i32.const 0) (i32.const 4)))
  (func (export "grow_huge") (i32.store (i32.const 0) (memory.grow (i32.const 65535)))
    (call $return (i32.const 0) (i32.const 4)))
  (func (export "bad_set_ptr")
    (call $set (i32.const 0xFFFFFFF0) (i32.const 4) (i32.const 0) (i32.const 4)))
  (func (export "bad_get_len") (drop (call $get (i32.const 0) (i32.const -5))))
  (func (export "bad_register_ptr")
    (drop (call $caller)) (call $read_register (i32.const 65534)))
  (func (export "huge_return") (call $return (i32.const 0) (i32.const 0x7FFFFFFF)))
  (func (export "key_256") (call $set (i32.const 0) (i32.const 256) (i32.const 0) (i32.const 1)))
  (func (export "key_257") (call $set (i32.const 0) (i32.const 257) (i32.const 0) (i32.const 1)))
  (func (export "empty_key") (call $set (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1)))
  (func (export "value_too_big")
    (call $set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 65537)))
  (func (export "probe")
    (if (i32.or (i32.load (i32.const 512)) (global.get $g))
      (then (call $return (i32.const 600) (i32.const 5)))
      (else
        (i32.store (i32.const 512) (i32.const 1))
        (global.set $g (i32.const 1))
        (call $return (i32.const 605) (i32.const 5)))))
  (func (export "nan")
    (f64.store (i32.const 0) (f64.div (f64.const 0) (f64.const 0)))
    (call $return (i32.const 0) (i32.const 8)))
  (func (export "too_many_events")
    (local $i i32)
    (loop $l
      (call $emit (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100)))))
""",
    data='(data (i32.const 600) "dirtyclean")',
)


def _state(runtime: Runtime) -> list[tuple[bytes, bytes]]:
    return list(runtime.storage.scan(b""))


@pytest.fixture
def hostile(runtime: Runtime) -> bytes:
    return runtime.deploy(HOSTILE)


def _expect(runtime: Runtime, address: bytes, method: str, status: Status, match: str,
            gas: int = 1_000_000) -> None:  # fmt: skip
    before = _state(runtime)
    receipt = runtime.call(address, method, sender=SENDER, gas_limit=gas)
    assert receipt.status is status, receipt
    assert match in (receipt.error or ""), receipt.error
    assert receipt.write_set == ()
    assert _state(runtime) == before


def test_infinite_loop_stops_at_the_gas_limit(runtime: Runtime, hostile: bytes) -> None:
    _expect(runtime, hostile, "spin", Status.OUT_OF_GAS, "out of gas")
    receipt = runtime.call(hostile, "spin", sender=SENDER, gas_limit=123_456)
    assert receipt.gas_used == 123_456


def test_deep_recursion_traps_cleanly(runtime: Runtime, hostile: bytes) -> None:
    _expect(runtime, hostile, "recurse", Status.TRAPPED, "stack overflow", gas=10**9)
    # Native frame sizes decide the depth reached, so the whole limit is charged.
    assert runtime.call(hostile, "recurse", sender=SENDER, gas_limit=10**9).gas_used == 10**9
    # The instance is still usable afterwards.
    assert runtime.call(hostile, "nan", sender=SENDER).status is Status.OK


def test_memory_growth_is_capped(runtime: Runtime, hostile: bytes) -> None:
    receipt = runtime.call(hostile, "grow", sender=SENDER, gas_limit=10**8)
    assert receipt.status is Status.OK
    pages = struct.unpack("<i", receipt.return_data)[0]
    assert pages * 65536 == Limits().max_memory_pages * 65536
    huge = runtime.call(hostile, "grow_huge", sender=SENDER)
    assert struct.unpack("<i", huge.return_data)[0] == -1
    # After growth the next call starts from a fresh instance with the original memory.
    again = runtime.call(hostile, "grow", sender=SENDER, gas_limit=10**8)
    assert again.return_data == receipt.return_data


@pytest.mark.parametrize(
    ("method", "match"),
    [
        ("bad_set_ptr", "out of bounds"),
        ("bad_get_len", "storage keys must not be empty"),
        ("bad_register_ptr", "out of bounds"),
        ("huge_return", "exceeds the limit"),
        ("key_257", "key of 257 bytes exceeds the limit of 256"),
        ("empty_key", "must not be empty"),
        ("value_too_big", "value of 65537 bytes exceeds the limit of 65536"),
        ("too_many_events", "more than 64 events"),
    ],
)
def test_host_call_misuse_traps(runtime: Runtime, hostile: bytes, method: str, match: str) -> None:
    _expect(runtime, hostile, method, Status.TRAPPED, match)


def test_largest_key_fits_every_back_end(runtime: Runtime, hostile: bytes) -> None:
    receipt = runtime.call(hostile, "key_256", sender=SENDER)
    assert receipt.status is Status.OK
    ((key, _),) = receipt.write_set
    assert len(key) == len(STATE_PREFIX) + 20 + 256 <= 511


def test_no_call_sees_what_an_earlier_call_left(runtime: Runtime, hostile: bytes) -> None:
    results = [runtime.call(hostile, "probe", sender=SENDER).return_data for _ in range(5)]
    assert results == [b"clean"] * 5


def test_table_writes_do_not_leak_between_calls(runtime: Runtime) -> None:
    code = bytes(
        wasmtime.wat2wasm(
            f"""(module {IMPORTS}
              (memory (export "memory") 1)
              (table 2 funcref)
              (func $one (result i32) (i32.const 1))
              (elem (i32.const 1) $one)
              (func (export "probe")
                (if (i32.eqz (ref.is_null (table.get (i32.const 0))))
                  (then (i32.store (i32.const 0) (i32.const 1)))
                  (else (table.set (i32.const 0) (table.get (i32.const 1)))
                        (i32.store (i32.const 0) (i32.const 0))))
                (call $return (i32.const 0) (i32.const 4))))"""
        )
    )
    address = runtime.deploy(code)
    results = [runtime.call(address, "probe", sender=SENDER).return_data for _ in range(3)]
    assert results == [b"\0\0\0\0"] * 3


def test_nan_is_canonical(runtime: Runtime, hostile: bytes) -> None:
    receipt = runtime.call(hostile, "nan", sender=SENDER)
    assert receipt.return_data == struct.pack("<Q", 0x7FF8000000000000)


# -- deploy-time checks ---------------------------------------------------------------


def test_unknown_import_is_refused_by_name(runtime: Runtime) -> None:
    code = bytes(
        wasmtime.wat2wasm(
            '(module (import "env" "launch_missiles" (func (param i32)))'
            ' (memory (export "memory") 1))'
        )
    )
    with pytest.raises(InvalidContractError, match=r"env\.launch_missiles"):
        runtime.deploy(code)
    wrong_module = bytes(
        wasmtime.wat2wasm('(module (import "wasi" "fd_write" (func)) (memory (export "memory") 1))')
    )
    with pytest.raises(InvalidContractError, match=r"wasi\.fd_write"):
        runtime.deploy(wrong_module)
    wrong_type = bytes(
        wasmtime.wat2wasm(
            '(module (import "env" "storage_get" (func (param i64) (result i32)))'
            ' (memory (export "memory") 1))'
        )
    )
    with pytest.raises(InvalidContractError, match="signature"):
        runtime.deploy(wrong_type)
    assert _state(runtime) == []


@pytest.mark.parametrize(
    ("code", "match"),
    [
        (b"", "not valid WebAssembly"),
        (b"\0asm\x01\0\0\0\x01\xff", "not valid WebAssembly"),
        (b"definitely not wasm", "not valid WebAssembly"),
        (bytes(wasmtime.wat2wasm("(module)")), "must export its linear memory"),
        (bytes(wasmtime.wat2wasm('(module (memory (export "memory") 100))')), "pages"),
        (
            bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (table 5000 funcref))')),
            "table",
        ),
        (
            bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1 1 shared))')),
            "threads must be enabled",
        ),
        (
            bytes(wasmtime.wat2wasm(
                '(module (memory (export "memory") 1) (func (drop (i32x4.splat (i32.const 0)))))'
            )),
            "SIMD support is not enabled",
        ),
    ],
    ids=["empty", "truncated", "garbage", "no-memory", "memory-too-big", "table-too-big",
         "threads", "simd"],
)  # fmt: skip
def test_invalid_code_is_refused(runtime: Runtime, code: bytes, match: str) -> None:
    with pytest.raises(InvalidContractError, match=match):
        runtime.deploy(code)
    assert _state(runtime) == []


def test_code_size_limit(runtime: Runtime) -> None:
    small = Runtime(runtime.storage, limits=Limits(max_code_size=100))
    with pytest.raises(InvalidContractError, match="exceeds the limit of 100"):
        small.deploy(HOSTILE)
    with pytest.raises(TypeError):
        runtime.deploy("not bytes")  # type: ignore[arg-type]


def test_sha256_plugin_host_function(runtime: Runtime) -> None:
    code = bytes(
        wasmtime.wat2wasm(
            f"""(module {IMPORTS}
              (import "env" "sha256" (func $sha (param i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "hash")
                (call $read_register (i32.const 0) (drop (call $input)))
                (drop (call $sha (i32.const 0) (call $input)))
                (call $read_register (i32.const 1024))
                (call $return (i32.const 1024) (i32.const 32))))"""
        )
    )
    address = runtime.deploy(code)
    receipt = runtime.call(address, "hash", b"abc", sender=SENDER)
    assert receipt.return_data == hashlib.sha256(b"abc").digest()
    bare = Runtime(extra_host_functions=[])
    with pytest.raises(InvalidContractError, match=r"env\.sha256"):
        bare.deploy(code)
