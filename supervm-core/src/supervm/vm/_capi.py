"""The unchecked wasmtime C-API entry points, bound through ctypes.

``wasmtime-py`` ships its C library and ctypes bindings (``wasmtime._bindings``).
Its public call path checks types and boxes every value on each call; the
entry points bound here (``wasmtime_func_call_unchecked``,
``wasmtime_linker_define_func_unchecked``) pass arguments and results in one
raw ``wasmtime_val_raw_t`` array instead. The function objects are our own
(declared with plain integer arguments) so wasmtime-py's are never altered.

Rules this module keeps: no Python exception ever crosses into C (callbacks
turn every exception into a trap); every callback object stays referenced for
the life of the process; guest memory is bounds-checked before each access.
"""

from __future__ import annotations

import ctypes
from ctypes import CFUNCTYPE, addressof, c_bool, c_char_p, c_int64, c_size_t, c_uint8, c_uint64
from ctypes import c_void_p as vp
from typing import Any

from wasmtime import _ffi as ffi

__all__ = ["RAW", "RAW_CALLBACK", "VAL_RAW_SIZE", "error_text", "keep_alive", "trap_text"]

_LIBRARY = ffi.dll._name

#: Size of one ``wasmtime_val_raw_t`` slot (it has a v128 member).
VAL_RAW_SIZE = ctypes.sizeof(ffi.wasmtime_val_raw_t)

#: ``wasm_trap_t* (*)(void* env, wasmtime_caller_t*, wasmtime_val_raw_t*, size_t)``
RAW_CALLBACK = CFUNCTYPE(c_size_t, vp, vp, vp, c_size_t)
NULL_FINALIZER = ctypes.cast(None, CFUNCTYPE(None, vp))  # type: ignore[arg-type]

#: Trap code wasmtime reports when fuel runs out.
OUT_OF_FUEL = int(ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_OUT_OF_FUEL.value)
STACK_OVERFLOW = int(ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_STACK_OVERFLOW.value)
TRAP_NAMES: dict[int, str] = {
    int(e.value): e.name.replace("WASMTIME_TRAP_CODE_", "").lower()
    for e in ffi.wasmtime_trap_code_enum
}

_KEEP: list[object] = []


def keep_alive(obj: object) -> None:
    """Hold ``obj`` for the life of the process (ctypes callbacks given to wasmtime)."""
    _KEEP.append(obj)


class _Raw:
    """Our own ctypes function objects on wasmtime's library, integer arguments only."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = list(argtypes)
            return fn

        sz = c_size_t
        self.func_call_unchecked = bind("wasmtime_func_call_unchecked", vp, vp, vp, vp, sz, vp)
        self.context_set_fuel = bind("wasmtime_context_set_fuel", vp, vp, c_uint64)
        self.context_get_fuel = bind("wasmtime_context_get_fuel", vp, vp, vp)
        self.memory_data = bind("wasmtime_memory_data", vp, vp, vp)
        self.memory_data_size = bind("wasmtime_memory_data_size", sz, vp, vp)
        self.trap_new = bind("wasmtime_trap_new", vp, c_char_p, sz)
        self.trap_code = bind("wasmtime_trap_code", c_bool, vp, vp)
        self.trap_message = bind("wasm_trap_message", None, vp, vp)
        self.trap_delete = bind("wasm_trap_delete", None, vp)
        self.error_message = bind("wasmtime_error_message", None, vp, vp)
        self.error_delete = bind("wasmtime_error_delete", None, vp)
        self.byte_vec_delete = bind("wasm_byte_vec_delete", None, vp)
        self.global_get = bind("wasmtime_global_get", None, vp, vp, vp)
        self.global_set = bind("wasmtime_global_set", vp, vp, vp, vp)
        self.store_new = bind("wasmtime_store_new", vp, vp, vp, vp)
        self.store_context = bind("wasmtime_store_context", vp, vp)
        self.store_delete = bind("wasmtime_store_delete", None, vp)
        i64 = c_int64
        self.store_limiter = bind("wasmtime_store_limiter", None, vp, i64, i64, i64, i64, i64)
        self.instance_pre_instantiate = bind(
            "wasmtime_instance_pre_instantiate", vp, vp, vp, vp, vp
        )
        self.instance_export_get = bind(
            "wasmtime_instance_export_get", c_bool, vp, vp, c_char_p, sz, vp
        )


#: Bound through PyDLL: the GIL stays held while wasm runs (cheaper per crossing).
RAW = _Raw(ctypes.PyDLL(_LIBRARY))
#: Bound through CDLL: the GIL is released while wasm runs (lets other threads run).
RAW_NOGIL = _Raw(ctypes.CDLL(_LIBRARY))


def _take_vec(vec: Any) -> bytes:
    data = ctypes.string_at(vec.data, vec.size) if vec.size else b""
    RAW.byte_vec_delete(addressof(vec))
    return data


def error_text(err: int) -> str:
    """Message of a ``wasmtime_error_t*`` (deleted here), without its wasm backtrace."""
    vec = ffi.wasm_byte_vec_t()
    RAW.error_message(err, addressof(vec))
    RAW.error_delete(err)
    return root_cause(_take_vec(vec).decode("utf-8", "replace"))


def trap_text(trap: int) -> tuple[str, int | None]:
    """Message and trap code of a ``wasm_trap_t*`` (deleted here)."""
    vec = ffi.wasm_byte_vec_t()
    RAW.trap_message(trap, addressof(vec))
    message = _take_vec(vec).rstrip(b"\0").decode("utf-8", "replace")
    code = c_uint8()
    has_code = RAW.trap_code(trap, addressof(code))
    RAW.trap_delete(trap)
    return root_cause(message), (code.value if has_code else None)


def root_cause(message: str) -> str:
    """The part of a wasmtime message after ``Caused by:`` (drops the backtrace)."""
    if "Caused by:" in message:
        message = message.rsplit("Caused by:", 1)[1]
    lines = [line.strip() for line in message.strip().splitlines()]
    return lines[0] if lines else ""


def make_trap(message: str) -> int:
    """A new ``wasm_trap_t*``; ownership passes to wasmtime when a callback returns it."""
    data = message.encode("utf-8", "replace")
    result: int = RAW.trap_new(data, len(data))
    return result
