"""Reading and rewriting the WebAssembly binary format, as far as the runtime needs.

- :func:`sections` splits a module into its sections.
- :func:`export_all_globals` exports every global a module defines, so the
  runtime can save and restore globals a compiler kept private (C's
  ``__stack_pointer``) between calls.
- :func:`may_mutate_tables` decodes the code section to find table-changing
  instructions, which decide whether restoring memory and globals is enough to
  give every call a clean instance.
- :func:`table_limits` reads the declared size of each table (a deploy check).

Restoring memory and globals is the whole reset because the engine refuses
bulk memory (no passive data segments or ``data.drop``), contracts import only
functions (no shared tables, memories or globals), and a module that grows its
memory or may change a table gets a fresh instance instead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GLOBAL_EXPORT_PREFIX",
    "Section",
    "WasmFormatError",
    "export_all_globals",
    "may_mutate_tables",
    "sections",
    "table_limits",
]

GLOBAL_EXPORT_PREFIX = "__supervm_global_"
MAGIC = b"\0asm\x01\0\0\0"

# Canonical order of known sections (tag=13 sits between memory and global,
# datacount=12 between element and code).
_RANK = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}


class WasmFormatError(ValueError):
    """The bytes are not a well-formed WebAssembly module."""


@dataclass(frozen=True)
class Section:
    id: int
    start: int  # offset of the section id byte
    payload_start: int
    end: int


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 35:
            raise WasmFormatError("LEB128 number too long")


def _enc_uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(wasm: bytes) -> list[Section]:
    """The module's sections in file order."""
    if wasm[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (bad magic number or version)")
    found = []
    pos = 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, payload = _uleb(wasm, pos + 1)
        end = payload + size
        if end > len(wasm):
            raise WasmFormatError(f"section {sid} runs past the end of the module")
        found.append(Section(sid, pos, payload, end))
        pos = end
    return found


def _skip_valtype(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    if kind in (0x63, 0x64):  # (ref null ht) / (ref ht): an s33 heap type follows
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    return pos


def _read_limits(data: bytes, pos: int) -> tuple[int, int | None, int]:
    flags = data[pos]
    minimum, pos = _uleb(data, pos + 1)
    maximum = None
    if flags & 0x01:
        maximum, pos = _uleb(data, pos)
    if flags & 0x08:  # custom page size
        _, pos = _uleb(data, pos)
    return minimum, maximum, pos


def _imported_tables_and_globals(payload: bytes) -> tuple[int, int]:
    """How many tables and globals an import section imports."""
    count_entries, pos = _uleb(payload, 0)
    tables = globals_ = 0
    for _ in range(count_entries):
        for _name in range(2):
            length, pos = _uleb(payload, pos)
            pos += length
        kind = payload[pos]
        pos += 1
        if kind == 0x00:
            _, pos = _uleb(payload, pos)
        elif kind == 0x01:
            _, _, pos = _read_limits(payload, _skip_valtype(payload, pos))
            tables += 1
        elif kind == 0x02:
            _, _, pos = _read_limits(payload, pos)
        elif kind == 0x03:
            pos = _skip_valtype(payload, pos) + 1
            globals_ += 1
        elif kind == 0x04:
            _, pos = _uleb(payload, pos + 1)
        else:
            raise WasmFormatError(f"unsupported import kind 0x{kind:02x}")
    return tables, globals_


def _imports(wasm: bytes, found: list[Section]) -> tuple[int, int]:
    for section in found:
        if section.id == 2:
            return _imported_tables_and_globals(wasm[section.payload_start : section.end])
    return 0, 0


def table_limits(wasm: bytes) -> list[tuple[int, int | None]]:
    """(minimum, maximum) of every table the module defines."""
    for section in sections(wasm):
        if section.id == 4:
            payload = wasm[section.payload_start : section.end]
            count, pos = _uleb(payload, 0)
            limits = []
            for _ in range(count):
                if payload[pos] == 0x40:  # table with an initialiser expression
                    raise WasmFormatError("tables with initialiser expressions are not supported")
                minimum, maximum, pos = _read_limits(payload, _skip_valtype(payload, pos))
                limits.append((minimum, maximum))
            return limits
    return []


def _sleb_skip(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


# Opcodes whose only immediate is one LEB128 index.
_ONE_INDEX = {0x0C, 0x0D, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0xD2}
# Opcodes with no immediates: parametric, comparisons, arithmetic, conversions, sign-ext.
_NO_IMMEDIATE = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)}
# Table-changing instructions: table.set and the 0xFC table.init/elem.drop/copy/grow/fill.
_FC_TABLE_WRITES = {12, 13, 14, 15, 17}


def _function_mutates_tables(code: bytes) -> bool:
    """Decode one function body's instructions; True if any can change a table."""
    end = len(code)
    local_groups, pos = _uleb(code, 0)
    for _ in range(local_groups):
        _, pos = _uleb(code, pos)
        pos = _skip_valtype(code, pos)
    while pos < end:
        op = code[pos]
        pos += 1
        if op in _NO_IMMEDIATE:
            continue
        if op in _ONE_INDEX:
            _, pos = _uleb(code, pos)
        elif op in (0x02, 0x03, 0x04):  # block type: 0x40, a value type, or an s33 index
            pos = (
                pos + 1
                if code[pos] in (0x40, 0x7F, 0x7E, 0x7D, 0x7C, 0x70, 0x6F)
                else (_sleb_skip(code, pos))
            )
        elif op == 0x0E:  # br_table
            count, pos = _uleb(code, pos)
            for _ in range(count + 1):
                _, pos = _uleb(code, pos)
        elif op == 0x11:  # call_indirect type table
            _, pos = _uleb(code, pos)
            _, pos = _uleb(code, pos)
        elif op == 0x1C:  # typed select
            count, pos = _uleb(code, pos)
            for _ in range(count):
                pos = _skip_valtype(code, pos)
        elif op == 0x26:  # table.set
            return True
        elif 0x28 <= op <= 0x3E:  # loads and stores: align, offset
            _, pos = _uleb(code, pos)
            _, pos = _uleb(code, pos)
        elif op in (0x3F, 0x40):  # memory.size / memory.grow: memory index
            _, pos = _uleb(code, pos)
        elif op in (0x41, 0x42):
            pos = _sleb_skip(code, pos)
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op == 0xD0:  # ref.null heap type
            pos = _sleb_skip(code, pos)
        elif op == 0xFC:
            sub, pos = _uleb(code, pos)
            if sub in _FC_TABLE_WRITES:
                return True
            if sub <= 7:
                continue
            if sub == 16:  # table.size
                _, pos = _uleb(code, pos)
            else:  # a bulk-memory instruction; decoding it is not worth the risk
                return True
        else:
            return True  # an opcode this decoder does not know: assume the worst
    # A body ends exactly at its last ``end``; anything else means the decoder lost
    # its place, and then it cannot vouch for the rest.
    return pos != end or code[-1] != 0x0B


def may_mutate_tables(wasm: bytes) -> bool:
    """Whether any function of the module could change a table at run time.

    A module without tables (defined or imported) cannot. Otherwise this decodes
    every function body: table.set, table.grow, table.fill, table.copy,
    table.init and elem.drop count as changes, and so do opcodes this decoder
    does not know and bodies it cannot decode to their exact end, so the answer
    errs towards True, which only costs speed (the runtime then gives every
    call a fresh instance). Raises :class:`WasmFormatError` when the module
    cannot be split into sections and function bodies.
    """
    found = sections(wasm)
    if not table_limits(wasm) and not _imports(wasm, found)[0]:
        return False
    for section in found:
        if section.id == 10:
            count, pos = _uleb(wasm[: section.end], section.payload_start)
            for _ in range(count):
                size, pos = _uleb(wasm[: section.end], pos)
                if pos + size > section.end:
                    raise WasmFormatError("function body runs past the end of the code section")
                try:
                    if _function_mutates_tables(wasm[pos : pos + size]):
                        return True
                except (IndexError, WasmFormatError):
                    return True
                pos += size
    return False


def export_all_globals(wasm: bytes, prefix: str = GLOBAL_EXPORT_PREFIX) -> bytes:
    """``wasm`` with every global it defines exported. Idempotent.

    Globals the module already exports (under any name) are left as they are;
    each other one gets an export named ``<prefix><index>`` (with ``_`` added
    while that name is taken), so the runtime can save and restore every global
    through exports.
    """
    wasm = bytes(wasm)
    found = sections(wasm)
    by_id = {s.id: s for s in found if s.id != 0}
    imported = _imports(wasm, found)[1]
    defined = _uleb(wasm, by_id[6].payload_start)[0] if 6 in by_id else 0
    if defined == 0:
        return wasm

    names: set[bytes] = set()
    exported: set[int] = set()
    old_entries = b""
    old_count = 0
    if 7 in by_id:
        old_count, pos = _uleb(wasm, by_id[7].payload_start)
        old_entries = wasm[pos : by_id[7].end]
        for _ in range(old_count):
            length, pos = _uleb(wasm, pos)
            names.add(wasm[pos : pos + length])
            kind = wasm[pos + length]
            index, pos = _uleb(wasm, pos + length + 1)
            if kind == 0x03:
                exported.add(index)

    added = bytearray()
    count = 0
    for index in range(imported, imported + defined):
        if index in exported:
            continue
        name = f"{prefix}{index}".encode()
        while name in names:
            name += b"_"
        names.add(name)
        added += _enc_uleb(len(name)) + name + b"\x03" + _enc_uleb(index)
        count += 1
    if not count:
        return wasm
    payload = _enc_uleb(old_count + count) + old_entries + bytes(added)
    section = b"\x07" + _enc_uleb(len(payload)) + payload
    if 7 in by_id:
        return wasm[: by_id[7].start] + section + wasm[by_id[7].end :]
    insert_at = len(wasm)
    for s in found:
        if s.id != 0 and _RANK.get(s.id, 99) > _RANK[7]:
            insert_at = s.start
            break
    return wasm[:insert_at] + section + wasm[insert_at:]
