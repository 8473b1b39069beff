"""Migrate one store into another, a line per batch, until done or killed.

Usage: ``python migrate_worker.py SOURCE_URL TARGET_URL BATCH_KEYS PAUSE_MS``

Calls :func:`supervm.migrate.migrate` with ``source_name=SOURCE_URL`` and
``batch_keys=BATCH_KEYS`` (so that a small store still takes many batches),
sleeping ``PAUSE_MS`` milliseconds after each batch so that the test's kill
lands while batches are still being written. Protocol on stdout, one flushed
line per event:

- ``READY``: both stores are open.
- ``BATCH <done keys>``: a batch (its pairs and the migration record) was written.
- ``DONE <keys> <resumed 0|1>``: the migration finished and was verified.
"""

from __future__ import annotations

import sys
import time

import supervm
from supervm.migrate import migrate


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: migrate_worker.py SOURCE_URL TARGET_URL BATCH_KEYS PAUSE_MS\n")
        return 2
    source_url, target_url, batch_keys, pause = argv[0], argv[1], int(argv[2]), int(argv[3])
    source = supervm.open_storage(source_url, create=False)
    target = supervm.open_storage(target_url)
    say("READY")

    def batch(done: int, total: int | None) -> None:
        say(f"BATCH {done}")
        time.sleep(pause / 1000)

    report = migrate(source, target, batch_keys=batch_keys, source_name=source_url, progress=batch)
    say(f"DONE {report.keys} {int(report.resumed)}")
    target.close()
    source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
