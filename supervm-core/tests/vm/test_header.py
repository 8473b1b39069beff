"""supervm.h and docs/abi.md agree with the ABI table (supervm.vm.abi)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import wasmtime

from supervm.vm.abi import ABI_VERSION, HOST_FUNCTIONS, HOST_MODULE, Limits
from supervm.vm.build import build_contract, compiler_available, include_dir

REPO = Path(__file__).resolve().parents[3]
HEADER = REPO / "supervm-core" / "src" / "supervm" / "include" / "supervm.h"
ABI_DOC = REPO / "docs" / "abi.md"

Signature = tuple[tuple[str, ...], tuple[str, ...]]

DECLARATION = re.compile(
    r"^SUPERVM_IMPORT\((?P<import>\w+)\)\s+(?P<ret>[\w\s*]+?)\s*\b(?P<name>\w+)\((?P<params>[^)]*)\);$"
)
_SCALARS = {"int32_t": "i32", "uint32_t": "i32", "int64_t": "i64", "uint64_t": "i64"}


def _wasm_type(c_type: str) -> str:
    """The wasm32 value type of a C parameter or return type (pointers are i32)."""
    if "*" in c_type:
        return "i32"
    words = [w for w in c_type.split() if w != "const"]
    assert len(words) == 1, f"unexpected C type {c_type!r}"
    assert words[0] in _SCALARS, f"unexpected C type {c_type!r}"
    return _SCALARS[words[0]]


def _param_type(param: str) -> str:
    """The wasm type of one C parameter such as ``const void *key`` or ``int32_t len``."""
    param = param.strip()
    match = re.fullmatch(r"(.*?[\s*])(\w+)", param)
    assert match, f"unnamed or malformed parameter {param!r}"
    return _wasm_type(match.group(1))


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


def _section(text: str, name: str) -> str:
    begin, end = f"/* BEGIN {name} */", f"/* END {name} */"
    assert text.count(begin) == 1 and text.count(end) == 1, f"section {name} not marked once"
    return text[text.index(begin) + len(begin) : text.index(end)]


def parse_declarations(section: str) -> dict[str, Signature]:
    """Declarations of a header section; every non-blank, non-preprocessor line must be one."""
    found: dict[str, Signature] = {}
    for line in _strip_comments(section).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = DECLARATION.match(line)
        assert match, f"not a host function declaration: {line!r}"
        name = match.group("name")
        assert match.group("import") == name, f"{name}: imported as {match.group('import')}"
        assert name not in found, f"{name} declared twice"
        ret = match.group("ret").strip()
        results = () if ret == "void" else (_wasm_type(ret),)
        params_text = match.group("params").strip()
        params = (
            () if params_text == "void" else tuple(_param_type(p) for p in params_text.split(","))
        )
        found[name] = (params, results)
    return found


def header_text() -> str:
    return HEADER.read_text(encoding="utf-8")


def test_header_is_installed_with_the_package() -> None:
    assert include_dir() / "supervm.h" == HEADER.resolve()


def test_core_section_declares_exactly_the_abi() -> None:
    declared = parse_declarations(_section(header_text(), "SUPERVM CORE HOST FUNCTIONS"))
    assert list(declared) == [spec.name for spec in HOST_FUNCTIONS]
    for spec in HOST_FUNCTIONS:
        assert declared[spec.name] == (spec.params, spec.results), spec.name


def test_core_comments_give_each_function_its_gas() -> None:
    section = _section(header_text(), "SUPERVM CORE HOST FUNCTIONS")
    for spec in HOST_FUNCTIONS:
        gas = f"{spec.base_gas} + {spec.byte_gas}/byte" if spec.byte_gas else f"{spec.base_gas}"
        pattern = rf"Gas: {re.escape(gas)}\b[^\n]*\*/\s*\nSUPERVM_IMPORT\({spec.name}\)"
        assert re.search(pattern, section), f"{spec.name}: comment should say 'Gas: {gas}'"


def test_plugin_section_is_separate_and_optional() -> None:
    text = header_text()
    section = _section(text, "SUPERVM PLUGIN HOST FUNCTIONS")
    declared = parse_declarations(section)
    assert declared == {"sha256": (("i32", "i32"), ("i32",))}
    assert not set(declared) & {spec.name for spec in HOST_FUNCTIONS}
    assert "#ifdef SUPERVM_PLUGIN_SHA256" in section
    # Nothing is declared outside the two sections.
    rest = text.replace(section, "").replace(_section(text, "SUPERVM CORE HOST FUNCTIONS"), "")
    assert not re.search(r"^SUPERVM_IMPORT\(", rest, flags=re.MULTILINE)


def test_macros() -> None:
    text = header_text()
    assert re.search(rf"^#define SUPERVM_ABI_VERSION {ABI_VERSION}$", text, flags=re.MULTILINE)
    assert f'import_module("{HOST_MODULE}")' in text
    assert re.search(
        r"^#define SUPERVM_EXPORT\(name\) __attribute__\(\(export_name\(#name\)\)\)$",
        text,
        flags=re.MULTILINE,
    )
    limits = Limits()
    expected = {
        "SUPERVM_MAX_KEY_SIZE": limits.max_key_size,
        "SUPERVM_MAX_VALUE_SIZE": limits.max_value_size,
        "SUPERVM_MAX_INPUT_SIZE": limits.max_input_size,
        "SUPERVM_MAX_RETURN_SIZE": limits.max_return_size,
        "SUPERVM_MAX_EVENTS": limits.max_events,
        "SUPERVM_MAX_TOPIC_SIZE": limits.max_topic_size,
        "SUPERVM_MAX_EVENT_DATA_SIZE": limits.max_event_data_size,
        "SUPERVM_MAX_ITERATORS": limits.max_iterators,
    }
    for macro, value in expected.items():
        match = re.search(rf"^#define {macro} (.+)$", text, flags=re.MULTILINE)
        assert match, macro
        expression = match.group(1).strip()
        assert re.fullmatch(r"[\d\s*()]+", expression), expression
        product = 1
        for factor in re.findall(r"\d+", expression):
            product *= int(factor)
        assert product == value, macro


@pytest.mark.skipif(not compiler_available(), reason="ziglang is not installed")
def test_header_compiles_to_the_abi_imports(tmp_path: Path) -> None:
    """A contract calling every declared function imports exactly the table's signatures."""
    declared = parse_declarations(_section(header_text(), "SUPERVM CORE HOST FUNCTIONS"))
    calls = "\n".join(
        f"    (void){name}({', '.join('0' for _ in params)});"
        for name, (params, _) in declared.items()
    )
    source = tmp_path / "all.c"
    source.write_text(
        f'#include "supervm.h"\nSUPERVM_EXPORT(all) void all(void) {{\n{calls}\n}}\n',
        encoding="utf-8",
    )
    module = wasmtime.Module(wasmtime.Engine(), build_contract(source))
    imports: dict[str, Signature] = {}
    for item in module.imports:
        assert item.module == HOST_MODULE
        functype = item.type
        assert isinstance(functype, wasmtime.FuncType)
        imports[item.name or ""] = (
            tuple(str(t) for t in functype.params),
            tuple(str(t) for t in functype.results),
        )
    assert imports == {spec.name: (spec.params, spec.results) for spec in HOST_FUNCTIONS}


# -- docs/abi.md --------------------------------------------------------------------------


def _doc_table() -> list[tuple[str, Signature, str]]:
    """Rows of the ``function | wasm signature | gas`` table in docs/abi.md."""
    lines = ABI_DOC.read_text(encoding="utf-8").splitlines()
    header = [i for i, line in enumerate(lines) if re.fullmatch(
        r"\|\s*function\s*\|\s*wasm signature\s*\|\s*gas\s*\|", line.strip()
    )]  # fmt: skip
    assert len(header) == 1, "docs/abi.md needs one 'function | wasm signature | gas' table"
    rows = []
    for line in lines[header[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("`").strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, line
        name, signature, gas = cells
        match = re.fullmatch(r"\(([^)]*)\)\s*->\s*(.+)", signature)
        assert match, f"{name}: signature {signature!r} is not '(params) -> results'"
        params = tuple(p.strip() for p in match.group(1).split(",") if p.strip())
        results_text = match.group(2).strip()
        results = () if results_text == "()" else tuple(
            r.strip() for r in results_text.strip("()").split(",")
        )  # fmt: skip
        rows.append((name, (params, results), gas))
    return rows


def test_doc_table_matches_the_abi() -> None:
    rows = _doc_table()
    assert [name for name, _, _ in rows] == [spec.name for spec in HOST_FUNCTIONS]
    for (name, signature, gas), spec in zip(rows, HOST_FUNCTIONS, strict=True):
        assert signature == (spec.params, spec.results), name
        want = f"{spec.base_gas} + {spec.byte_gas}/byte" if spec.byte_gas else f"{spec.base_gas}"
        assert gas == want, f"{name}: gas {gas!r}, the table says {want!r}"


def test_doc_describes_every_function_and_limit() -> None:
    text = ABI_DOC.read_text(encoding="utf-8")
    for spec in HOST_FUNCTIONS:
        assert re.search(rf"^### `{spec.name}`", text, flags=re.MULTILINE), spec.name
    assert f"ABI_VERSION = {ABI_VERSION}" in text or f"version {ABI_VERSION}" in text
    for field in Limits.__dataclass_fields__:
        assert f"`{field}`" in text, f"docs/abi.md does not mention Limits.{field}"
