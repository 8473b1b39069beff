"""Extra host functions contributed by plugins through the ``supervm_host_functions`` hook."""

from __future__ import annotations

from supervm.vm.abi import HostFunctionSpec

__all__ = ["plugin_host_functions"]


def plugin_host_functions() -> list[HostFunctionSpec]:
    """Host functions registered by installed plugins (see docs/plugins.md)."""
    return []
