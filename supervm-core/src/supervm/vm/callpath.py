"""The one interface the runtime calls wasm through, and what a call reports.

Two modules implement :class:`CallPath`: :mod:`supervm.vm.fast_path` (the hot
path, wasmtime's unchecked C API) and :mod:`supervm.vm.public_path` (the
fallback, wasmtime-py's public API). Both run the same
:class:`~supervm.vm.host.Host` code, so their receipts are identical.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from supervm.vm import _capi
from supervm.vm.engine import CompiledContract
from supervm.vm.host import Host

__all__ = ["CallOutcome", "CallPath", "trap_name"]


class CallOutcome(NamedTuple):
    """How a call into wasm ended, before the host's own outcome is considered."""

    fuel_left: int
    #: ``None`` when the call returned normally.
    trap: str | None = None
    out_of_fuel: bool = False
    #: The wasm trap code, when wasm (not a host function) trapped.
    code: int | None = None


def trap_name(code: int | None) -> str:
    """Stable text for a wasm trap code (the same on both call paths)."""
    if code is None:
        return "wasm trap"
    return "wasm trap: " + _capi.TRAP_NAMES.get(code, f"code {code}").replace("_", " ")


class CallPath(Protocol):
    """Runs one method of a compiled contract with a :class:`Host` built for the call."""

    #: ``"fast"`` or ``"public"``.
    name: str

    @property
    def host_type(self) -> type[Host]:
        """The :class:`Host` subclass with the guest-memory access this path needs.

        The runtime builds one per call with ``Host``'s constructor arguments.
        """

    def call(self, contract: CompiledContract, method: str, host: Host, fuel: int) -> CallOutcome:
        """Run ``method`` with ``fuel``; the call starts from the module's initial state.

        Raises :class:`~supervm.vm.host.HostError` when the contract cannot be
        instantiated.
        """
