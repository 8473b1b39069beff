"""Compile a C contract to WebAssembly with ``zig cc`` (the ``ziglang`` package).

The flags are fixed so that a given source and header always give the same
bytes: no entry point, no libc, a 16 KiB shadow stack at the bottom of memory,
no custom sections. Install the compiler with ``pip install 'supervm-core[build]'``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from supervm.errors import SuperVMError

__all__ = [
    "COMPILE_FLAGS",
    "BuildError",
    "build_contract",
    "compiler_available",
    "compiler_command",
    "include_dir",
]

#: Flags passed to ``zig cc`` for every contract (``-I include_dir()`` is added).
COMPILE_FLAGS: tuple[str, ...] = (
    "--target=wasm32-freestanding",
    "-mcpu=mvp",
    "-O2",
    "-nostdlib",
    "-Wl,--no-entry",
    "-Wl,-z,stack-size=16384",
    "-Wl,--strip-all",
)

#: Seconds a single compilation may take.
BUILD_TIMEOUT = 300.0

_INSTALL_HINT = "install it with: pip install 'supervm-core[build]'"


class BuildError(SuperVMError):
    """A contract could not be compiled; ``stderr`` holds the compiler's diagnostics."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def include_dir() -> Path:
    """The directory holding ``supervm.h``."""
    return Path(__file__).resolve().parent.parent / "include"


def compiler_available() -> bool:
    """Whether the ``ziglang`` package (the C compiler) is installed."""
    return importlib.util.find_spec("ziglang") is not None


def compiler_command(source: Path, output: Path) -> list[str]:
    """The command line that compiles ``source`` to ``output``."""
    return [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *COMPILE_FLAGS,
        "-I",
        str(include_dir()),
        "-x",
        "c",
        str(source),
        "-o",
        str(output),
    ]


def build_contract(source: Path, output: Path | None = None) -> bytes:
    """Compile the C file ``source`` to a wasm32 contract and return its bytes.

    When ``output`` is given the module is also written there. Raises
    :class:`BuildError` if the compiler is not installed, the source cannot be
    read or compilation fails (the message includes the compiler's output).
    """
    source = Path(source)
    if not source.is_file():
        raise BuildError(f"contract source {str(source)!r} not found")
    if not compiler_available():
        raise BuildError(f"the C compiler (ziglang) is not installed; {_INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="supervm-build-") as tmp:
        # A fixed output name inside a private directory: the result does not
        # depend on the name asked for, and a failed build leaves nothing behind.
        target = Path(tmp) / "contract.wasm"
        command = compiler_command(source.resolve(), target)
        try:
            result = subprocess.run(
                command,
                cwd=tmp,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(
                f"compiling {source} took longer than {BUILD_TIMEOUT:g} seconds"
            ) from exc
        except OSError as exc:
            raise BuildError(f"could not run the C compiler: {exc}") from exc
        stderr = result.stderr.strip()
        if result.returncode != 0:
            if "No module named ziglang" in stderr:
                raise BuildError(
                    f"the C compiler (ziglang) is not installed; {_INSTALL_HINT}", stderr=stderr
                )
            raise BuildError(
                f"compiling {source} failed (exit status {result.returncode}):\n{stderr}",
                stderr=stderr,
            )
        try:
            wasm = target.read_bytes()
        except OSError as exc:
            raise BuildError(f"the compiler produced no output for {source}") from exc
    if output is not None:
        output = Path(output)
        try:
            output.write_bytes(wasm)
        except OSError as exc:
            raise BuildError(f"could not write {output}: {exc}") from exc
    return wasm
