"""Hot path: wasmtime's unchecked C API.

Calls go through ``wasmtime_func_call_unchecked`` and host functions are
defined with ``wasmtime_linker_define_func_unchecked``: arguments and results
travel in one raw ``wasmtime_val_raw_t`` array instead of being type-checked
and boxed as wasmtime-py's public API does (:mod:`supervm.vm.public_path`, the
fallback). The path keeps one instance per contract and thread and, before each
call, restores linear memory and every global from the image taken right after
instantiation; it makes a fresh instance instead when that would not be enough
(the memory grew, or the module can change a table) or when asked to
(``reuse_instances=False``). Either way no call sees what an earlier one left.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import weakref
from collections.abc import Callable
from ctypes import addressof, c_uint64, c_void_p
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from supervm.vm import _capi
from supervm.vm._capi import RAW, RAW_CALLBACK, VAL_RAW_SIZE, keep_alive
from supervm.vm.abi import HostFunctionSpec, Limits
from supervm.vm.callpath import CallOutcome, trap_name
from supervm.vm.engine import WASM_PAGE_SIZE, CompiledContract, functype
from supervm.vm.host import Host, HostError, HostFunction

__all__ = ["FastPath", "define_unchecked"]

_SLOT = {"i32": "i12x", "i64": "q8x", "f32": "f12x", "f64": "d8x"}
_current = threading.local()


class _FastHost(Host):
    """Guest memory through a ctypes view at the instance's fixed base; fuel via the C API."""

    ctx: int = 0
    base: int = 0
    size: int = 0
    mem: int = 0
    mem_view: Any = None
    fuel: Any = None
    fuel_addr: int = 0

    def _grown(self, ptr: int, length: int) -> Any:
        """Re-read the memory size (it may have grown); HostError if still out of bounds."""
        size = RAW.memory_data_size(self.ctx, self.mem)
        if ptr < 0 or length < 0 or ptr + length > size:
            raise HostError(
                f"guest memory access out of bounds: {length} bytes at {ptr} "
                f"(memory is {size} bytes)"
            )
        self.size = size
        self.mem_view = (ctypes.c_char * size).from_address(self.base)
        return self.mem_view

    def read(self, ptr: int, length: int) -> bytes:
        view = self.mem_view
        if ptr < 0 or length < 0 or ptr + length > self.size:
            view = self._grown(ptr, length)
        data: bytes = view[ptr : ptr + length]
        return data

    def write(self, ptr: int, data: bytes) -> None:
        view = self.mem_view
        end = ptr + len(data)
        if ptr < 0 or end > self.size:
            view = self._grown(ptr, len(data))
        view[ptr:end] = data

    def fuel_left(self) -> int:
        RAW.context_get_fuel(self.ctx, self.fuel_addr)
        left: int = self.fuel.value
        return left


def _trap_for(exc: BaseException) -> int:
    """Record ``exc`` on the current host and return a trap for wasmtime. Never raises."""
    try:
        host = getattr(_current, "host", None)
        if host is not None and host.outcome is None:
            host.outcome = exc
        return _capi.make_trap(f"{type(exc).__name__}: {exc}")
    except BaseException:
        result: int = RAW.trap_new(b"host error", 10)
        return result


def _trampoline(spec: HostFunctionSpec, method: Callable[..., Any]) -> Any:
    nslots = max(len(spec.params), len(spec.results), 1)
    unpack = struct.Struct("<" + "".join(_SLOT[t] for t in spec.params)).unpack_from
    pack = struct.Struct("<" + "".join(_SLOT[t] for t in spec.results)).pack_into
    has_result = bool(spec.results)
    view_type = ctypes.c_char * (nslots * VAL_RAW_SIZE)
    views: dict[int, Any] = {}
    current = _current

    def call(env: int, caller: int, args: int, count: int) -> int:
        try:
            view = views.get(args)
            if view is None:
                if len(views) > 256:
                    views.clear()
                view = views[args] = view_type.from_address(args)
            result = method(current.host, *unpack(view))
            if has_result:
                pack(view, 0, result)
            return 0
        except BaseException as exc:  # nothing may cross into C
            return _trap_for(exc)

    callback = RAW_CALLBACK(call)
    keep_alive(callback)
    return callback


def define_unchecked(
    linker: wasmtime.Linker, module: str, spec: HostFunctionSpec, impl: Callable[..., Any]
) -> None:
    """Define host function ``spec``, run by ``impl(host, *args)``, through the unchecked C API."""
    callback = _trampoline(spec, impl)
    mod, name = module.encode(), spec.name.encode()
    ftype = functype(spec.params, spec.results)
    err = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(), mod, len(mod), name, len(name), ftype.ptr(),
        ctypes.cast(callback, ffi.wasmtime_func_unchecked_callback_t), None,
        _capi.NULL_FINALIZER,
    )  # fmt: skip
    if err:
        raise RuntimeError(f"defining host function {spec.name}: {_capi.error_text(int(err))}")


class _FastInstance:
    """One store and one instance of a contract, driven through the unchecked C API."""

    def __init__(self, engine: wasmtime.Engine, pre: wasmtime.InstancePre, limits: Limits) -> None:
        self.store = RAW.store_new(addressof(engine.ptr().contents), None, None)
        # The store (and its memory mappings) goes when this instance does.
        self._release = weakref.finalize(self, RAW.store_delete, self.store)
        RAW.store_limiter(
            self.store, limits.max_memory_pages * WASM_PAGE_SIZE, limits.max_table_elements, 1,
            limits.max_tables, 1,
        )  # fmt: skip
        self.ctx = RAW.store_context(self.store)
        self.instance = ffi.wasmtime_instance_t()
        trap = c_void_p()
        err = RAW.instance_pre_instantiate(
            addressof(pre.ptr().contents), self.ctx, addressof(self.instance), addressof(trap)
        )
        if err or trap.value:
            message = _capi.error_text(int(err)) if err else _capi.trap_text(trap.value or 0)[0]
            self.close()
            raise HostError(f"instantiating the contract failed: {message}")
        memory = self._export("memory")
        self.memory = memory.of.memory
        self.mem = addressof(self.memory)
        self.base: int = RAW.memory_data(self.ctx, self.mem)
        self.size: int = RAW.memory_data_size(self.ctx, self.mem)
        self.mem_view = (ctypes.c_char * self.size).from_address(self.base)
        self.funcs: dict[str, tuple[Any, int]] = {}
        self.args = (ffi.wasmtime_val_raw_t * 1)()
        self.args_addr = addressof(self.args)
        self.trap = c_void_p()
        self.trap_addr = addressof(self.trap)
        self.fuel = c_uint64()
        self.fuel_addr = addressof(self.fuel)
        self.image = ctypes.string_at(self.base, self.size)
        self.globals: list[tuple[Any, Any]] = []
        for export in pre.module.exports:
            if isinstance(export.type, wasmtime.GlobalType) and export.type.mutable:
                handle = self._export(export.name).of.global_
                value = ffi.wasmtime_val_t()
                RAW.global_get(self.ctx, addressof(handle), addressof(value))
                self.globals.append((handle, value))
        self.global_addresses = [(addressof(h), addressof(v)) for h, v in self.globals]
        self.dirty = False

    def _export(self, name: str) -> Any:
        extern = ffi.wasmtime_extern_t()
        data = name.encode()
        if not RAW.instance_export_get(
            self.ctx, addressof(self.instance), data, len(data), addressof(extern)
        ):
            raise HostError(f"contract has no export {name!r}")
        return extern

    def func(self, name: str) -> int:
        entry = self.funcs.get(name)
        if entry is None:
            func = self._export(name).of.func
            entry = self.funcs[name] = (func, addressof(func))
        return entry[1]

    def reset(self) -> bool:
        """Restore memory and globals to their post-instantiation image."""
        if RAW.memory_data_size(self.ctx, self.mem) != self.size:
            return False
        ctypes.memmove(self.base, self.image, self.size)
        ctx = self.ctx
        global_set = RAW.global_set
        for handle, value in self.global_addresses:
            err = global_set(ctx, handle, value)
            if err:
                raise RuntimeError(_capi.error_text(err))
        self.dirty = False
        return True

    def close(self) -> None:
        self._release()
        self.store = None


class FastPath:
    """Calls through ``wasmtime_func_call_unchecked`` with unchecked host functions.

    ``reuse_instances=False`` gives every call a fresh instance instead of a
    reset one (slower; the tests use it to check that resetting is exact).
    ``release_gil=True`` lets other threads run while wasm runs.
    """

    name = "fast"
    host_type = _FastHost

    def __init__(
        self,
        engine: wasmtime.Engine,
        limits: Limits,
        functions: list[HostFunction],
        module: str,
        release_gil: bool = False,
        reuse_instances: bool = True,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.reuse_instances = reuse_instances
        self.linker = wasmtime.Linker(engine)
        for spec, impl in functions:
            define_unchecked(self.linker, module, spec, impl)
        self.call_unchecked = (_capi.RAW_NOGIL if release_gil else RAW).func_call_unchecked
        self._local = threading.local()

    def _instance(self, contract: CompiledContract) -> _FastInstance:
        """This thread's instance of ``contract``, clean: reset, or made afresh."""
        instances: dict[bytes, _FastInstance] | None = getattr(self._local, "instances", None)
        if instances is None:
            instances = self._local.instances = {}
        instance = instances.get(contract.code_hash)
        if (
            instance is not None
            and instance.dirty
            and (not contract.resettable or not self.reuse_instances or not instance.reset())
        ):
            instance.close()
            del instances[contract.code_hash]
            instance = None
        if instance is None:
            pre = contract.cache.get("fast_pre")
            if pre is None:
                pre = contract.cache["fast_pre"] = self.linker.instantiate_pre(contract.module)
            instance = instances[contract.code_hash] = _FastInstance(self.engine, pre, self.limits)
        return instance

    def call(self, contract: CompiledContract, method: str, host: Host, fuel: int) -> CallOutcome:
        instance = self._instance(contract)
        assert isinstance(host, _FastHost)
        ctx = instance.ctx
        host.ctx = ctx
        host.base = instance.base
        host.size = instance.size
        host.mem_view = instance.mem_view
        host.mem = instance.mem
        host.fuel = instance.fuel
        host.fuel_addr = instance.fuel_addr
        host.budget = fuel  # start_metering(), inlined on the hot path
        host.host_gas = 0
        host._next_check = fuel // 2
        func = instance.func(method)
        RAW.context_set_fuel(ctx, fuel)
        instance.dirty = True
        _current.host = host
        try:
            err = self.call_unchecked(ctx, func, instance.args_addr, 1, instance.trap_addr)
        finally:
            _current.host = None
        RAW.context_get_fuel(ctx, instance.fuel_addr)
        left: int = instance.fuel.value
        if err:
            return CallOutcome(left, _capi.error_text(err))
        trap = instance.trap.value
        if trap:
            instance.trap.value = None
            _, code = _capi.trap_text(trap)
            return CallOutcome(left, trap_name(code), code == _capi.OUT_OF_FUEL, code)
        return CallOutcome(left)
