"""Host ABI v1: the functions a contract imports from module ``env``, their gas and limits.

This table is the single source of truth: the runtime links exactly these
functions, ``docs/abi.md`` documents them and the C header ``supervm.h``
declares them (tests check all three agree).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ABI_VERSION",
    "HOST_FUNCTIONS",
    "HOST_MODULE",
    "HostFunctionSpec",
    "Limits",
]

ABI_VERSION = 1
HOST_MODULE = "env"


@dataclass(frozen=True)
class HostFunctionSpec:
    """One host function: wasm signature, gas schedule and a one-line description."""

    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]
    #: Gas charged on every call.
    base_gas: int
    #: Gas charged per byte moved (keys, values, data) by the call.
    byte_gas: int
    doc: str


def _fn(
    name: str, params: str, results: str, base: int, per_byte: int, doc: str
) -> HostFunctionSpec:
    return HostFunctionSpec(
        name, tuple(params.split()), tuple(results.split()), base, per_byte, doc
    )


#: Every ABI v1 host function, in documentation order.
HOST_FUNCTIONS: tuple[HostFunctionSpec, ...] = (
    _fn("read_register", "i32", "", 10, 1,
        "Copy the register's bytes to guest memory at ptr."),
    _fn("input", "", "i32", 20, 1,
        "Put the call input in the register; return its length."),
    _fn("caller", "", "i32", 20, 1,
        "Put the sender's address in the register; return its length."),
    _fn("address", "", "i32", 20, 1,
        "Put this contract's address in the register; return its length."),
    _fn("block_height", "", "i64", 10, 0, "Height of the block being executed."),
    _fn("block_timestamp", "", "i64", 10, 0, "Timestamp of the block being executed."),
    _fn("storage_get", "i32 i32", "i32", 200, 1,
        "Put the value of key (ptr, len) in the register; return its length, or -1 if absent."),
    _fn("storage_set", "i32 i32 i32 i32", "", 400, 2,
        "Store value (ptr, len) under key (ptr, len)."),
    _fn("storage_delete", "i32 i32", "", 300, 1, "Delete key (ptr, len); absent keys are fine."),
    _fn("storage_iter", "i32 i32", "i32", 300, 1,
        "Open an iterator over this contract's keys starting with prefix (ptr, len); "
        "return its handle."),
    _fn("storage_iter_next", "i32", "i32", 100, 1,
        "Advance the iterator; put the next key (without the namespace) in the register and "
        "return its length, or -1 when done."),
    _fn("storage_iter_value", "i32", "i32", 50, 1,
        "Put the value at the iterator's current key in the register; return its length."),
    _fn("return_data", "i32 i32", "", 20, 1, "Set the call's return data to (ptr, len)."),
    _fn("revert", "i32 i32", "", 20, 1,
        "Stop with status reverted and message (ptr, len); nothing the call wrote is kept."),
    _fn("emit_event", "i32 i32 i32 i32", "", 200, 2,
        "Record an event with topic (ptr, len) and data (ptr, len)."),
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """Resource limits enforced on every contract; part of consensus, so change with care."""

    #: Largest contract code accepted at deploy.
    max_code_size: int = 512 * 1024
    #: Largest key a contract may use (the namespace prefix is added on top, and the
    #: total fits every first-party back end, LMDB's 511 bytes included).
    max_key_size: int = 256
    #: Largest value a contract may store.
    max_value_size: int = 64 * 1024
    #: Largest call input and return data.
    max_input_size: int = 64 * 1024
    max_return_size: int = 64 * 1024
    #: Events per call, and bytes of topic and data per event.
    max_events: int = 64
    max_topic_size: int = 128
    max_event_data_size: int = 4 * 1024
    #: Open iterators per call.
    max_iterators: int = 16
    #: Linear memory a contract may use, in 64 KiB pages (declared minimum and growth).
    max_memory_pages: int = 32
    #: Table elements per table, and tables per module.
    max_table_elements: int = 4096
    max_tables: int = 1
    #: Native stack available to wasm code (deep recursion traps cleanly past it).
    max_wasm_stack: int = 256 * 1024
    #: Largest gas limit a call may ask for.
    max_gas_limit: int = 10_000_000_000
    #: Gas charged before execution starts, per call and per input byte.
    call_base_gas: int = 1_000
