"""What host functions do, independent of how wasm reaches them.

A :class:`Host` is built for one call. It holds the call's context (input,
sender, block), its private overlay of writes, the keys it read and prefixes it
scanned, its events and return data, and the register. Subclasses supply guest
memory access and fuel accounting for the fast (C-API) and public call paths;
both paths run exactly this code, so receipts and gas agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from supervm.state import StateView, merge, pending_under
from supervm.vm.abi import HOST_FUNCTIONS, HostFunctionSpec, Limits

__all__ = [
    "CORE_FUNCTIONS",
    "Forbidden",
    "Host",
    "HostError",
    "HostFunction",
    "OutOfGas",
    "Revert",
]


_SPECS = {spec.name: spec for spec in HOST_FUNCTIONS}


def _gas(name: str) -> tuple[int, int]:
    """(base gas, gas per byte moved) of ABI function ``name``, from the table."""
    return _SPECS[name].base_gas, _SPECS[name].byte_gas


# Each function's gas, bound once from HOST_FUNCTIONS into module constants, so
# the hot functions pay a global lookup rather than a table lookup per call.
_READ_REGISTER_BASE, _READ_REGISTER_BYTE = _gas("read_register")
_INPUT_BASE, _INPUT_BYTE = _gas("input")
_CALLER_BASE, _CALLER_BYTE = _gas("caller")
_ADDRESS_BASE, _ADDRESS_BYTE = _gas("address")
_BLOCK_HEIGHT_BASE = _gas("block_height")[0]  # no bytes moved
_BLOCK_TIMESTAMP_BASE = _gas("block_timestamp")[0]
_GET_BASE, _GET_BYTE = _gas("storage_get")
_SET_BASE, _SET_BYTE = _gas("storage_set")
_DELETE_BASE, _DELETE_BYTE = _gas("storage_delete")
_ITER_BASE, _ITER_BYTE = _gas("storage_iter")
_ITER_NEXT_BASE, _ITER_NEXT_BYTE = _gas("storage_iter_next")
_ITER_VALUE_BASE, _ITER_VALUE_BYTE = _gas("storage_iter_value")
_RETURN_BASE, _RETURN_BYTE = _gas("return_data")
_REVERT_BASE, _REVERT_BYTE = _gas("revert")
_EMIT_BASE, _EMIT_BYTE = _gas("emit_event")


class HostError(Exception):
    """A contract misused a host function; the call ends with status ``trapped``."""


class Revert(Exception):
    """The contract called ``revert``; the call ends with status ``reverted``."""


class OutOfGas(Exception):
    """Gas ran out inside a host function; the call ends with status ``out_of_gas``."""


class Forbidden(Exception):
    """The call touched an object its sender does not own; status ``forbidden``."""


class _Iterator:
    __slots__ = ("current", "items", "strip")

    def __init__(self, items: Iterator[tuple[bytes, bytes]], strip: int) -> None:
        self.items = items
        self.strip = strip
        self.current: tuple[bytes, bytes] | None = None


class Host:
    """State and semantics of one contract call (see ``docs/abi.md``)."""

    __slots__ = (
        "__dict__", "_next_check", "address", "budget", "events", "height", "host_gas",
        "input", "iterators", "limits", "namespace", "outcome", "owned_only", "owner_of", "reads",
        "register", "return_data", "scans", "sender", "timestamp", "view", "writes",
    )  # fmt: skip

    def __init__(
        self,
        view: StateView,
        namespace: bytes,
        address: bytes,
        sender: bytes,
        input: bytes,
        block_height: int,
        block_timestamp: int,
        limits: Limits,
    ) -> None:
        self.view = view
        self.namespace = namespace
        self.address = address
        self.sender = sender
        self.input = input
        self.height = block_height
        self.timestamp = block_timestamp
        self.limits = limits
        self.register = b""
        self.writes: dict[bytes, bytes | None] = {}
        self.reads: set[bytes] = set()
        self.scans: list[bytes] = []
        self.events: list[tuple[bytes, bytes]] = []
        self.return_data = b""
        self.iterators: list[_Iterator] = []
        #: The exception that ended the call from inside a host function, if any.
        self.outcome: BaseException | None = None
        #: Fuel the call started with, and gas charged by host functions so far.
        self.budget = 0
        self.host_gas = 0
        self._next_check = 0
        #: Owner of a state key (None: shared), when ownership is enforced.
        self.owner_of: Callable[[bytes], bytes | None] | None = None
        #: The call declared it touches only objects its sender owns.
        self.owned_only = False

    # -- supplied by the call path -------------------------------------------

    def read(self, ptr: int, length: int) -> bytes:
        """Copy ``length`` bytes of guest memory at ``ptr`` (HostError when out of bounds)."""
        raise NotImplementedError

    def write(self, ptr: int, data: bytes) -> None:
        """Copy ``data`` into guest memory at ``ptr`` (HostError when out of bounds)."""
        raise NotImplementedError

    def fuel_left(self) -> int:
        """Fuel wasm code has not spent yet."""
        raise NotImplementedError

    # -- gas -----------------------------------------------------------------------
    #
    # Host gas is added up here rather than taken from the store's fuel on every
    # call (that costs two C calls). The total -- fuel wasm spent plus host gas --
    # is settled against the budget whenever host gas since the last settlement
    # passes half of what was left then, and once more when the call ends. Every
    # decision depends only on deterministic quantities, so receipts and gas are
    # the same on every run and on both call paths.

    def start_metering(self, budget: int) -> None:
        """Begin a call with ``budget`` fuel."""
        self.budget = budget
        self.host_gas = 0
        self._next_check = budget // 2

    def charge(self, gas: int) -> None:
        """Add ``gas`` to the call's host gas; raise :class:`OutOfGas` once over budget."""
        self.host_gas += gas
        if self.host_gas > self._next_check:
            self._settle()

    def _settle(self) -> None:
        spent = self.budget - self.fuel_left() + self.host_gas
        if spent >= self.budget:
            raise OutOfGas
        self._next_check = self.host_gas + (self.budget - spent) // 2

    # -- helpers -------------------------------------------------------------

    def _key(self, ptr: int, length: int) -> bytes:
        if length <= 0:
            raise HostError("storage keys must not be empty")
        if length > self.limits.max_key_size:
            raise HostError(
                f"key of {length} bytes exceeds the limit of {self.limits.max_key_size}"
            )
        return self.namespace + self.read(ptr, length)

    def _check_write(self, key: bytes) -> None:
        owner_of = self.owner_of
        if owner_of is None:
            return
        owner = owner_of(key)
        if owner is not None and owner != self.sender:
            raise Forbidden(
                f"object {key[len(self.namespace) :]!r} is owned by {owner.hex()}; "
                f"{self.sender.hex()} may not write it"
            )
        if owner is None and self.owned_only:
            self._not_owned(key)

    def _not_owned(self, key: bytes) -> None:
        raise Forbidden(
            f"call declared owned-only touched {key[len(self.namespace) :]!r}, "
            f"which {self.sender.hex()} does not own"
        )

    def _check_read(self, key: bytes) -> None:
        owner_of = self.owner_of
        if owner_of is not None and owner_of(key) != self.sender:
            self._not_owned(key)

    def _put(self, data: bytes) -> int:
        self.register = data
        return len(data)

    # -- ABI v1 ------------------------------------------------------------------

    # Gas is base + per byte x bytes moved, from the ABI table (the constants
    # above). The hottest functions add it inline (the same rule as charge()).

    def read_register(self, ptr: int) -> None:
        register = self.register
        self.host_gas += _READ_REGISTER_BASE + _READ_REGISTER_BYTE * len(register)
        if self.host_gas > self._next_check:
            self._settle()
        self.write(ptr, register)

    def input_(self) -> int:
        data = self.register = self.input
        self.host_gas += _INPUT_BASE + _INPUT_BYTE * len(data)
        if self.host_gas > self._next_check:
            self._settle()
        return len(data)

    def caller(self) -> int:
        data = self.register = self.sender
        self.host_gas += _CALLER_BASE + _CALLER_BYTE * len(data)
        if self.host_gas > self._next_check:
            self._settle()
        return len(data)

    def address_(self) -> int:
        self.charge(_ADDRESS_BASE + _ADDRESS_BYTE * len(self.address))
        return self._put(self.address)

    def block_height(self) -> int:
        self.charge(_BLOCK_HEIGHT_BASE)
        return self.height

    def block_timestamp(self) -> int:
        self.charge(_BLOCK_TIMESTAMP_BASE)
        return self.timestamp

    def storage_get(self, key_ptr: int, key_len: int) -> int:
        self.host_gas += _GET_BASE + _GET_BYTE * max(key_len, 0)
        if self.host_gas > self._next_check:
            self._settle()
        key = self._key(key_ptr, key_len)
        if self.owned_only:
            self._check_read(key)
        writes = self.writes
        if key in writes:
            value = writes[key]
        else:
            self.reads.add(key)
            value = self.view.get(key)
        if value is None:
            self.register = b""
            return -1
        self.register = value
        self.host_gas += _GET_BYTE * len(value)
        if self.host_gas > self._next_check:
            self._settle()
        return len(value)

    def storage_set(self, key_ptr: int, key_len: int, value_ptr: int, value_len: int) -> None:
        if value_len < 0 or value_len > self.limits.max_value_size:
            raise HostError(
                f"value of {value_len} bytes exceeds the limit of {self.limits.max_value_size}"
            )
        self.host_gas += _SET_BASE + _SET_BYTE * (max(key_len, 0) + value_len)
        if self.host_gas > self._next_check:
            self._settle()
        key = self._key(key_ptr, key_len)
        if self.owner_of is not None:
            self._check_write(key)
        self.writes[key] = self.read(value_ptr, value_len)

    def storage_delete(self, key_ptr: int, key_len: int) -> None:
        self.charge(_DELETE_BASE + _DELETE_BYTE * max(key_len, 0))
        key = self._key(key_ptr, key_len)
        if self.owner_of is not None:
            self._check_write(key)
        self.writes[key] = None

    def storage_iter(self, prefix_ptr: int, prefix_len: int) -> int:
        if prefix_len < 0 or prefix_len > self.limits.max_key_size:
            raise HostError(f"iterator prefix of {prefix_len} bytes is not allowed")
        if len(self.iterators) >= self.limits.max_iterators:
            raise HostError(f"more than {self.limits.max_iterators} iterators in one call")
        self.charge(_ITER_BASE + _ITER_BYTE * prefix_len)
        prefix = self.namespace + self.read(prefix_ptr, prefix_len)
        self.scans.append(prefix)
        items = merge(self.view.scan(prefix), pending_under(self.writes, prefix))
        self.iterators.append(_Iterator(items, len(self.namespace)))
        return len(self.iterators) - 1

    def _iterator(self, handle: int) -> _Iterator:
        if not 0 <= handle < len(self.iterators):
            raise HostError(f"no iterator with handle {handle}")
        return self.iterators[handle]

    def storage_iter_next(self, handle: int) -> int:
        self.charge(_ITER_NEXT_BASE)
        it = self._iterator(handle)
        it.current = next(it.items, None)
        if it.current is None:
            self.register = b""
            return -1
        if self.owned_only:
            self._check_read(it.current[0])
        key = it.current[0][it.strip :]
        self.charge(_ITER_NEXT_BYTE * len(key))
        return self._put(key)

    def storage_iter_value(self, handle: int) -> int:
        self.charge(_ITER_VALUE_BASE)
        it = self._iterator(handle)
        if it.current is None:
            raise HostError("storage_iter_value called with no current key")
        value = it.current[1]
        self.charge(_ITER_VALUE_BYTE * len(value))
        return self._put(value)

    def return_data_(self, ptr: int, length: int) -> None:
        if length < 0 or length > self.limits.max_return_size:
            raise HostError(
                f"return data of {length} bytes exceeds the limit of {self.limits.max_return_size}"
            )
        self.charge(_RETURN_BASE + _RETURN_BYTE * length)
        self.return_data = self.read(ptr, length)

    def revert(self, ptr: int, length: int) -> None:
        if length < 0 or length > self.limits.max_return_size:
            raise HostError(f"revert message of {length} bytes is too long")
        self.charge(_REVERT_BASE + _REVERT_BYTE * length)
        message = self.read(ptr, length)
        raise Revert(message.decode("utf-8", "backslashreplace"))

    def emit_event(self, topic_ptr: int, topic_len: int, data_ptr: int, data_len: int) -> None:
        limits = self.limits
        if len(self.events) >= limits.max_events:
            raise HostError(f"more than {limits.max_events} events in one call")
        if topic_len < 0 or topic_len > limits.max_topic_size:
            raise HostError(f"event topic of {topic_len} bytes exceeds {limits.max_topic_size}")
        if data_len < 0 or data_len > limits.max_event_data_size:
            raise HostError(f"event data of {data_len} bytes exceeds {limits.max_event_data_size}")
        self.charge(_EMIT_BASE + _EMIT_BYTE * (topic_len + data_len))
        self.events.append((self.read(topic_ptr, topic_len), self.read(data_ptr, data_len)))


#: A host function: its ABI entry and ``impl(host, *wasm_args) -> result``.
HostFunction = tuple[HostFunctionSpec, Callable[..., Any]]

#: Host method implementing each ABI function (names that clash with builtins end in "_").
METHODS: dict[str, str] = {
    "read_register": "read_register",
    "input": "input_",
    "caller": "caller",
    "address": "address_",
    "block_height": "block_height",
    "block_timestamp": "block_timestamp",
    "storage_get": "storage_get",
    "storage_set": "storage_set",
    "storage_delete": "storage_delete",
    "storage_iter": "storage_iter",
    "storage_iter_next": "storage_iter_next",
    "storage_iter_value": "storage_iter_value",
    "return_data": "return_data_",
    "revert": "revert",
    "emit_event": "emit_event",
}

#: The ABI v1 functions with their implementations, in table order.
CORE_FUNCTIONS: list[HostFunction] = [
    (spec, getattr(Host, METHODS[spec.name])) for spec in HOST_FUNCTIONS
]
