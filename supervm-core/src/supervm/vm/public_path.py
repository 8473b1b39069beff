"""Fallback call path: wasmtime-py's public API, a fresh store and instance per call.

Used with ``Runtime(fast=False)`` and by the tests, which check that it gives
the same receipts as the hot path in :mod:`supervm.vm.fast_path`. It is slower
(every call and host call goes through wasmtime-py's type checks and boxing)
but uses nothing outside wasmtime-py's documented API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import wasmtime

from supervm.vm import _capi
from supervm.vm.abi import Limits
from supervm.vm.callpath import CallOutcome, trap_name
from supervm.vm.engine import WASM_PAGE_SIZE, CompiledContract, functype
from supervm.vm.host import Host, HostError, HostFunction

__all__ = ["PublicPath"]


class _PublicHost(Host):
    """Guest memory and fuel through wasmtime-py's public objects."""

    store: Any = None
    memory: Any = None

    def _check(self, ptr: int, length: int) -> None:
        size = self.memory.data_len(self.store)
        if ptr < 0 or length < 0 or ptr + length > size:
            raise HostError(
                f"guest memory access out of bounds: {length} bytes at {ptr} "
                f"(memory is {size} bytes)"
            )

    def read(self, ptr: int, length: int) -> bytes:
        self._check(ptr, length)
        data: bytes = self.memory.read(self.store, ptr, ptr + length)
        return bytes(data)

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self.memory.write(self.store, data, ptr)

    def fuel_left(self) -> int:
        left: int = self.store.get_fuel()
        return left


class PublicPath:
    """Calls through wasmtime-py's public API: a fresh store and instance per call."""

    name = "public"
    host_type = _PublicHost

    def __init__(
        self, engine: wasmtime.Engine, limits: Limits, functions: list[HostFunction], module: str
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.linker = wasmtime.Linker(engine)
        self._local = threading.local()
        for spec, impl in functions:
            self.linker.define_func(
                module, spec.name, functype(spec.params, spec.results), self._host_function(impl)
            )

    def _host_function(self, method: Callable[..., Any]) -> Callable[..., Any]:
        local = self._local

        def call(*args: Any) -> Any:
            host = local.host
            try:
                return method(host, *args)
            except BaseException as exc:
                if host.outcome is None:
                    host.outcome = exc
                raise

        return call

    def call(self, contract: CompiledContract, method: str, host: Host, fuel: int) -> CallOutcome:
        assert isinstance(host, _PublicHost)
        store = wasmtime.Store(self.engine)
        limits = self.limits
        store.set_limits(
            memory_size=limits.max_memory_pages * WASM_PAGE_SIZE,
            table_elements=limits.max_table_elements,
            instances=1,
            tables=limits.max_tables,
            memories=1,
        )
        try:
            instance = self.linker.instantiate(store, contract.module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise HostError(f"instantiating the contract failed: {exc}") from None
        exports = instance.exports(store)
        host.store = store
        host.memory = exports["memory"]
        func: Any = exports[method]
        host.start_metering(fuel)
        store.set_fuel(fuel)
        self._local.host = host
        try:
            func(store)
        except wasmtime.Trap as exc:
            code = exc.trap_code
            number = None if code is None else int(code.value)
            return CallOutcome(
                store.get_fuel(), trap_name(number), number == _capi.OUT_OF_FUEL, number
            )
        except Exception as exc:
            if host.outcome is not None:
                return CallOutcome(store.get_fuel(), str(exc))
            return CallOutcome(store.get_fuel(), f"{type(exc).__name__}: {exc}")
        finally:
            self._local.host = None
        return CallOutcome(store.get_fuel())
