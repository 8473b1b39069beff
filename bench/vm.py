"""VM benchmark: the full runtime against a bare unchecked loop, and fast vs public calls.

    python -m bench.vm [--transfers 20000] [--rounds 5]

1. Token transfers (examples/contracts/token.wasm) through ``Runtime.call`` on the
   memory store -- gas metered, read and write sets recorded, memory and globals
   restored before every call, writes committed -- against a bare loop calling
   the same compiled contract through ``wasmtime_func_call_unchecked`` with
   minimal host functions over a plain dict (fuel set per call, nothing else).
2. One call into wasm and one host call: the fast (unchecked C-API) path against
   wasmtime-py's public API.

Figures are best-of-rounds in one process; the report gives ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import struct
import sys
import time
from collections.abc import Callable
from ctypes import addressof, c_uint64, c_void_p
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from supervm.memory import MemoryStorage
from supervm.vm import Runtime
from supervm.vm._capi import RAW, RAW_CALLBACK, keep_alive
from supervm.vm.abi import Limits
from supervm.vm.engine import make_engine

ROOT = Path(__file__).resolve().parent.parent
TOKEN = (ROOT / "examples" / "contracts" / "token.wasm").read_bytes()
GAS = 1_000_000


def accounts(count: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * 5 for i in range(1, count + 1)]


def transfers(count: int, users: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(sender, input) pairs: each user sends 1 unit to the next one."""
    out = []
    for i in range(count):
        sender = users[i % len(users)]
        to = users[(i * 7 + 1) % len(users)]
        if to == sender:
            to = users[(i + 1) % len(users)]
        out.append((sender, to + struct.pack("<Q", 1)))
    return out


# -- 1a. the full runtime ---------------------------------------------------------------


def full_runtime(txs: list[tuple[bytes, bytes]], users: list[bytes]) -> float:
    runtime = Runtime(MemoryStorage())
    token = runtime.deploy(TOKEN)
    minter = users[0]
    for user in users:
        receipt = runtime.call(token, "mint", user + struct.pack("<Q", 10**9), sender=minter)
        assert receipt.ok, receipt
    call = runtime.call
    start = time.perf_counter()
    for sender, data in txs:
        call(token, "transfer", data, sender=sender, gas_limit=GAS)
    elapsed = time.perf_counter() - start
    last = call(token, "transfer", txs[0][1], sender=txs[0][0], gas_limit=GAS)
    assert last.ok, last
    return elapsed


# -- 1b. the bare loop --------------------------------------------------------------------


class BareLoop:
    """The token contract on the unchecked path with dict-backed host functions."""

    def __init__(self) -> None:
        self.engine = make_engine(Limits())
        self.linker = wasmtime.Linker(self.engine)
        self.state: dict[bytes, bytes] = {}
        self.register = b""
        self.input = b""
        self.sender = b""
        self.base = 0
        module = wasmtime.Module(self.engine, TOKEN)
        self._define_all()
        pre = self.linker.instantiate_pre(module)
        self.store = RAW.store_new(addressof(self.engine.ptr().contents), None, None)
        self.ctx = RAW.store_context(self.store)
        self.instance = ffi.wasmtime_instance_t()
        trap = c_void_p()
        err = RAW.instance_pre_instantiate(
            addressof(pre.ptr().contents), self.ctx, addressof(self.instance), addressof(trap)
        )
        assert not err and not trap.value
        self.externs: list[Any] = []
        memory = self._export("memory").of.memory
        self.base = RAW.memory_data(self.ctx, addressof(memory))
        self.funcs = {name: addressof(self._export(name).of.func) for name in ("mint", "transfer")}
        self.args = (ffi.wasmtime_val_raw_t * 1)()
        self.trap = c_void_p()
        self.fuel = c_uint64()

    def _export(self, name: str) -> Any:
        extern = ffi.wasmtime_extern_t()
        data = name.encode()
        found = RAW.instance_export_get(
            self.ctx, addressof(self.instance), data, len(data), addressof(extern)
        )
        assert found, name
        self.externs.append(extern)
        return extern

    def _define(self, name: str, params: str, results: str, fn: Callable[[int], int]) -> None:
        def call(env: int, caller: int, args: int, count: int) -> int:
            try:
                return fn(args)
            except BaseException as exc:  # nothing may cross into C
                message = repr(exc).encode()
                result: int = RAW.trap_new(message, len(message))
                return result

        callback = RAW_CALLBACK(call)
        keep_alive(callback)
        kinds = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}
        functype = wasmtime.FuncType(
            [kinds[t]() for t in params.split()], [kinds[t]() for t in results.split()]
        )
        module, field = b"env", name.encode()
        err = ffi.wasmtime_linker_define_func_unchecked(
            self.linker.ptr(), module, 3, field, len(field), functype.ptr(),
            ctypes.cast(callback, ffi.wasmtime_func_unchecked_callback_t), None,
            ctypes.cast(None, ctypes.CFUNCTYPE(None, c_void_p)),  # type: ignore[arg-type]
        )  # fmt: skip
        assert not err

    def _define_all(self) -> None:
        i32 = ctypes.c_int32
        string_at, memmove = ctypes.string_at, ctypes.memmove

        def arg(args: int, n: int) -> int:
            return i32.from_address(args + 16 * n).value

        def put(args: int, data: bytes) -> int:
            self.register = data
            i32.from_address(args).value = len(data)
            return 0

        def read_register(args: int) -> int:
            memmove(self.base + arg(args, 0), self.register, len(self.register))
            return 0

        def storage_get(args: int) -> int:
            value = self.state.get(string_at(self.base + arg(args, 0), arg(args, 1)))
            if value is None:
                i32.from_address(args).value = -1
                return 0
            return put(args, value)

        def storage_set(args: int) -> int:
            base = self.base
            key = string_at(base + arg(args, 0), arg(args, 1))
            self.state[key] = string_at(base + arg(args, 2), arg(args, 3))
            return 0

        def storage_delete(args: int) -> int:
            self.state.pop(string_at(self.base + arg(args, 0), arg(args, 1)), None)
            return 0

        def noop(args: int) -> int:
            return 0

        self._define("read_register", "i32", "", read_register)
        self._define("input", "", "i32", lambda args: put(args, self.input))
        self._define("caller", "", "i32", lambda args: put(args, self.sender))
        self._define("storage_get", "i32 i32", "i32", storage_get)
        self._define("storage_set", "i32 i32 i32 i32", "", storage_set)
        self._define("storage_delete", "i32 i32", "", storage_delete)
        self._define("emit_event", "i32 i32 i32 i32", "", noop)
        self._define("return_data", "i32 i32", "", noop)
        self._define("revert", "i32 i32", "", lambda args: 1 / 0)

    def call(self, method: str, sender: bytes, data: bytes) -> bool:
        self.sender, self.input = sender, data
        RAW.context_set_fuel(self.ctx, GAS)
        err = RAW.func_call_unchecked(
            self.ctx, self.funcs[method], addressof(self.args), 1, addressof(self.trap)
        )
        RAW.context_get_fuel(self.ctx, addressof(self.fuel))
        return not err and not self.trap.value


def bare_loop(txs: list[tuple[bytes, bytes]], users: list[bytes]) -> float:
    bare = BareLoop()
    for user in users:
        assert bare.call("mint", users[0], user + struct.pack("<Q", 10**9))
    call = bare.call
    start = time.perf_counter()
    for sender, data in txs:
        call("transfer", sender, data)
    elapsed = time.perf_counter() - start
    assert bare.call("transfer", txs[0][0], txs[0][1])
    return elapsed


# -- 2. fast vs public -------------------------------------------------------------------

MICRO = bytes(
    wasmtime.wat2wasm(
        """(module
          (import "env" "block_height" (func $h (result i64)))
          (memory (export "memory") 1)
          (func (export "noop"))
          (func (export "host_calls")
            (local $i i32)
            (loop $l
              (drop (call $h))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))))"""
    )
)


def per_call(runtime: Runtime, method: str, count: int) -> float:
    """Seconds per call of ``method`` straight through the runtime's call path."""
    address = runtime.deploy(MICRO)
    contract = runtime._contract(address)
    assert contract is not None
    path = runtime.path
    host = path.new_host(
        view=MemoryStorage(), namespace=b"c" + address, address=address, sender=b"s",
        input=b"", block_height=1, block_timestamp=1, limits=runtime.limits,
    )  # fmt: skip
    if path.name == "public":
        # The public path's own primitive: one store, one instance, Func.__call__.
        store = wasmtime.Store(runtime.engine)
        instance = path.linker.instantiate(store, contract.module)  # type: ignore[union-attr]
        func: Any = instance.exports(store)[method]
        host.store, host.memory = store, instance.exports(store)["memory"]  # type: ignore[attr-defined]
        path._local.host = host  # type: ignore[union-attr]
        store.set_fuel(10**12)
        start = time.perf_counter()
        for _ in range(count):
            func(store)
        return (time.perf_counter() - start) / count
    # The fast path's primitive: set fuel, wasmtime_func_call_unchecked, read fuel.
    path.call(contract, method, host, 10**9)  # instantiate
    instance = path._instance(contract)  # type: ignore[union-attr]
    func = instance.func(method)
    ctx, args, trap = instance.ctx, instance.args_addr, instance.trap_addr
    fuel_addr = instance.fuel_addr
    call, set_fuel, get_fuel = RAW.func_call_unchecked, RAW.context_set_fuel, RAW.context_get_fuel
    import supervm.vm.fast_path as fast_module

    fast_module._current.host = host
    start = time.perf_counter()
    for _ in range(count):
        set_fuel(ctx, 10**9)
        call(ctx, func, args, 1, trap)
        get_fuel(ctx, fuel_addr)
    elapsed = (time.perf_counter() - start) / count
    fast_module._current.host = None
    return elapsed


def full_call_overhead(runtime: Runtime, count: int) -> float:
    """Seconds per ``FastPath.call`` of an empty method: instance reset, metering, outcome."""
    address = runtime.deploy(MICRO)
    contract = runtime._contract(address)
    assert contract is not None
    host = runtime.path.new_host(
        view=MemoryStorage(), namespace=b"c" + address, address=address, sender=b"s",
        input=b"", block_height=1, block_timestamp=1, limits=runtime.limits,
    )  # fmt: skip
    call = runtime.path.call
    start = time.perf_counter()
    for _ in range(count):
        call(contract, "noop", host, 10**9)
    return (time.perf_counter() - start) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    users = accounts(args.accounts)
    txs = transfers(args.transfers, users)
    full = bare = float("inf")
    for _ in range(args.rounds):
        bare = min(bare, bare_loop(txs, users))
        full = min(full, full_runtime(txs, users))
    n = len(txs)
    print("Token transfers (memory store)\n")
    print("| path | tx/s |")
    print("| --- | --- |")
    print(f"| bare unchecked loop, dict state | {n / bare:,.0f} |")
    print(f"| Runtime.call (gas, read/write sets, reset, commit) | {n / full:,.0f} |")
    print(f"\nfull path / bare loop: {bare / full:.2f} (target >= 0.6)\n")

    fast_rt, public_rt = Runtime(fast=True), Runtime(fast=False)
    results = {}
    cases = (("call into wasm", "noop", 20000), ("host call", "host_calls", 300))
    for name, method, count in cases:
        fast = min(per_call(fast_rt, method, count) for _ in range(args.rounds))
        public = min(per_call(public_rt, method, count) for _ in range(args.rounds))
        if method == "host_calls":
            fast, public = fast / 1000, public / 1000
        results[name] = (fast, public)
    print("| operation | fast path (us) | public API (us) | speed-up |")
    print("| --- | --- | --- | --- |")
    for name, (fast, public) in results.items():
        print(f"| {name} | {fast * 1e6:.2f} | {public * 1e6:.2f} | {public / fast:.1f}x |")
    print("\n(target: fast path >= 5x faster)")
    overhead = min(full_call_overhead(fast_rt, 20000) for _ in range(args.rounds))
    print(
        f"\nFastPath.call of an empty method (reset memory and globals, metering): "
        f"{overhead * 1e6:.2f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
