"""The WebAssembly runtime: ABI, engine, call paths and the :class:`Runtime`."""

from supervm.vm.abi import ABI_VERSION, HOST_FUNCTIONS, HostFunctionSpec, Limits
from supervm.vm.engine import InvalidContractError
from supervm.vm.runtime import (
    DEPLOY_ADDRESS,
    DEPLOY_BASE_GAS,
    DEPLOY_GAS_PER_BYTE,
    DEPLOY_METHOD,
    MAX_SALT_SIZE,
    Event,
    Receipt,
    Runtime,
    Status,
    contract_address,
    deploy_input,
    parse_deploy_input,
)

__all__ = [
    "ABI_VERSION",
    "DEPLOY_ADDRESS",
    "DEPLOY_BASE_GAS",
    "DEPLOY_GAS_PER_BYTE",
    "DEPLOY_METHOD",
    "HOST_FUNCTIONS",
    "MAX_SALT_SIZE",
    "Event",
    "HostFunctionSpec",
    "InvalidContractError",
    "Limits",
    "Receipt",
    "Runtime",
    "Status",
    "contract_address",
    "deploy_input",
    "parse_deploy_input",
]
