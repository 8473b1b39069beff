"""Example plugin: a ``sha256(ptr, len) -> i32`` host function.

Registered through the ``supervm`` entry-point group of supervm-core. The digest
goes to the register (32 bytes); gas is 100 + 1 per input byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from supervm.hooks import hookimpl
from supervm.vm.abi import HostFunctionSpec
from supervm.vm.host import Host, HostError

SPEC = HostFunctionSpec(
    name="sha256",
    params=("i32", "i32"),
    results=("i32",),
    base_gas=100,
    byte_gas=1,
    doc="Put the SHA-256 digest of (ptr, len) in the register; return 32.",
)

MAX_INPUT = 1 << 20


def sha256(host: Host, ptr: int, length: int) -> int:
    """Hash guest memory (ptr, length) into the register."""
    if length < 0 or length > MAX_INPUT:
        raise HostError(f"sha256 input of {length} bytes is not allowed (limit {MAX_INPUT})")
    host.charge(SPEC.base_gas + SPEC.byte_gas * length)
    host.register = hashlib.sha256(host.read(ptr, length)).digest()
    return 32


@hookimpl
def supervm_host_functions(
    register: Callable[[HostFunctionSpec, Callable[..., Any]], None],
) -> None:
    """Contribute the sha256 host function."""
    register(SPEC, sha256)
