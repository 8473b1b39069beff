"""VM benchmark: the full runtime against a bare unchecked loop, and fast vs public calls.

    python -m bench.vm [--transfers 20000] [--accounts 1000] [--rounds 480]
                       [--processes 16] [--rep-ms 2] [--json vm.json]

1. Token transfers through ``Runtime.call`` on the memory store -- gas metered,
   read and write sets recorded, memory and globals restored before every call,
   writes committed -- against a bare loop calling the same compiled contract
   through ``wasmtime_func_call_unchecked`` with minimal host functions over a
   plain dict (fuel set per call, nothing else). The contract, the accounts, the
   mint and the transfers come from ``supervm.chain.workload`` (``--transfers``
   random transfers among ``--accounts`` accounts, none oversized, so every one
   succeeds), cycled through in the same order on both sides. Figure: Runtime
   throughput / bare-loop throughput.
2. One call into wasm and one host call (a method making 1,000 host calls; the
   figure is per host call): the fast path's primitive (set fuel,
   ``wasmtime_func_call_unchecked``, read fuel) against wasmtime-py's public API
   (``Func.__call__`` on one store and instance). Figure: speed-up of fast over
   public.
3. ``FastPath.call`` of an empty method (instance reset, metering, outcome)
   against the bare primitive of 2. Figure: time ratio; its per-call time is the
   call path's fixed cost.

Measured with bench/harness.py in ``--processes`` worker processes (these
microsecond-scale ratios move by several per cent from one process to the
next): repetitions of each side interleaved in pairs (``--rounds`` pairs per
comparison over all processes, each repetition about ``--rep-ms`` ms), the
figure being the median of the per-pair ratios with its 95% confidence interval.
``--rounds`` used to be the number of best-of rounds. 2. and 3. reach into the
call paths' internals (``Runtime.path``, its instances and the fast path's
current-host slot, found in whichever module defines the path's class).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from collections.abc import Callable
from ctypes import addressof, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from bench.harness import Cycle, Pair, Session, Side, add_arguments, say
from supervm.chain import workload
from supervm.memory import MemoryStorage
from supervm.vm import Runtime
from supervm.vm._capi import RAW, RAW_CALLBACK, keep_alive
from supervm.vm.abi import Limits
from supervm.vm.engine import make_engine

#: Seed of the workload's transfers.
WORKLOAD_SEED = 1


@dataclass(frozen=True)
class Transfers:
    """The workload: token code, accounts, and transfers as (sender, input, gas) triples."""

    code: bytes
    users: list[bytes]
    txs: list[tuple[bytes, bytes, int]]

    @classmethod
    def make(cls, count: int, accounts: int, token: bytes = b"\0" * 20) -> Transfers:
        users = workload.accounts(accounts)
        txs = workload.transfers(token, users, count, WORKLOAD_SEED, oversized=0.0)
        return cls(workload.token_code(), users, [(t.sender, t.input, t.gas_limit) for t in txs])

    def mints(self, token: bytes) -> list[tuple[bytes, bytes]]:
        """(sender, input) of the mint to every account, as the workload's mint block has it."""
        block = workload.mint_block(1, token, self.users)
        return [(tx.sender, tx.input) for tx in block.transactions]


# -- 1a. the full runtime ---------------------------------------------------------------


def runtime_side(work: Transfers) -> Side:
    """Transfers through ``Runtime.call`` on a memory store."""
    runtime = Runtime(MemoryStorage())
    token = runtime.deploy(work.code)
    for sender, data in work.mints(token):
        receipt = runtime.call(token, "mint", data, sender=sender)
        assert receipt.ok, receipt
    call, cycle = runtime.call, Cycle(work.txs)

    def prepare(n: int) -> Callable[[], object]:
        txs = cycle.take(n)

        def body() -> object:
            receipt = None
            for sender, data, gas in txs:
                receipt = call(token, "transfer", data, sender=sender, gas_limit=gas)
            return receipt

        return body

    def check(receipt: Any) -> None:
        assert receipt.ok, receipt

    return Side("Runtime.call (gas, read/write sets, reset, commit)", prepare, check)


# -- 1b. the bare loop --------------------------------------------------------------------


class BareLoop:
    """The token contract on the unchecked path with dict-backed host functions."""

    def __init__(self, code: bytes) -> None:
        self.engine = make_engine(Limits())
        self.linker = wasmtime.Linker(self.engine)
        self.state: dict[bytes, bytes] = {}
        self.register = b""
        self.input = b""
        self.sender = b""
        self.base = 0
        module = wasmtime.Module(self.engine, code)
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

        def revert(args: int) -> int:  # the bare loop expects no reverts: trap
            raise RuntimeError("revert")

        self._define("read_register", "i32", "", read_register)
        self._define("input", "", "i32", lambda args: put(args, self.input))
        self._define("caller", "", "i32", lambda args: put(args, self.sender))
        self._define("storage_get", "i32 i32", "i32", storage_get)
        self._define("storage_set", "i32 i32 i32 i32", "", storage_set)
        self._define("storage_delete", "i32 i32", "", storage_delete)
        self._define("emit_event", "i32 i32 i32 i32", "", noop)
        self._define("return_data", "i32 i32", "", noop)
        self._define("revert", "i32 i32", "", revert)

    def call(self, method: str, sender: bytes, data: bytes, gas: int) -> bool:
        self.sender, self.input = sender, data
        RAW.context_set_fuel(self.ctx, gas)
        err = RAW.func_call_unchecked(
            self.ctx, self.funcs[method], addressof(self.args), 1, addressof(self.trap)
        )
        RAW.context_get_fuel(self.ctx, addressof(self.fuel))
        return not err and not self.trap.value


def bare_side(work: Transfers) -> Side:
    """The same transfers through the bare unchecked loop over a dict."""
    bare = BareLoop(work.code)
    for sender, data in work.mints(b"\0" * 20):
        assert bare.call("mint", sender, data, workload.TRANSFER_GAS)
    call, cycle = bare.call, Cycle(work.txs)

    def prepare(n: int) -> Callable[[], object]:
        txs = cycle.take(n)

        def body() -> object:
            ok = True
            for sender, data, gas in txs:
                ok = call("transfer", sender, data, gas)
            return ok

        return body

    def check(ok: Any) -> None:
        assert ok, "bare transfer failed"

    return Side("bare unchecked loop, dict state", prepare, check)


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


def _micro(runtime: Runtime) -> tuple[Any, Any]:
    """The micro contract compiled in ``runtime``, and a host for calling it."""
    address = runtime.deploy(MICRO)
    contract = runtime._contract(address, None)
    assert contract is not None
    host = runtime.path.host_type(
        MemoryStorage(), b"c" + address, address, b"s", b"", 1, 1, runtime.limits
    )
    return contract, host


def _current_host_slot(runtime: Runtime) -> Any:
    """The thread-local the fast path's host functions find the current host in."""
    return sys.modules[type(runtime.path).__module__]._current


def fast_primitive_side(runtime: Runtime, method: str) -> Side:
    """The fast path's primitive: set fuel, ``wasmtime_func_call_unchecked``, read fuel."""
    contract, host = _micro(runtime)
    path: Any = runtime.path
    path.call(contract, method, host, 10**9)  # instantiate
    instance = path._instance(contract)
    func = instance.func(method)
    ctx, args, trap, fuel_addr = (
        instance.ctx, instance.args_addr, instance.trap_addr, instance.fuel_addr,
    )  # fmt: skip
    call, set_fuel, get_fuel = RAW.func_call_unchecked, RAW.context_set_fuel, RAW.context_get_fuel
    slot = _current_host_slot(runtime)

    def prepare(n: int) -> Callable[[], object]:
        slot.host = host  # FastPath.call clears it after each call it makes

        def body() -> object:
            err = 0
            for _ in range(n):
                set_fuel(ctx, 10**9)
                err = call(ctx, func, args, 1, trap)
                get_fuel(ctx, fuel_addr)
            return err

        return body

    def check(err: Any) -> None:
        assert not err and not instance.trap.value, "fast call failed"

    return Side("fast path: set fuel, wasmtime_func_call_unchecked, read fuel", prepare, check)


def public_side(runtime: Runtime, method: str) -> Side:
    """The public path's primitive: one store, one instance, ``Func.__call__``."""
    contract, host = _micro(runtime)
    path: Any = runtime.path
    store = wasmtime.Store(runtime.engine)
    instance = path.linker.instantiate(store, contract.module)
    func: Any = instance.exports(store)[method]
    host.store, host.memory = store, instance.exports(store)["memory"]
    store.set_fuel(10**15)

    def prepare(n: int) -> Callable[[], object]:
        path._local.host = host

        def body() -> None:
            for _ in range(n):
                func(store)

        return body

    return Side("public API: Func.__call__", prepare)


# -- 3. FastPath.call -----------------------------------------------------------------


def fast_call_side(runtime: Runtime) -> Side:
    """``FastPath.call`` of the empty method: instance reset, metering, outcome."""
    contract, host = _micro(runtime)
    call = runtime.path.call

    def prepare(n: int) -> Callable[[], object]:
        def body() -> object:
            outcome = None
            for _ in range(n):
                outcome = call(contract, "noop", host, 10**9)
            return outcome

        return body

    def check(outcome: Any) -> None:
        assert outcome is not None and outcome[1] is None, outcome  # no trap

    return Side("FastPath.call (reset memory and globals, metering, outcome)", prepare, check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20000, help="distinct transfers")
    parser.add_argument("--accounts", type=int, default=1000)
    add_arguments(parser, rounds=480, rep_ms=2.0, budget=16.0, processes=16)
    args = parser.parse_args(argv)
    session = Session("vm", "bench.vm", args, "VM")
    if not session.spawn(argv):
        say(f"token transfers ({args.transfers:,} among {args.accounts:,} accounts)")
        work = Transfers.make(args.transfers, args.accounts)
        fast_rt, public_rt = Runtime(fast=True), Runtime(fast=False)
        session.run([
            Pair("token transfers: Runtime.call / bare unchecked loop (throughput)",
                 runtime_side(work), bare_side(work), kind="speed", target=">= 0.6x", op="tx"),
            Pair("call into wasm: fast path / public API (speed-up)",
                 fast_primitive_side(fast_rt, "noop"), public_side(public_rt, "noop"),
                 kind="speed", target=">= 5x", op="call"),
            Pair("host call: fast path / public API (speed-up)",
                 fast_primitive_side(fast_rt, "host_calls"), public_side(public_rt, "host_calls"),
                 kind="speed", target=">= 5x", ops_per_unit=1000, op="host call"),
            Pair("FastPath.call of an empty method / bare unchecked call (time)",
                 fast_call_side(fast_rt), fast_primitive_side(fast_rt, "noop"), kind="time",
                 op="call"),
        ])  # fmt: skip
    session.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
