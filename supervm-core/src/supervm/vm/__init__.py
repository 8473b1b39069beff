"""The WebAssembly runtime: ABI, engine, call paths and the :class:`Runtime`."""

from supervm.vm.abi import ABI_VERSION, HOST_FUNCTIONS, HostFunctionSpec, Limits
from supervm.vm.engine import InvalidContractError
from supervm.vm.runtime import Event, Receipt, Runtime, Status, contract_address

__all__ = [
    "ABI_VERSION",
    "HOST_FUNCTIONS",
    "Event",
    "HostFunctionSpec",
    "InvalidContractError",
    "Limits",
    "Receipt",
    "Runtime",
    "Status",
    "contract_address",
]
