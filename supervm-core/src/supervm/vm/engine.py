"""The deterministic wasmtime engine and contract compilation with deploy-time checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from supervm.errors import SuperVMError
from supervm.vm.abi import HOST_FUNCTIONS, HOST_MODULE, Limits
from supervm.vm.wasm import WasmFormatError, export_all_globals, may_mutate_tables, table_limits

__all__ = [
    "WASM_PAGE_SIZE",
    "CompiledContract",
    "InvalidContractError",
    "compile_contract",
    "functype",
    "make_engine",
]

#: Bytes in one page of linear memory.
WASM_PAGE_SIZE = 65536


class InvalidContractError(SuperVMError, ValueError):
    """Contract code was refused at deploy: malformed, too large, or importing what it may not."""


def make_engine(limits: Limits) -> wasmtime.Engine:
    """An engine configured for deterministic execution."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_nan_canonicalization = True
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_relaxed_simd = False
    config.wasm_simd = False
    config.wasm_bulk_memory = False
    config.wasm_gc = False
    config.wasm_function_references = False
    config.wasm_exceptions = False
    config.wasm_memory64 = False
    config.wasm_multi_memory = False
    config.wasm_tail_call = False
    config.wasm_stack_switching = False
    config.wasm_wide_arithmetic = False
    config.wasm_custom_page_sizes = False
    config.max_wasm_stack = limits.max_wasm_stack
    # Linear memory never moves, so its base address is fixed per instance.
    config.memory_may_move = False
    return wasmtime.Engine(config)


def _wasmtime_reason(exc: Exception) -> str:
    """The most specific line of a wasmtime error ("... at offset 34: simd support is not ...")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "invalid module"
    detail = lines[-1]
    if detail[:1].isdigit() and ":" in detail:
        detail = detail.split(":", 1)[1].strip()
    return f"{lines[0]}: {detail}" if detail != lines[0] else detail


def _signature(ftype: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(t) for t in ftype.params), tuple(str(t) for t in ftype.results)


_VALTYPES = {
    "i32": wasmtime.ValType.i32,
    "i64": wasmtime.ValType.i64,
    "f32": wasmtime.ValType.f32,
    "f64": wasmtime.ValType.f64,
}


def functype(params: tuple[str, ...], results: tuple[str, ...]) -> wasmtime.FuncType:
    """The wasmtime function type of a host function signature (``("i32",) -> ()``)."""
    return wasmtime.FuncType([_VALTYPES[t]() for t in params], [_VALTYPES[t]() for t in results])


#: (params, results) of every host function, by name.
HOST_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    spec.name: (spec.params, spec.results) for spec in HOST_FUNCTIONS
}


@dataclass
class CompiledContract:
    """A validated, compiled contract and what the runtime needs to run it."""

    code_hash: bytes
    module: wasmtime.Module
    methods: frozenset[str]
    #: Restoring memory and globals gives a clean instance (no mutable tables).
    resettable: bool
    #: Caches owned by the call paths (the fast path's ``InstancePre``).
    cache: dict[str, Any] = field(default_factory=dict)


def code_hash(code: bytes) -> bytes:
    """The SHA-256 of contract code, its identity in state."""
    return hashlib.sha256(code).digest()


def compile_contract(
    engine: wasmtime.Engine,
    code: bytes,
    limits: Limits,
    extra_imports: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
) -> CompiledContract:
    """Validate ``code`` against the ABI and the limits, and compile it."""
    if type(code) is not bytes:
        raise TypeError(f"contract code must be bytes, not {type(code).__name__}")
    if len(code) > limits.max_code_size:
        raise InvalidContractError(
            f"contract code of {len(code)} bytes exceeds the limit of {limits.max_code_size}"
        )
    try:
        tables = table_limits(code)
        rewritten = export_all_globals(code)
    except (WasmFormatError, IndexError) as exc:
        raise InvalidContractError(f"contract code is not valid WebAssembly: {exc}") from None
    try:
        module = wasmtime.Module(engine, rewritten)
    except wasmtime.WasmtimeError as exc:
        raise InvalidContractError(
            f"contract code is not valid WebAssembly: {_wasmtime_reason(exc)}"
        ) from None

    allowed = dict(HOST_SIGNATURES)
    allowed.update(extra_imports or {})
    for imp in module.imports:
        where = f"{imp.module}.{imp.name}"
        if not isinstance(imp.type, wasmtime.FuncType):
            raise InvalidContractError(
                f"import {where} is not a function; contracts import only functions"
            )
        if imp.module != HOST_MODULE or imp.name not in allowed:
            raise InvalidContractError(
                f"import {where} is not a SuperVM host function (ABI v1 provides module "
                f"{HOST_MODULE!r} with: {', '.join(sorted(allowed))})"
            )
        if _signature(imp.type) != allowed[imp.name]:
            want = allowed[imp.name]
            raise InvalidContractError(
                f"import {where} has signature {_signature(imp.type)}, the ABI defines {want}"
            )

    methods = set()
    memory_pages = None
    for export in module.exports:
        kind = export.type
        if isinstance(kind, wasmtime.MemoryType):
            if export.name == "memory":
                memory_pages = kind.limits.min
        elif isinstance(kind, wasmtime.FuncType) and _signature(kind) == ((), ()):
            methods.add(export.name)
    if memory_pages is None:
        raise InvalidContractError("contract must export its linear memory as 'memory'")
    if memory_pages > limits.max_memory_pages:
        raise InvalidContractError(
            f"contract memory starts at {memory_pages} pages; "
            f"the limit is {limits.max_memory_pages}"
        )
    if len(tables) > limits.max_tables:
        raise InvalidContractError(
            f"contract defines {len(tables)} tables; the limit is {limits.max_tables}"
        )
    for minimum, _ in tables:
        if minimum > limits.max_table_elements:
            raise InvalidContractError(
                f"contract table starts at {minimum} elements; "
                f"the limit is {limits.max_table_elements}"
            )
    try:
        resettable = not may_mutate_tables(code)
    except WasmFormatError as exc:
        raise InvalidContractError(f"contract code is not valid WebAssembly: {exc}") from None
    return CompiledContract(
        code_hash=code_hash(code),
        module=module,
        methods=frozenset(methods),
        resettable=resettable,
    )
