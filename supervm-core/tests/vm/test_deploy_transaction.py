"""Deploying a contract by a call to the deploy address, and resolving it through the view."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from supervm.layout import CODE_PREFIX, CONTRACT_PREFIX
from supervm.memory import MemoryStorage
from supervm.state import OverlayView, StateView, StorageView
from supervm.vm import (
    DEPLOY_ADDRESS,
    DEPLOY_BASE_GAS,
    DEPLOY_GAS_PER_BYTE,
    DEPLOY_METHOD,
    MAX_SALT_SIZE,
    Receipt,
    Runtime,
    Status,
    contract_address,
    deploy_input,
    parse_deploy_input,
)
from supervm.vm.engine import code_hash

from .conftest import wat_contract

CONTRACTS = Path(__file__).resolve().parents[3] / "examples" / "contracts"
COUNTER = (CONTRACTS / "counter.wasm").read_bytes()
TOKEN = (CONTRACTS / "token.wasm").read_bytes()
SENDER = b"\xaa" * 20


def deploy(
    runtime: Runtime,
    code: bytes,
    salt: bytes = b"",
    *,
    view: StateView | None = None,
    gas: int = 10**7,
) -> Receipt:
    """Run a deploy transaction of ``code`` against ``view`` (the bare store by default)."""
    return runtime.run(
        DEPLOY_ADDRESS,
        DEPLOY_METHOD,
        deploy_input(code, salt),
        sender=SENDER,
        gas_limit=gas,
        view=StorageView(runtime.storage) if view is None else view,
    )


def expected_writes(code: bytes, salt: bytes = b"") -> tuple[tuple[bytes, bytes], ...]:
    digest = code_hash(code)
    address = contract_address(code, salt)
    return ((CODE_PREFIX + digest, code), (CONTRACT_PREFIX + address, digest))


def increment(runtime: Runtime, address: bytes, view: StateView) -> Receipt:
    return runtime.run(address, "increment", sender=SENDER, view=view)


# -- the input ---------------------------------------------------------------------------


def test_deploy_input_round_trips() -> None:
    assert deploy_input(b"code", b"salt") == b"\x04saltcode"
    assert parse_deploy_input(b"\x04saltcode") == (b"code", b"salt")
    assert parse_deploy_input(deploy_input(COUNTER)) == (COUNTER, b"")
    salt = b"s" * MAX_SALT_SIZE
    assert parse_deploy_input(deploy_input(COUNTER, salt)) == (COUNTER, salt)
    assert deploy_input(bytearray(b"ab")) == b"\x00ab"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (bytes((MAX_SALT_SIZE + 1,)) + b"x" * 100, "salt of 65 bytes"),
        (b"\x05abc", "truncated"),
    ],
)
def test_parse_deploy_input_names_what_is_wrong(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_deploy_input(data)


def test_deploy_input_refuses_a_long_salt() -> None:
    with pytest.raises(ValueError, match="salt of 65 bytes exceeds the limit of 64"):
        deploy_input(COUNTER, b"s" * (MAX_SALT_SIZE + 1))
    with pytest.raises(TypeError, match="salt must be bytes"):
        deploy_input(COUNTER, "salt")  # type: ignore[arg-type]


# -- the deploy transaction -----------------------------------------------------------------


def test_deploy_returns_the_address_and_the_write_set_and_writes_nothing(
    runtime: Runtime,
) -> None:
    before = list(runtime.storage.scan(b""))
    receipt = deploy(runtime, COUNTER, b"salt")
    address = contract_address(COUNTER, b"salt")
    assert receipt.status is Status.OK, receipt.error
    assert receipt.return_data == address
    assert receipt.write_set == expected_writes(COUNTER, b"salt")
    assert list(receipt.write_set) == sorted(receipt.write_set)
    assert receipt.read_set == (CONTRACT_PREFIX + address,)
    assert receipt.scan_set == () and receipt.events == ()
    assert receipt.gas_used == DEPLOY_BASE_GAS + DEPLOY_GAS_PER_BYTE * len(COUNTER)
    assert list(runtime.storage.scan(b"")) == before
    assert runtime.contract_code(address) is None
    assert receipt.encode() == deploy(runtime, COUNTER, b"salt").encode()


def test_applied_write_set_makes_the_contract_callable(runtime: Runtime) -> None:
    receipt = deploy(runtime, COUNTER)
    runtime.storage.write_batch(list(receipt.write_set))
    address = receipt.return_data
    call = runtime.call(address, "increment", sender=SENDER)
    assert call.status is Status.OK, call.error
    assert struct.unpack("<Q", call.return_data) == (1,)
    assert runtime.contract_code(address) == COUNTER


def test_a_contract_deployed_in_the_view_runs_before_it_is_committed(runtime: Runtime) -> None:
    receipt = deploy(runtime, COUNTER)
    address = receipt.return_data
    view = OverlayView(StorageView(runtime.storage))
    view.update(receipt.write_set)
    call = increment(runtime, address, view)
    assert call.status is Status.OK, call.error
    assert struct.unpack("<Q", call.return_data) == (1,)
    # Found only in the view: not remembered, so the bare store still has no contract there.
    bare = increment(runtime, address, StorageView(runtime.storage))
    assert bare.status is Status.REJECTED
    assert bare.error == f"no contract at address {address.hex()}"
    assert runtime.call(address, "increment", sender=SENDER).status is Status.REJECTED


def test_committing_call_deploys(runtime: Runtime) -> None:
    receipt = runtime.call(DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(COUNTER), sender=SENDER)
    assert receipt.status is Status.OK, receipt.error
    for key, value in receipt.write_set:
        assert runtime.storage.get(key) == value
    assert runtime.call(receipt.return_data, "increment", sender=SENDER).status is Status.OK


def test_deploy_to_an_address_already_deployed_is_ok_and_idempotent(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER, salt=b"x")
    receipt = deploy(runtime, COUNTER, b"x")
    assert receipt.status is Status.OK, receipt.error
    assert receipt.return_data == address
    assert receipt.write_set == expected_writes(COUNTER, b"x")
    # The same through a view already holding the deploy.
    view = OverlayView(StorageView(MemoryStorage()))
    first = deploy(runtime, TOKEN, view=view)
    view.update(first.write_set)
    second = deploy(runtime, TOKEN, view=view)
    assert second.status is Status.OK
    assert second.encode() == first.encode()


def test_salt_changes_the_address(runtime: Runtime) -> None:
    one, two = deploy(runtime, COUNTER, b"1"), deploy(runtime, COUNTER, b"2")
    assert one.return_data != two.return_data
    assert one.write_set[0] == two.write_set[0]  # the same code entry


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (b"definitely not wasm", "not valid WebAssembly"),
        (b"", "not valid WebAssembly"),
        (b"\0asm\1\0\0\0", "must export its linear memory"),
    ],
)
def test_invalid_code_is_rejected_with_no_writes(runtime: Runtime, code: bytes, error: str) -> None:
    receipt = deploy(runtime, code)
    assert receipt.status is Status.REJECTED
    assert receipt.error is not None and error in receipt.error
    assert receipt.write_set == ()


def test_malformed_deploy_input_is_rejected(runtime: Runtime) -> None:
    view = StorageView(runtime.storage)
    for data in (b"", b"\x41" + b"x" * 80, b"\x09short"):
        receipt = runtime.run(DEPLOY_ADDRESS, DEPLOY_METHOD, data, sender=SENDER, view=view)
        assert receipt.status is Status.REJECTED
        assert receipt.error and "deploy input" in receipt.error
        assert receipt.write_set == ()


def test_the_deploy_address_takes_only_the_deploy_method(runtime: Runtime) -> None:
    receipt = runtime.run(
        DEPLOY_ADDRESS, "increment", deploy_input(COUNTER), sender=SENDER,
        view=StorageView(runtime.storage),
    )  # fmt: skip
    assert receipt.status is Status.REJECTED
    assert receipt.error is not None
    assert receipt.error.startswith("the deploy address takes only the deploy method")
    assert receipt.write_set == ()


def test_out_of_gas_deploy_writes_nothing(runtime: Runtime) -> None:
    cost = DEPLOY_BASE_GAS + DEPLOY_GAS_PER_BYTE * len(COUNTER)
    short = deploy(runtime, COUNTER, gas=cost - 1)
    assert short.status is Status.OUT_OF_GAS
    assert short.gas_used == cost - 1
    assert short.write_set == ()
    exact = deploy(runtime, COUNTER, gas=cost)
    assert exact.status is Status.OK and exact.gas_used == cost


def test_deploy_gas_is_deterministic_and_grows_with_code_size(runtime: Runtime) -> None:
    assert len(TOKEN) > len(COUNTER)
    small, big = deploy(runtime, COUNTER), deploy(runtime, TOKEN)
    assert small.gas_used == deploy(runtime, COUNTER).gas_used
    assert small.gas_used == Runtime(fast=False).run(
        DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(COUNTER), sender=SENDER,
        view=StorageView(MemoryStorage()),
    ).gas_used  # fmt: skip
    assert big.gas_used - small.gas_used == DEPLOY_GAS_PER_BYTE * (len(TOKEN) - len(COUNTER))


def test_owned_only_deploy_is_forbidden(runtime: Runtime) -> None:
    receipt = runtime.run(
        DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(COUNTER), sender=SENDER,
        view=StorageView(runtime.storage), owned_only=True,
    )  # fmt: skip
    assert receipt.status is Status.FORBIDDEN
    assert receipt.write_set == ()


def test_deploy_input_may_exceed_the_call_input_limit() -> None:
    runtime = Runtime()
    limit = runtime.limits.max_input_size
    big = wat_contract(
        '(func (export "f"))', memory="2", data=f'(data (i32.const 0) "{"a" * limit}")'
    )
    assert len(big) > limit
    receipt = deploy(runtime, big)
    assert receipt.status is Status.OK, receipt.error
    huge = b"\0" * (1 + MAX_SALT_SIZE + runtime.limits.max_code_size + 1)
    receipt = runtime.run(
        DEPLOY_ADDRESS, DEPLOY_METHOD, huge, sender=SENDER, view=StorageView(runtime.storage)
    )
    assert receipt.status is Status.REJECTED
    assert receipt.error == f"input of {len(huge)} bytes exceeds the limit of {len(huge) - 1}"


# -- resolution ----------------------------------------------------------------------------


def test_an_address_in_neither_store_nor_view_is_rejected(runtime: Runtime) -> None:
    address = contract_address(COUNTER, b"nowhere")
    view = OverlayView(StorageView(runtime.storage))
    receipt = increment(runtime, address, view)
    assert receipt.status is Status.REJECTED
    assert receipt.error == f"no contract at address {address.hex()}"


def test_forget_contracts_drops_contracts_deleted_from_the_store(runtime: Runtime) -> None:
    address = runtime.deploy(COUNTER)
    assert runtime.call(address, "increment", sender=SENDER).status is Status.OK
    runtime.storage.write_batch([(key, None) for key, _ in expected_writes(COUNTER)])
    runtime.forget_contracts()
    receipt = runtime.call(address, "increment", sender=SENDER)
    assert receipt.status is Status.REJECTED
    assert receipt.error == f"no contract at address {address.hex()}"
    assert increment(runtime, address, StorageView(runtime.storage)).status is Status.REJECTED


def test_owned_only_calls_do_not_see_contracts_only_the_view_holds(runtime: Runtime) -> None:
    receipt = deploy(runtime, COUNTER)
    view = OverlayView(StorageView(runtime.storage))
    view.update(receipt.write_set)
    call = runtime.run(receipt.return_data, "increment", sender=SENDER, view=view, owned_only=True)
    assert call.status is Status.REJECTED
    assert call.error == f"no contract at address {receipt.return_data.hex()}"
