"""Helpers for runtime tests: WAT contracts built from small snippets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import wasmtime

from supervm.memory import MemoryStorage
from supervm.vm import Runtime

IMPORTS = """
  (import "env" "read_register" (func $read_register (param i32)))
  (import "env" "input" (func $input (result i32)))
  (import "env" "caller" (func $caller (result i32)))
  (import "env" "storage_get" (func $get (param i32 i32) (result i32)))
  (import "env" "storage_set" (func $set (param i32 i32 i32 i32)))
  (import "env" "storage_delete" (func $delete (param i32 i32)))
  (import "env" "storage_iter" (func $iter (param i32 i32) (result i32)))
  (import "env" "storage_iter_next" (func $iter_next (param i32) (result i32)))
  (import "env" "storage_iter_value" (func $iter_value (param i32) (result i32)))
  (import "env" "return_data" (func $return (param i32 i32)))
  (import "env" "revert" (func $revert (param i32 i32)))
  (import "env" "emit_event" (func $emit (param i32 i32 i32 i32)))
"""


def wat_contract(body: str, *, memory: str = "1", data: str = "") -> bytes:
    """A contract module: all ABI imports, one memory, ``data`` segments and ``body``."""
    source = f'(module {IMPORTS} (memory (export "memory") {memory}) {data} {body})'
    return bytes(wasmtime.wat2wasm(source))


@pytest.fixture(params=["fast", "public"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """A runtime over a fresh memory store, on each call path."""
    return Runtime(MemoryStorage(), fast=request.param == "fast")


@pytest.fixture
def both_paths() -> Callable[[], tuple[Runtime, Runtime]]:
    def make() -> tuple[Runtime, Runtime]:
        return Runtime(MemoryStorage(), fast=True), Runtime(MemoryStorage(), fast=False)

    return make
