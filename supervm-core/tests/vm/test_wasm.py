"""The binary decoder behind the reset decision: tables, globals and malformed input."""

from __future__ import annotations

import pytest
import wasmtime

from supervm.vm.abi import Limits
from supervm.vm.engine import make_engine
from supervm.vm.wasm import (
    GLOBAL_EXPORT_PREFIX,
    WasmFormatError,
    export_all_globals,
    may_mutate_tables,
    sections,
    table_limits,
)

MAGIC = b"\0asm\x01\0\0\0"


def wat(source: str) -> bytes:
    return bytes(wasmtime.wat2wasm(source))


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + uleb(len(payload)) + payload


def module_with_bodies(*bodies: bytes, table: bool = True) -> bytes:
    """A module of ``() -> ()`` functions with the given raw bodies (locals included)."""
    types = section(1, b"\x01\x60\x00\x00")
    funcs = section(3, uleb(len(bodies)) + b"\x00" * len(bodies))
    tables = section(4, b"\x01\x70\x00\x01") if table else b""
    code = section(10, uleb(len(bodies)) + b"".join(uleb(len(b)) + b for b in bodies))
    return MAGIC + types + funcs + tables + code


def exports_of(wasm: bytes) -> list[tuple[bytes, int, int]]:
    """(name, kind, index) of every export."""
    for s in sections(wasm):
        if s.id == 7:
            out = []
            count, pos = _uleb(wasm, s.payload_start)
            for _ in range(count):
                length, pos = _uleb(wasm, pos)
                name = wasm[pos : pos + length]
                kind = wasm[pos + length]
                index, pos = _uleb(wasm, pos + length + 1)
                out.append((name, kind, index))
            return out
    return []


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


# -- may_mutate_tables ------------------------------------------------------------------

TABLE = "(type $t (func)) (table $tab 2 funcref) (func $f)"

# Instructions whose immediates contain the bytes of table-writing opcodes
# (0x26 = table.set, 0xFC = the 0xFC prefix), so a decoder that lost its place
# would answer differently.
TRICKY = """
    (drop (i32.const 38)) (drop (i32.const -4)) (drop (i64.const 0x26FC26FC26FC))
    (drop (f32.const 0x1.f8p-5)) (drop (f64.const 1.0000000000000002))
    (drop (i32.load offset=9980 (i32.const 0)))
    (i64.store8 offset=38 (i32.const 0) (i64.const 252))
    (block $a (result i32) (block $b (block $c
      (br_table $c $b $a $c $b (i32.const 7) (i32.const 1)))) (i32.const 2))
    (drop)
    (drop (select (result i64) (i64.const 1) (i64.const 2) (i32.const 0)))
    (drop (i32.trunc_sat_f32_s (f32.const 1)))
    (drop (memory.size)) (drop (memory.grow (i32.const 0)))
    (drop (table.size $tab)) (drop (table.get $tab (i32.const 0)))
    (drop (ref.is_null (ref.null func)))
    (call_indirect (type $t) (i32.const 0))
"""

WRITES = {
    "table.set": "(table.set $tab (i32.const 0) (ref.null func))",
    "table.grow": "(drop (table.grow $tab (ref.null func) (i32.const 1)))",
    "table.fill": "(table.fill $tab (i32.const 0) (ref.null func) (i32.const 1))",
    "table.copy": "(table.copy (i32.const 0) (i32.const 1) (i32.const 1))",
    "table.init": "(table.init $tab $seg (i32.const 0) (i32.const 0) (i32.const 1))",
    "elem.drop": "(elem.drop $seg)",
}


def table_module(body: str, *, extra: str = "") -> bytes:
    return wat(
        f"""(module {TABLE} (memory 1) (elem $seg func $f) (elem (i32.const 0) $f) {extra}
        (func (export "m") {body}))"""
    )


@pytest.mark.parametrize("write", sorted(WRITES))
def test_each_table_write_is_found(write: str) -> None:
    assert may_mutate_tables(table_module(WRITES[write]))
    assert may_mutate_tables(table_module(TRICKY + WRITES[write]))
    assert may_mutate_tables(table_module(WRITES[write] + TRICKY))


def test_reads_calls_and_element_segments_are_not_writes() -> None:
    assert not may_mutate_tables(table_module(TRICKY))
    assert not may_mutate_tables(table_module("(call_indirect (type $t) (i32.const 0))"))
    assert not may_mutate_tables(table_module(""))


def test_a_write_anywhere_counts() -> None:
    # In a function nobody exports, in the start function, inside nested blocks.
    hidden = f"(func $hidden {WRITES['table.set']})"
    assert may_mutate_tables(table_module("", extra=hidden))
    assert may_mutate_tables(table_module("", extra=f"{hidden} (start $hidden)"))
    nested = f"(block (loop (if (i32.const 1) (then {WRITES['table.grow']}))))"
    assert may_mutate_tables(table_module(nested))


def test_no_table_means_no_table_writes() -> None:
    assert not may_mutate_tables(wat('(module (func (export "m") (nop)))'))
    assert not may_mutate_tables(wat("(module)"))
    # Even code the decoder does not know is harmless without a table.
    assert not may_mutate_tables(module_with_bodies(b"\x00\xfd\x0c" + b"\0" * 16 + b"\x1a\x0b",
                                                    table=False))  # fmt: skip


def test_imported_tables_count() -> None:
    imported = '(import "env" "t" (table $tab 1 funcref))'
    assert may_mutate_tables(wat(f'(module {imported} (func (export "m") {WRITES["table.set"]}))'))
    assert not may_mutate_tables(wat(f'(module {imported} (func (export "m") (nop)))'))


def test_unknown_or_undecodable_code_counts_as_a_write() -> None:
    v128_const = b"\x00\xfd\x0c" + b"\0" * 16 + b"\x1a\x0b"  # SIMD: not decoded
    assert may_mutate_tables(module_with_bodies(v128_const))
    assert may_mutate_tables(module_with_bodies(b"\x00\x06\x40\x0b\x0b"))  # try (exceptions)
    assert may_mutate_tables(module_with_bodies(b"\x00\x41"))  # body ends inside an immediate
    assert may_mutate_tables(module_with_bodies(b"\x00\x01"))  # body without its final end
    assert may_mutate_tables(module_with_bodies(b"\x00\x0b", b"\x00\xfc\x0f\x00\x0b"))
    assert not may_mutate_tables(module_with_bodies(b"\x00\x0b", b"\x00\x01\x0b"))


def test_every_example_contract_is_resettable() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "examples" / "contracts"
    for path in sorted(root.rglob("*.wasm")):
        assert not may_mutate_tables(path.read_bytes()), path.name


# -- table_limits --------------------------------------------------------------------


def test_table_limits() -> None:
    assert table_limits(wat("(module)")) == []
    assert table_limits(wat("(module (table 3 funcref))")) == [(3, None)]
    assert table_limits(wat("(module (table 1 9 funcref) (table 0 externref))")) == [
        (1, 9),
        (0, None),
    ]


# -- export_all_globals --------------------------------------------------------------

GLOBALS = """
  (global $a (mut i32) (i32.const 1))
  (global $b i64 (i64.const 2))
  (global $c (mut f64) (f64.const 3))
"""


def global_exports(wasm: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for name, kind, index in exports_of(wasm):
        if kind == 0x03:
            out.setdefault(index, []).append(name)
    return out


def compiles(wasm: bytes) -> wasmtime.Module:
    return wasmtime.Module(make_engine(Limits()), wasm)


def test_every_global_gets_exported() -> None:
    code = wat(
        f'(module {GLOBALS} (memory (export "memory") 1) (func (export "m"))'
        ' (data (i32.const 0) "x"))'
    )
    rewritten = export_all_globals(code)
    prefix = GLOBAL_EXPORT_PREFIX.encode()
    assert global_exports(rewritten) == {i: [prefix + str(i).encode()] for i in range(3)}
    compiles(rewritten)  # still valid, sections in order
    assert export_all_globals(rewritten) == rewritten  # idempotent
    assert export_all_globals(bytearray(code)) == rewritten


def test_globals_exported_already_are_left_alone() -> None:
    code = wat(f'(module {GLOBALS} (export "b" (global $b)) (export "a2" (global $a)))')
    assert global_exports(export_all_globals(code)) == {
        0: [b"a2"],
        1: [b"b"],
        2: [GLOBAL_EXPORT_PREFIX.encode() + b"2"],
    }


@pytest.mark.parametrize(
    "clash",
    ['(export "{p}1" (global $a))', '(export "{p}1" (func $f))', '(export "{p}1" (memory 0))'],
)
def test_export_names_taken_by_something_else_still_get_every_global(clash: str) -> None:
    # The module uses the runtime's name for global 1 for something else: global 1
    # must still be exported (otherwise it would not be restored between calls).
    code = wat(f"(module {GLOBALS} (memory 1) (func $f) {clash.format(p=GLOBAL_EXPORT_PREFIX)})")
    rewritten = export_all_globals(code)
    assert set(global_exports(rewritten)) == {0, 1, 2}
    compiles(rewritten)
    assert export_all_globals(rewritten) == rewritten


def test_imported_globals_shift_the_indices() -> None:
    code = wat(f'(module (import "env" "g" (global i32)) {GLOBALS})')
    assert set(global_exports(export_all_globals(code))) == {1, 2, 3}


def test_modules_without_globals_are_unchanged() -> None:
    code = wat('(module (memory (export "memory") 1) (func (export "m")))')
    assert export_all_globals(code) == code


# -- malformed input -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "bad magic": b"\0asm\x02\0\0\0",
    "not wasm": b"(module)",
    "section past the end": MAGIC + b"\x01\x10\x00",
    "truncated section size": MAGIC + b"\x01\x80",
    "overlong section size": MAGIC + b"\x01" + b"\x80" * 6 + b"\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_modules_raise_wasm_format_error(name: str) -> None:
    data = MALFORMED[name]
    for decode in (sections, table_limits, may_mutate_tables, export_all_globals):
        with pytest.raises(WasmFormatError):
            decode(data)


def test_function_body_past_the_code_section_is_malformed() -> None:
    good = module_with_bodies(b"\x00\x0b")
    assert good.endswith(b"\x0a\x04\x01\x02\x00\x0b")  # code: 1 body of 2 bytes
    bad = good[:-6] + b"\x0a\x04\x01\x09\x00\x0b"  # the body claims 9 bytes
    sections(bad)  # the sections themselves are fine
    with pytest.raises(WasmFormatError, match="function body runs past"):
        may_mutate_tables(bad)
