"""Run the ``supervm`` CLI with a progress callback that prints one line per step.

Usage: ``python transfer_worker.py ARGS...`` (the arguments of ``supervm``)

The command runs as ``python -m supervm ARGS`` would, except that its progress
bar (drawn only on a terminal) is replaced by flushed stdout lines
``PROGRESS <stage> <done> <total or ->``: for ``snapshot import`` one
``importing`` line after each chunk's batch is committed, for ``sync apply``
one ``applying`` line after each block's. The crash tests count them and kill
the process with SIGKILL after a chosen number.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import supervm.cli as cli


@contextlib.contextmanager
def _lines() -> Iterator[Callable[[str, int, int | None], None]]:
    def update(stage: str, done: int, total: int | None) -> None:
        sys.stdout.write(f"PROGRESS {stage} {done} {'-' if total is None else total}\n")
        sys.stdout.flush()

    yield update


if __name__ == "__main__":
    cli._stage_progress = _lines  # type: ignore[assignment]
    sys.exit(cli.main(sys.argv[1:]))
