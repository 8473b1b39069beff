"""The SuperVM runtime: deploy contracts and call them against any :class:`Storage`.

A contract is deployed either directly (:meth:`Runtime.deploy` writes to the
store) or by a call to :data:`DEPLOY_ADDRESS`, whose receipt carries the code
and contract record as its write set, like any other call's writes.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from supervm.layout import CODE_PREFIX, CONTRACT_PREFIX, MARKER, STATE_PREFIX, check_layout
from supervm.memory import MemoryStorage
from supervm.state import BatchOp, StateView, StorageView, WriteSet
from supervm.storage import Storage
from supervm.vm._capi import STACK_OVERFLOW
from supervm.vm.abi import HOST_MODULE, Limits
from supervm.vm.callpath import CallPath
from supervm.vm.engine import (
    CompiledContract,
    InvalidContractError,
    code_hash,
    compile_contract,
    make_engine,
)
from supervm.vm.fast_path import FastPath
from supervm.vm.host import (
    CORE_FUNCTIONS,
    Forbidden,
    Host,
    HostError,
    HostFunction,
    OutOfGas,
    Revert,
)
from supervm.vm.public_path import PublicPath

__all__ = [
    "DEPLOY_ADDRESS",
    "DEPLOY_BASE_GAS",
    "DEPLOY_GAS_PER_BYTE",
    "DEPLOY_METHOD",
    "MAX_SALT_SIZE",
    "Event",
    "Ownership",
    "Receipt",
    "Runtime",
    "Status",
    "contract_address",
    "deploy_input",
    "parse_deploy_input",
]

ADDRESS_SIZE = 20
MAX_SENDER_SIZE = 64
DEFAULT_GAS_LIMIT = 10_000_000

#: The reserved address a deploy transaction calls (no contract lives there).
DEPLOY_ADDRESS = b"\x00" * ADDRESS_SIZE
#: The one method :data:`DEPLOY_ADDRESS` takes.
DEPLOY_METHOD = "deploy"
#: Gas a deploy transaction costs: this, plus :data:`DEPLOY_GAS_PER_BYTE` per byte of code.
DEPLOY_BASE_GAS = 20_000
DEPLOY_GAS_PER_BYTE = 10
#: Longest salt a deploy transaction may carry.
MAX_SALT_SIZE = 64


class Status(enum.StrEnum):
    """How a call ended."""

    OK = "ok"
    REVERTED = "reverted"
    OUT_OF_GAS = "out_of_gas"
    TRAPPED = "trapped"
    REJECTED = "rejected"
    FORBIDDEN = "forbidden"


class Event(NamedTuple):
    """An event a contract emitted."""

    contract: bytes
    topic: bytes
    data: bytes


class Receipt(NamedTuple):
    """The outcome of one call. Only ``ok`` receipts carry a write set that was applied."""

    status: Status
    return_data: bytes = b""
    gas_used: int = 0
    events: tuple[Event, ...] = ()
    error: str | None = None
    #: Storage keys the call read from state (sorted).
    read_set: tuple[bytes, ...] = ()
    #: Key prefixes the call iterated over (in call order).
    scan_set: tuple[bytes, ...] = ()
    #: (key, value or None for a delete), sorted by key.
    write_set: WriteSet = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def encode(self) -> bytes:
        """Canonical bytes of the receipt (used for digests and equality across runs)."""
        pack = struct.pack
        error = (self.error or "").encode()
        status = self.status.value.encode()
        parts = [
            pack(">I", len(status)), status,
            pack(">I", len(self.return_data)), self.return_data,
            pack(">Q", self.gas_used),
            pack(">I", len(error)), error,
            pack(">I", len(self.events)),
        ]  # fmt: skip
        for event in self.events:
            for data in event:
                parts += (pack(">I", len(data)), data)
        parts.append(pack(">I", len(self.read_set)))
        for key in self.read_set:
            parts += (pack(">I", len(key)), key)
        parts.append(pack(">I", len(self.scan_set)))
        for prefix in self.scan_set:
            parts += (pack(">I", len(prefix)), prefix)
        parts.append(pack(">I", len(self.write_set)))
        for key, value in self.write_set:
            parts += (pack(">I", len(key)), key)
            if value is None:
                parts.append(b"\0")
            else:
                parts += (b"\1", pack(">I", len(value)), value)
        return b"".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (bytes as hex)."""
        return {
            "status": self.status.value,
            "return_data": self.return_data.hex(),
            "gas_used": self.gas_used,
            "error": self.error,
            "events": [
                {"contract": e.contract.hex(), "topic": e.topic.hex(), "data": e.data.hex()}
                for e in self.events
            ],
            "read_set": [k.hex() for k in self.read_set],
            "scan_set": [p.hex() for p in self.scan_set],
            "write_set": [[k.hex(), None if v is None else v.hex()] for k, v in self.write_set],
        }


#: Contract code as the runtime accepts it (``wasmtime.wat2wasm`` returns a bytearray).
Code = bytes | bytearray | memoryview


def _code_bytes(code: object) -> bytes:
    """``code`` as bytes; TypeError unless it is bytes-like."""
    if isinstance(code, (bytes, bytearray, memoryview)):
        return bytes(code)
    raise TypeError(
        f"contract code must be bytes, bytearray or memoryview, not {type(code).__name__}"
    )


def contract_address(code: bytes, salt: bytes = b"") -> bytes:
    """The 20-byte address a contract with this code and salt is deployed at."""
    return hashlib.sha256(b"supervm/contract" + code_hash(code) + salt).digest()[:ADDRESS_SIZE]


def deploy_input(code: Code, salt: bytes = b"") -> bytes:
    """The input of a deploy transaction: salt length (1 byte), salt, code."""
    code = _code_bytes(code)
    if type(salt) is not bytes:
        raise TypeError(f"salt must be bytes, not {type(salt).__name__}")
    if len(salt) > MAX_SALT_SIZE:
        raise ValueError(f"salt of {len(salt)} bytes exceeds the limit of {MAX_SALT_SIZE}")
    return bytes((len(salt),)) + salt + code


def parse_deploy_input(data: bytes) -> tuple[bytes, bytes]:
    """The ``(code, salt)`` of a deploy transaction's input; ValueError if malformed."""
    if not data:
        raise ValueError("deploy input is empty: it starts with the salt length")
    size = data[0]
    if size > MAX_SALT_SIZE:
        raise ValueError(f"deploy input names a salt of {size} bytes; the limit is {MAX_SALT_SIZE}")
    if len(data) < 1 + size:
        raise ValueError(
            f"deploy input is truncated: it names a salt of {size} bytes "
            f"but holds only {len(data) - 1}"
        )
    return bytes(data[1 + size :]), bytes(data[1 : 1 + size])


def _deploy_writes(code: bytes, digest: bytes, address: bytes) -> WriteSet:
    """The write set that deploys ``code`` (hash ``digest``) at ``address``, sorted by key."""
    return tuple(sorted(((CODE_PREFIX + digest, code), (CONTRACT_PREFIX + address, digest))))


class Ownership(Protocol):
    """Who owns a state key: a call may write an owned key only as its owner."""

    def owner(self, state_key: bytes) -> bytes | None:
        """The owner of a full state key, or ``None`` for a shared object."""


class Runtime:
    """Deploys WebAssembly contracts and executes calls against a store.

    ``Runtime()`` uses a fresh in-memory store. Calls run through :attr:`path`:
    the hot path :class:`~supervm.vm.fast_path.FastPath` (wasmtime's unchecked
    C API), or with ``fast=False`` the fallback
    :class:`~supervm.vm.public_path.PublicPath` (wasmtime-py's public API); both
    give identical receipts. The fast path resets and reuses one instance per
    contract and thread; ``reuse_instances=False`` makes it instantiate afresh
    for every call instead (the public path always does). With an ``ownership``
    policy, a call may write an owned state key only when its sender is the
    owner (status ``forbidden`` otherwise).

    Committing calls (:meth:`call`, :meth:`execute`) may come from several
    threads: each runs and commits under one lock, so none loses another's
    writes. :meth:`run` takes no lock.

    A call finds its contract in the store (remembering the address once found)
    or else in the call's view, where a deploy earlier in the same block left it.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        fast: bool = True,
        limits: Limits | None = None,
        release_gil: bool = False,
        reuse_instances: bool = True,
        extra_host_functions: Iterable[HostFunction] | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.storage: Storage = MemoryStorage() if storage is None else storage
        self._layout_marked = check_layout(self.storage)
        self.limits = limits or Limits()
        self.engine = make_engine(self.limits)
        if extra_host_functions is None:
            from supervm.vm.plugins import plugin_host_functions

            extra_host_functions = plugin_host_functions()
        self.host_functions: list[HostFunction] = list(CORE_FUNCTIONS)
        names = {spec.name for spec, _ in self.host_functions}
        for spec, impl in extra_host_functions:
            if spec.name in names:
                raise ValueError(f"host function {spec.name!r} is defined twice")
            names.add(spec.name)
            self.host_functions.append((spec, impl))
        self._extra_imports = {
            spec.name: (spec.params, spec.results) for spec, _ in self.host_functions
        }
        #: How calls reach wasm: the hot path, or the public-API fallback.
        self.path: CallPath
        if fast:
            self.path = FastPath(
                self.engine, self.limits, self.host_functions, HOST_MODULE, release_gil,
                reuse_instances,
            )  # fmt: skip
        else:
            self.path = PublicPath(self.engine, self.limits, self.host_functions, HOST_MODULE)
        self._compiled: OrderedDict[bytes, CompiledContract] = OrderedDict()
        self._code_of: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        # Held from the first read of a committing call to its commit.
        self._commit_lock = threading.Lock()
        self.cache_size = 64
        #: The ownership policy calls are checked against (None: no ownership).
        self.ownership = ownership
        self._owner_of = None if ownership is None else ownership.owner

    # -- code ------------------------------------------------------------------

    def compile(self, code: Code) -> CompiledContract:
        """Validate and compile ``code`` (cached by code hash)."""
        if type(code) is not bytes:
            code = _code_bytes(code)
        digest = code_hash(code)
        with self._lock:
            cached = self._compiled.get(digest)
            if cached is not None:
                self._compiled.move_to_end(digest)
                return cached
        compiled = compile_contract(self.engine, code, self.limits, self._extra_imports)
        with self._lock:
            self._compiled[compiled.code_hash] = compiled
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def deploy(self, code: Code, *, salt: bytes = b"") -> bytes:
        """Validate and store ``code``; return the contract's 20-byte address.

        Deploying the same code with the same salt again returns the same address.
        """
        if type(code) is not bytes:
            code = _code_bytes(code)
        if type(salt) is not bytes:
            raise TypeError(f"salt must be bytes, not {type(salt).__name__}")
        compiled = self.compile(code)
        address = contract_address(code, salt)
        self.write(_deploy_writes(code, compiled.code_hash, address))
        return address

    def write(self, ops: list[BatchOp] | WriteSet) -> None:
        """Apply ``ops`` to the store in one atomic batch (stamping the layout once)."""
        if not self._layout_marked:
            ops = [*ops, MARKER]
            self.storage.write_batch(ops)
            self._layout_marked = True
            return
        self.storage.write_batch(ops)

    def forget_contracts(self) -> None:
        """Forget the contracts found in the store; call it after contract records leave it."""
        self._code_of.clear()

    def _code_hash(self, address: bytes) -> bytes | None:
        """Hash of the code the store holds at ``address`` (remembered once found)."""
        digest = self._code_of.get(address)
        if digest is None:
            digest = self.storage.get(CONTRACT_PREFIX + address)
            if digest is not None:
                self._code_of[address] = digest
        return digest

    def contract_code(self, address: bytes) -> bytes | None:
        """The code the store holds at ``address``, or ``None``."""
        digest = self._code_hash(address)
        return None if digest is None else self.storage.get(CODE_PREFIX + digest)

    def _contract(self, address: bytes, view: StateView | None) -> CompiledContract | None:
        """The contract at ``address``: in the store, else (not remembered) in ``view``."""
        source: StateView | Storage = self.storage
        digest = self._code_hash(address)
        if digest is None:
            if view is None:
                return None
            digest = view.get(CONTRACT_PREFIX + address)
            if digest is None:
                return None
            source = view
        compiled = self._compiled.get(digest)
        if compiled is not None:
            return compiled
        code = source.get(CODE_PREFIX + digest)
        if code is None:
            return None
        return self.compile(code)

    # -- calls ----------------------------------------------------------------

    def call(
        self,
        address: bytes,
        method: str,
        input: bytes = b"",
        *,
        sender: bytes,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        block_height: int = 0,
        block_timestamp: int = 0,
        commit: bool = True,
    ) -> Receipt:
        """Run ``method`` of the contract at ``address``; apply its writes if it succeeds.

        With ``commit=False`` nothing is written (and no lock is taken).
        """
        if not commit:
            return self.run(
                address, method, input, sender=sender, gas_limit=gas_limit,
                block_height=block_height, block_timestamp=block_timestamp,
                view=StorageView(self.storage),
            )  # fmt: skip
        # The lock is taken without ``with``: that costs on the hot path.
        self._commit_lock.acquire()
        try:
            view = StorageView(self.storage)
            target = self._resolve(address, method, input, sender, gas_limit, block_height,
                                   block_timestamp, view, False)  # fmt: skip
            if isinstance(target, Receipt):
                receipt = target  # refused, or a deploy
            else:
                receipt = self._run_compiled(target, address, method, input, sender,
                                             gas_limit, block_height, block_timestamp,
                                             view)  # fmt: skip
            if receipt.status is Status.OK and receipt.write_set:
                self.write(receipt.write_set)
            return receipt
        finally:
            self._commit_lock.release()

    def execute(
        self,
        code: Code,
        function: str,
        block_height: int = 0,
        block_timestamp: int = 0,
        *,
        input: bytes = b"",
        sender: bytes = b"\0" * ADDRESS_SIZE,
        gas_limit: int = DEFAULT_GAS_LIMIT,
    ) -> Receipt:
        """Run ``function`` of ``code`` without deploying it.

        The call runs as the contract ``contract_address(code)`` would, and its
        writes are applied to that contract's state when it succeeds.
        """
        if type(code) is not bytes:
            code = _code_bytes(code)
        compiled = self.compile(code)
        address = contract_address(code)
        with self._commit_lock:
            receipt = self._run_compiled(
                compiled, address, function, input, sender, gas_limit, block_height,
                block_timestamp, StorageView(self.storage),
            )  # fmt: skip
            if receipt.status is Status.OK and receipt.write_set:
                self.write(receipt.write_set)
            return receipt

    def run(
        self,
        address: bytes,
        method: str,
        input: bytes = b"",
        *,
        sender: bytes,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        block_height: int = 0,
        block_timestamp: int = 0,
        view: StateView,
        owned_only: bool = False,
    ) -> Receipt:
        """Run a call against ``view`` and return its receipt; nothing is written anywhere.

        With ``owned_only`` the call may touch only objects its sender owns (see
        :attr:`ownership`); anything else ends it with status ``forbidden``. Such
        a call runs only contracts in the store, not one that only ``view`` holds
        (another sender may have deployed it earlier in the block).

        A call of :data:`DEPLOY_METHOD` on :data:`DEPLOY_ADDRESS` with
        :func:`deploy_input` deploys a contract: its receipt returns the address
        and carries the code and contract record as its write set.
        """
        target = self._resolve(address, method, input, sender, gas_limit, block_height,
                               block_timestamp, view, owned_only)  # fmt: skip
        if isinstance(target, Receipt):
            return target
        return self._run_compiled(target, address, method, input, sender, gas_limit,
                                  block_height, block_timestamp, view, owned_only)  # fmt: skip

    def _resolve(
        self, address: bytes, method: str, input: bytes, sender: bytes,
        gas_limit: int, block_height: int, block_timestamp: int, view: StateView,
        owned_only: bool,
    ) -> CompiledContract | Receipt:  # fmt: skip
        """The contract a call runs, or its receipt: refusing it, or of a deploy."""
        rejected = self._check_call(address, method, input, sender, gas_limit, block_height,
                                    block_timestamp)  # fmt: skip
        if rejected is not None:
            return rejected
        # Hot path: a contract found in the store before.
        digest = self._code_of.get(address)
        if digest is not None:
            compiled = self._compiled.get(digest)
            if compiled is not None:
                return compiled
        if address == DEPLOY_ADDRESS:
            return self._deploy_call(method, input, gas_limit, view, owned_only)
        compiled = self._contract(address, None if owned_only else view)
        if compiled is None:
            return Receipt(Status.REJECTED, error=f"no contract at address {address.hex()}")
        return compiled

    def _deploy_call(
        self, method: str, input: bytes, gas_limit: int, view: StateView, owned_only: bool
    ) -> Receipt:
        """The receipt of a call to :data:`DEPLOY_ADDRESS`; nothing is written."""
        if method != DEPLOY_METHOD:
            return Receipt(
                Status.REJECTED,
                error=f"the deploy address takes only the {DEPLOY_METHOD} method, not {method!r}",
            )
        if owned_only:
            return Receipt(
                Status.FORBIDDEN, error="a deploy writes shared state: it cannot be owned-only"
            )
        try:
            code, salt = parse_deploy_input(input)
        except ValueError as exc:
            return Receipt(Status.REJECTED, error=str(exc))
        gas = DEPLOY_BASE_GAS + DEPLOY_GAS_PER_BYTE * len(code)
        if gas > gas_limit:
            return Receipt(Status.OUT_OF_GAS, gas_used=gas_limit, error="out of gas")
        try:
            compiled = self.compile(code)
        except InvalidContractError as exc:
            return Receipt(Status.REJECTED, error=str(exc))
        address = contract_address(code, salt)
        record = CONTRACT_PREFIX + address
        # Read through the view so that a parallel run sees a deploy of the same address.
        found = view.get(record)
        if found is not None and found != compiled.code_hash:
            return Receipt(
                Status.REJECTED,
                error=f"address {address.hex()} already holds code {found.hex()}",
                read_set=(record,),
            )
        return Receipt(
            Status.OK,
            return_data=address,
            gas_used=gas,
            read_set=(record,),
            write_set=_deploy_writes(code, compiled.code_hash, address),
        )

    def _check_call(
        self, address: bytes, method: str, input: bytes, sender: bytes,
        gas_limit: int, block_height: int, block_timestamp: int,
    ) -> Receipt | None:  # fmt: skip
        if (
            type(address) is not bytes
            or type(input) is not bytes
            or type(sender) is not bytes
            or type(method) is not str
        ):
            given: tuple[tuple[str, object], ...] = (
                ("address", address), ("input", input), ("sender", sender)
            )  # fmt: skip
            for name, value in given:
                if type(value) is not bytes:
                    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
            raise TypeError(f"method must be a str, not {type(method).__name__}")
        if (
            type(gas_limit) is not int
            or type(block_height) is not int
            or type(block_timestamp) is not int
            or gas_limit < 0
            or block_height < 0
            or block_timestamp < 0
        ):
            numbers: tuple[tuple[str, object], ...] = (
                ("gas_limit", gas_limit), ("block_height", block_height),
                ("block_timestamp", block_timestamp),
            )  # fmt: skip
            for name, number in numbers:
                if type(number) is not int:
                    raise TypeError(f"{name} must be an int, not {type(number).__name__}")
                if number < 0:
                    raise ValueError(f"{name} must not be negative")
        if not 1 <= len(sender) <= MAX_SENDER_SIZE:
            return Receipt(Status.REJECTED, error=f"sender must be 1 to {MAX_SENDER_SIZE} bytes")
        if len(input) > self.limits.max_input_size:
            limit = self.limits.max_input_size
            if address == DEPLOY_ADDRESS:
                # A deploy's input carries the code, which has a limit of its own.
                limit = 1 + MAX_SALT_SIZE + self.limits.max_code_size
            if len(input) > limit:
                return Receipt(
                    Status.REJECTED,
                    error=f"input of {len(input)} bytes exceeds the limit of {limit}",
                )
        if gas_limit > self.limits.max_gas_limit:
            return Receipt(
                Status.REJECTED,
                error=f"gas limit {gas_limit} exceeds the maximum of {self.limits.max_gas_limit}",
            )
        return None

    def _run_compiled(
        self, compiled: CompiledContract, address: bytes, method: str, input: bytes,
        sender: bytes, gas_limit: int, block_height: int, block_timestamp: int, view: StateView,
        owned_only: bool = False,
    ) -> Receipt:  # fmt: skip
        if method not in compiled.methods:
            return Receipt(Status.REJECTED, error=f"contract has no method {method!r}")
        upfront = self.limits.call_base_gas + len(input)
        if upfront > gas_limit:
            return Receipt(Status.OUT_OF_GAS, gas_used=gas_limit, error="out of gas")
        host: Host = self.path.host_type(
            view, STATE_PREFIX + address, address, sender, input, block_height,
            block_timestamp, self.limits,
        )  # fmt: skip
        if self._owner_of is not None:
            host.owner_of = self._owner_of
            host.owned_only = owned_only
        elif owned_only:
            return Receipt(Status.FORBIDDEN, error="no ownership registry: owned-only calls "
                           "need one")  # fmt: skip
        fuel = gas_limit - upfront
        try:
            outcome = self.path.call(compiled, method, host, fuel)
        except HostError as exc:
            return Receipt(Status.TRAPPED, gas_used=gas_limit, error=str(exc))
        used = upfront + (fuel - outcome.fuel_left) + host.host_gas
        reads = tuple(sorted(host.reads))
        scans = tuple(host.scans)
        failure = host.outcome
        if failure is not None and not isinstance(
            failure, (Revert, OutOfGas, HostError, Forbidden)
        ):
            # The store failed, or a bug: not the contract's doing, so not a receipt.
            raise failure
        if isinstance(failure, OutOfGas) or outcome.out_of_fuel or used >= gas_limit:
            return Receipt(Status.OUT_OF_GAS, gas_used=gas_limit, error="out of gas",
                           read_set=reads, scan_set=scans)  # fmt: skip
        if isinstance(failure, Revert):
            return Receipt(Status.REVERTED, gas_used=used, error=str(failure),
                           read_set=reads, scan_set=scans)  # fmt: skip
        if isinstance(failure, Forbidden):
            return Receipt(Status.FORBIDDEN, gas_used=used, error=str(failure),
                           read_set=reads, scan_set=scans)  # fmt: skip
        if isinstance(failure, HostError):
            return Receipt(Status.TRAPPED, gas_used=used, error=str(failure),
                           read_set=reads, scan_set=scans)  # fmt: skip
        if outcome.trap is not None:
            # How deep wasm recursion gets depends on native frame sizes, so the fuel
            # spent before a stack overflow is not portable: charge the whole limit.
            charged = gas_limit if outcome.code == STACK_OVERFLOW else used
            return Receipt(Status.TRAPPED, gas_used=charged, error=outcome.trap,
                           read_set=reads, scan_set=scans)  # fmt: skip
        return Receipt(
            Status.OK,
            return_data=host.return_data,
            gas_used=used,
            events=tuple(Event(address, topic, data) for topic, data in host.events),
            read_set=reads,
            scan_set=scans,
            write_set=tuple(sorted(host.writes.items())),
        )
