"""Resetting and reusing an instance gives exactly what a fresh instance per call gives.

The fast path restores memory and globals between calls instead of instantiating
afresh, when :mod:`supervm.vm.wasm` says that is enough. These tests run the
same calls on a normal runtime and on one with ``reuse_instances=False``, over
every example and hostile contract and over mutated variants of them (code
and data changed, kept only when they still deploy), and require byte-identical
receipts and identical state.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from supervm.memory import MemoryStorage
from supervm.vm import InvalidContractError, Runtime
from supervm.vm import fast_path as fast_path_module
from supervm.vm.wasm import sections

from .conftest import wat_contract

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "contracts"
ALICE, BOB = b"\x0a" * 20, b"\x0b" * 20
GAS = 300_000
CHECKSUM_GAS = 2_000_000


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


# Hand-written contracts that change tables or reuse the runtime's export names.
TABLES = wat_contract(
    """
  (type $t (func (result i32)))
  (table $tab 2 funcref)
  (elem (i32.const 0) $one $two)
  (func $one (result i32) (i32.const 1))
  (func $two (result i32) (i32.const 2))
  (func $answer (param i32)
    (i32.store (i32.const 0) (local.get 0))
    (call $return (i32.const 0) (i32.const 4)))
  (func (export "call0") (call $answer (call_indirect (type $t) (i32.const 0))))
  (func (export "clear") (table.fill $tab (i32.const 0) (ref.null func) (i32.const 1))
    (call $answer (table.size $tab)))
  (func (export "grow")
    (call $answer (table.grow $tab (ref.null func) (i32.const 3))))
  (func (export "size") (call $answer (table.size $tab)))
"""
)
CLASHING_NAMES = wat_contract(
    """
  (global $a (mut i32) (i32.const 0))
  (global $b (mut i32) (i32.const 0))
  (export "__supervm_global_1" (global $a))
  (func (export "probe")
    (global.set $a (i32.add (global.get $a) (i32.const 1)))
    (if (global.get $b) (then (call $return (i32.const 5) (i32.const 5)))
      (else (global.set $b (i32.const 1)) (call $return (i32.const 0) (i32.const 5)))))
""",
    data='(data (i32.const 0) "cleandirty")',
)

# check(): a checksum of all memory and globals, then every byte and global overwritten.
# Any byte a reset misses changes the next checksum.
CHECKSUM = wat_contract(
    """
  (global $g0 (mut i64) (i64.const 7))
  (global $g1 (mut i32) (i32.const 9))
  (func (export "check")
    (local $i i32) (local $sum i64) (local $end i32)
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (loop $sum_up
      (local.set $sum (i64.add (i64.rotl (local.get $sum) (i64.const 5))
                               (i64.load (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $sum_up (i32.lt_u (local.get $i) (local.get $end))))
    (local.set $sum (i64.add (local.get $sum)
                             (i64.add (global.get $g0) (i64.extend_i32_u (global.get $g1)))))
    (local.set $i (i32.const 0))
    (loop $fill
      (i64.store (local.get $i) (local.get $sum))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $i) (local.get $end))))
    (global.set $g0 (local.get $sum))
    (global.set $g1 (i32.wrap_i64 (local.get $sum)))
    (call $return (i32.const 0) (i32.const 8)))
""",
    memory="2",
    data='(data (i32.const 100) "first page") (data (i32.const 131000) "second page")',
)

CORPUS: dict[str, bytes] = {
    path.relative_to(EXAMPLES).with_suffix("").as_posix(): path.read_bytes()
    for path in sorted(EXAMPLES.rglob("*.wasm"))
}
CORPUS["tables"] = TABLES
CORPUS["clashing_names"] = CLASHING_NAMES
CORPUS["checksum"] = CHECKSUM

# (method, input, sender) calls for contracts whose methods need real inputs.
PLANS: dict[str, list[tuple[str, bytes, bytes]]] = {
    "token": [
        ("mint", ALICE + u64(1000), ALICE),
        ("transfer", BOB + u64(300), ALICE),
        ("transfer", ALICE + u64(5000), BOB),
        ("balance", ALICE, BOB),
        ("total_supply", b"", BOB),
        ("mint", BOB + u64(1), BOB),
        ("transfer", b"short", ALICE),
    ],
    "counter": [("increment", b"", ALICE), ("get", b"", ALICE), ("reset", b"", ALICE)],
    "registry": [
        ("register", b"\x03abcvalue", ALICE),
        ("register", b"\x02abv2", BOB),
        ("lookup", b"abc", ALICE),
        ("list", b"a", ALICE),
        ("count", b"", ALICE),
        ("register", b"\x03abcagain", BOB),
        ("lookup", b"zz", ALICE),
    ],
    "hasher": [("hash", struct.pack("<I", 3) + b"seed", ALICE), ("hash", b"x", ALICE)],
}


def plan_for(name: str, methods: frozenset[str]) -> list[tuple[str, bytes, bytes]]:
    plan = PLANS.get(name)
    if plan is None:  # every method, with an input that doubles as an address
        plan = [(method, BOB + b"data", ALICE) for method in sorted(methods)]
    return [call for call in plan if call[0] in methods]


def runtimes() -> tuple[Runtime, Runtime]:
    """A normal runtime (reset and reuse) and one that instantiates for every call."""
    return Runtime(MemoryStorage()), Runtime(MemoryStorage(), reuse_instances=False)


def run_both(name: str, code: bytes) -> bool:
    """Run the plan three times over on both runtimes; False if the code is refused."""
    reused, fresh = runtimes()
    try:
        address = fresh.deploy(code)
    except InvalidContractError:
        with pytest.raises(InvalidContractError):
            reused.deploy(code)
        return False
    assert reused.deploy(code) == address
    plan = plan_for(name, reused.compile(code).methods)
    gas = CHECKSUM_GAS if name == "checksum" else GAS
    for method, data, sender in plan * 3:
        a = reused.call(address, method, data, sender=sender, gas_limit=gas)
        b = fresh.call(address, method, data, sender=sender, gas_limit=gas)
        assert a.encode() == b.encode(), (name, method, a, b)
    assert list(reused.storage.scan(b"")) == list(fresh.storage.scan(b""))
    return True


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_reuse_equals_fresh_on_every_contract(name: str) -> None:
    deployed = run_both(name, CORPUS[name])
    assert deployed == (name != "wat/unknown_import")


def test_hand_written_contracts_stay_clean() -> None:
    reused, _ = runtimes()
    tables = reused.deploy(TABLES)
    for method in ("grow", "clear", "call0", "grow"):
        assert reused.call(tables, method, sender=ALICE).ok  # call0 after clear: a fresh table
    sizes = {reused.call(tables, "size", sender=ALICE).return_data for _ in range(3)}
    assert sizes == {struct.pack("<i", 2)}
    assert reused.call(tables, "call0", sender=ALICE).return_data == struct.pack("<i", 1)
    checksum = reused.deploy(CHECKSUM)
    sums = {reused.call(checksum, "check", sender=ALICE, gas_limit=CHECKSUM_GAS) for _ in range(3)}
    assert len(sums) == 1 and sums.pop().ok
    clashing = reused.deploy(CLASHING_NAMES)
    probes = {reused.call(clashing, "probe", sender=ALICE).return_data for _ in range(4)}
    assert probes == {b"clean"}


@pytest.mark.parametrize(("reuse", "instances"), [(True, 1), (False, 5)])
def test_reuse_instances_flag(monkeypatch: pytest.MonkeyPatch, reuse: bool, instances: int) -> None:
    made: list[object] = []
    original = fast_path_module._FastInstance

    def counting(*args: object) -> object:
        instance = original(*args)  # type: ignore[arg-type]
        made.append(instance)
        return instance

    monkeypatch.setattr(fast_path_module, "_FastInstance", counting)
    runtime = Runtime(MemoryStorage(), reuse_instances=reuse)
    address = runtime.deploy(CORPUS["wat/leak_probe"])
    for _ in range(5):
        assert runtime.call(address, "probe", sender=ALICE).return_data == b"clean"
    assert len(made) == instances


# -- mutated variants ------------------------------------------------------------------


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def split_vector(wasm: bytes, sid: int) -> tuple[int, int, list[bytes]] | None:
    """(start, end, raw items) of section ``sid``, for the code (10) and data (11) sections."""
    for s in sections(wasm):
        if s.id != sid:
            continue
        count, pos = read_uleb(wasm, s.payload_start)
        items = []
        for _ in range(count):
            if sid == 10:
                size, body = read_uleb(wasm, pos)
                items.append(wasm[body : body + size])
                pos = body + size
            else:  # only active segments of memory 0 at an i32.const offset
                if wasm[pos] != 0 or wasm[pos + 1] != 0x41:
                    return None
                end = wasm.index(b"\x0b", pos + 2) + 1
                size, data = read_uleb(wasm, end)
                items.append(wasm[pos : data + size])
                pos = data + size
        return s.start, s.end, items
    return None


def join_vector(wasm: bytes, sid: int, start: int, end: int, items: list[bytes]) -> bytes:
    if sid == 10:
        payload = uleb(len(items)) + b"".join(uleb(len(body)) + body for body in items)
    else:
        payload = uleb(len(items)) + b"".join(items)
    return wasm[:start] + bytes([sid]) + uleb(len(payload)) + payload + wasm[end:]


def body_start(body: bytes) -> int:
    """Offset of a function body's first instruction (after its locals)."""
    groups, pos = read_uleb(body, 0)
    for _ in range(groups):
        _, pos = read_uleb(body, pos)
        pos += 1
    return pos


ADDRESSES = st.one_of(
    st.sampled_from([0, 4, 16, 1024, 4096, 16380, 61440, 65535, 65536, 99996, 131071]),
    st.integers(0, 2 * 65536 - 1),
)
GLOBAL_INDICES = st.integers(0, 3)


def memory_counter(a: int) -> bytes:
    """If byte ``a`` is set, spend a little fuel (gas shows it); then add 1 to it."""
    at = b"\x41" + sleb(a)
    return (
        at
        + b"\x2d\x00\x00\x04\x40\x41\x00\x1a\x0b"
        + at
        + at
        + b"\x2d\x00\x00\x41\x01\x6a\x3a\x00\x00"
    )


def global_counter(g: int) -> bytes:
    """If global ``g`` is set, spend a little fuel; then add 1 to it."""
    get, set_ = b"\x23" + uleb(g), b"\x24" + uleb(g)
    return get + b"\x04\x40\x41\x00\x1a\x0b" + get + b"\x41\x01\x6a" + set_


# Instruction sequences that leave the stack as they found it.
SNIPPETS = st.one_of(
    st.builds(memory_counter, ADDRESSES),
    st.builds(memory_counter, ADDRESSES),
    st.builds(global_counter, GLOBAL_INDICES),
    st.builds(lambda a, v: b"\x41" + sleb(a) + b"\x41" + sleb(v) + b"\x36\x02\x00",
              ADDRESSES, st.integers(-(2**31), 2**31 - 1)),  # i32.store
    st.builds(lambda a: b"\x41" + sleb(a) + b"\x28\x02\x00\x04\x40\x00\x0b",
              ADDRESSES),  # trap if a memory word is set
    st.builds(lambda g: b"\x23" + uleb(g) + b"\x04\x40\x00\x0b",
              GLOBAL_INDICES),  # trap if a global is set
    st.just(b"\x41\x01\x40\x00\x1a"),  # memory.grow 1
)  # fmt: skip
BYTES = st.one_of(
    st.integers(0, 255), st.sampled_from([0x00, 0x01, 0x0B, 0x1A, 0x20, 0x21, 0x23, 0x24, 0x41])
)


@st.composite
def mutated(draw: st.DrawFn, code: bytes) -> bytes:
    """``code`` with one change to its code or data section."""
    kind = draw(st.sampled_from(["insert"] * 3 + ["byte", "const", "data", "data_insert"]))
    sid = 11 if kind.startswith("data") else 10
    split = split_vector(code, sid)
    if split is None or not split[2]:
        return code
    start, end, items = split
    i = draw(st.integers(0, len(items) - 1))
    item = items[i]
    if kind == "insert":
        at = draw(st.sampled_from([body_start(item), len(item) - 1]))
        item = item[:at] + draw(SNIPPETS) + item[at:]
    elif kind == "byte":
        at = draw(st.integers(0, len(item) - 1))
        item = item[:at] + bytes([draw(BYTES)]) + item[at + 1 :]
    elif kind == "const":
        found = [n for n in range(len(item) - 1) if item[n] == 0x41]
        if not found:
            return code
        at = draw(st.sampled_from(found)) + 1
        size = len(sleb(read_signed(item, at)))
        value = draw(st.one_of(st.integers(-64, 63), st.integers(-(2**31), 2**31 - 1)))
        item = item[:at] + sleb(value) + item[at + size :]
    elif kind == "data":
        at = draw(st.integers(0, len(item) - 1))
        item = item[:at] + bytes([draw(BYTES)]) + item[at + 1 :]
    else:  # data_insert: more bytes in the segment's contents
        header = item.index(b"\x0b", 2) + 1
        size, data = read_uleb(item, header)
        extra = draw(st.binary(min_size=1, max_size=8))
        at = draw(st.integers(data, len(item)))
        contents = item[data:at] + extra + item[at:]
        item = item[:header] + uleb(size + len(extra)) + contents
    items[i] = item
    return join_vector(code, sid, start, end, items)


def read_signed(data: bytes, pos: int) -> int:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result - (1 << shift) if byte & 0x40 else result


@st.composite
def variants(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(n for n in CORPUS if n != "wat/unknown_import")))
    code = CORPUS[name]
    for _ in range(draw(st.integers(1, 3))):
        try:
            code = draw(mutated(code))
        except (IndexError, ValueError):  # an earlier change broke the structure
            break
    return name, code


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(variants())
def test_reuse_equals_fresh_on_mutated_contracts(variant: tuple[str, bytes]) -> None:
    name, code = variant
    event("deployed" if run_both(name, code) else "refused")


def test_mutations_mostly_deploy() -> None:
    """The mutations yield enough deployable variants for the test above to mean something."""
    runtime = Runtime(MemoryStorage())
    deployable: list[bool] = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(variants())
    def collect(variant: tuple[str, bytes]) -> None:
        try:
            runtime.compile(variant[1])
        except InvalidContractError:
            deployable.append(False)
        else:
            deployable.append(True)

    collect()
    assert sum(deployable) >= len(deployable) // 4, f"{sum(deployable)} of {len(deployable)}"
