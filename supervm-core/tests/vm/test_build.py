"""build_contract and the committed example contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from supervm.errors import SuperVMError
from supervm.vm import build
from supervm.vm.abi import HOST_FUNCTIONS, HOST_MODULE, Limits
from supervm.vm.build import BuildError, build_contract, compiler_available, include_dir

REPO = Path(__file__).resolve().parents[3]
CONTRACTS = REPO / "examples" / "contracts"
C_SOURCES = sorted(CONTRACTS.glob("*.c"))
WAT_SOURCES = sorted((CONTRACTS / "wat").glob("*.wat"))
WASM_FILES = sorted(CONTRACTS.glob("*.wasm")) + sorted((CONTRACTS / "wat").glob("*.wasm"))
ABI = {spec.name: (spec.params, spec.results) for spec in HOST_FUNCTIONS}

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="ziglang is not installed")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CONTRACTS)) for p in paths]


def test_examples_are_present() -> None:
    assert {p.stem for p in C_SOURCES} >= {"token", "counter", "registry", "hasher"}
    assert {p.stem for p in WAT_SOURCES} >= {
        "counter", "infinite_loop", "deep_recursion", "memory_bomb", "bad_pointer",
        "leak_probe", "unknown_import", "big_key", "float_nan",
    }  # fmt: skip
    for source in C_SOURCES + WAT_SOURCES:
        assert source.with_suffix(".wasm").is_file(), f"{source.name} has no committed .wasm"


@needs_compiler
@pytest.mark.parametrize("source", C_SOURCES, ids=_ids(C_SOURCES))
def test_c_examples_rebuild_byte_for_byte(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.wasm"
    wasm = build_contract(source, output)
    assert output.read_bytes() == wasm
    assert wasm == source.with_suffix(".wasm").read_bytes(), (
        f"{source.name} does not rebuild to the committed {source.stem}.wasm"
    )


@needs_compiler
def test_output_does_not_depend_on_paths(tmp_path: Path) -> None:
    source = CONTRACTS / "counter.c"
    elsewhere = tmp_path / "some" / "other dir" / "renamed.c"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(source.read_bytes())
    first = build_contract(source, tmp_path / "a.wasm")
    second = build_contract(elsewhere, tmp_path / "a-much-longer-output-name.wasm")
    assert first == second


@pytest.mark.parametrize("source", WAT_SOURCES, ids=_ids(WAT_SOURCES))
def test_wat_examples_match_their_wasm(source: Path) -> None:
    wasm = bytes(wasmtime.wat2wasm(source.read_text(encoding="utf-8")))
    assert wasm == source.with_suffix(".wasm").read_bytes()


@pytest.mark.parametrize("path", WASM_FILES, ids=_ids(WASM_FILES))
def test_committed_wasm_follows_the_abi(path: Path) -> None:
    limits = Limits()
    code = path.read_bytes()
    assert len(code) <= limits.max_code_size
    module = wasmtime.Module(wasmtime.Engine(), code)
    names = []
    for item in module.imports:
        assert item.module == HOST_MODULE, f"import from module {item.module!r}"
        functype = item.type
        assert isinstance(functype, wasmtime.FuncType), f"{item.name} is not a function"
        name = item.name or ""
        names.append(name)
        if name in ABI:
            signature = (
                tuple(str(t) for t in functype.params),
                tuple(str(t) for t in functype.results),
            )
            assert signature == ABI[name], f"{name} imported with signature {signature}"
    unknown = [name for name in names if name not in ABI]
    if path.stem == "unknown_import":
        assert unknown == ["not_a_host_function"]
    else:
        assert unknown == []

    exports = {item.name: item.type for item in module.exports}
    memory = exports.pop("memory", None)
    assert isinstance(memory, wasmtime.MemoryType)
    assert 1 <= memory.limits.min <= 2
    assert exports, "no methods exported"
    for name, kind in exports.items():
        assert isinstance(kind, wasmtime.FuncType), f"export {name} is not a function"
        assert (list(kind.params), list(kind.results)) == ([], []), f"method {name}"


def test_c_examples_export_their_methods() -> None:
    expected = {
        "token": {"mint", "transfer", "balance", "total_supply"},
        "counter": {"increment", "get", "reset"},
        "registry": {"register", "lookup", "list", "count"},
        "hasher": {"hash"},
    }
    for stem, methods in expected.items():
        module = wasmtime.Module(wasmtime.Engine(), (CONTRACTS / f"{stem}.wasm").read_bytes())
        assert {e.name for e in module.exports} == methods | {"memory"}, stem


def test_include_dir_holds_the_header() -> None:
    assert (include_dir() / "supervm.h").is_file()


def test_build_error_is_a_supervm_error() -> None:
    assert issubclass(BuildError, SuperVMError)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not found"):
        build_contract(tmp_path / "nope.c")


def test_missing_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "ok.c"
    source.write_text("int x;\n", encoding="utf-8")
    monkeypatch.setattr(build, "compiler_available", lambda: False)
    with pytest.raises(BuildError, match=r"supervm-core\[build\]"):
        build_contract(source)


@needs_compiler
def test_syntax_error_reports_the_compiler_message(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text(
        '#include "supervm.h"\nSUPERVM_EXPORT(f) void f(void) { return_data(0, 0) }\n',
        encoding="utf-8",
    )
    output = tmp_path / "broken.wasm"
    with pytest.raises(BuildError) as info:
        build_contract(source, output)
    message = str(info.value)
    assert "broken.c" in message
    assert "error" in message and "expected ';'" in message
    assert "expected ';'" in info.value.stderr
    assert not output.exists()


@needs_compiler
def test_link_error_reports_the_undefined_symbol(tmp_path: Path) -> None:
    source = tmp_path / "undefined.c"
    source.write_text(
        'void nowhere(void);\n__attribute__((export_name("f"))) void f(void) { nowhere(); }\n',
        encoding="utf-8",
    )
    with pytest.raises(BuildError, match="nowhere"):
        build_contract(source)
