"""Snapshots of a state far larger than a chunk export and import in bounded memory.

A state of 1,000,000 keys (45-byte keys, 100-byte values: 145 MB of keys and
values) is written as a synthetic snapshot file (bench/synthetic.py), imported
into a RocksDB store, exported from it with 1 MiB chunks (run_bytes the
default, four chunks) and imported into a fresh RocksDB store. Each of the
three operations runs in a child process of its own (``python -m
bench.transfer --child``), which reports the growth of its peak RSS
(``ru_maxrss``) from just before the operation (interpreter, imports and the
opened store already counted) to just after it, and the highest RSS a thread
sampling it every 5 ms saw during the operation over the RSS just before
(``ru_maxrss`` alone can hide it: Linux carries a parent's peak into its
child's ``ru_maxrss`` across fork and exec, and reopening the RocksDB store
that an import just filled replays its log, which can set a peak above the
export's own; the ``ru_maxrss`` growth is then a lower bound). Both must stay
under ``RSS_BOUND``. tracemalloc would slow the
operations about sevenfold (minutes each at this size), so RSS growth is
what is bounded; see ``RSS_BOUND``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import supervm
from supervm.layout import in_state_tree, state_ranges
from supervm.registry import available_backends
from supervm.snapshot import read_manifest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

KEYS = 1_000_000
CHUNK = 1 << 20
#: The most a single export or import may add to the peak RSS of its process.
#:
#: What the snapshot code holds is bounded by the chunk size: the export's sort
#: buffer (run_bytes = 4 chunks of records, counted at their bytes + 200 bytes
#: of object overhead each, so ~4 MiB of Python objects) and a chunk being
#: built and compressed (1 MiB, and its framed parts); the import one chunk
#: compressed, decompressed, unframed, and its batch of pairs and tree nodes
#: (a few MiB of objects). The rest is RocksDB's own memory, which does not
#: depend on the state either: up to two 64 MiB memtables being filled or
#: flushed (rocksdict's defaults, which supervm-rocksdb keeps), the block cache
#: (8 MiB by default) and table readers. 192 MiB leaves room for those
#: (~140 MiB) and the chunk-bounded part, and is well under the 145 MB of keys
#: and values (which a non-streaming export or import would hold several
#: times over as Python objects, at ~300 bytes a pair: ~300 MB).
RSS_BOUND = 192 << 20


def child(operation: str, store: str, file: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "bench.transfer", "--child", operation, "--store", store,
               "--file", str(file), "--chunk-bytes", str(CHUNK), "--keys", str(KEYS)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def state_count(url: str) -> int:
    storage = supervm.open_storage(url)
    try:
        count = 0
        for start, end in state_ranges():
            count += sum(1 for pair in storage.scan_range(start, end) if in_state_tree(pair[0]))
        return count
    finally:
        storage.close()


def test_a_million_keys_export_and_import_in_bounded_memory(tmp_path: Path) -> None:
    if "rocksdb" not in available_backends():
        pytest.skip("the rocksdb back end is not installed")
    # The file is written in a child as well (bench/synthetic.py), so this process stays small.
    synthetic_file = tmp_path / "synthetic.snap"
    made = child("synth", "", synthetic_file)
    assert int(made["state_bytes"]) > 100_000_000, "the state must dwarf the memory bound"  # type: ignore[call-overload]
    source = f"rocksdb://{tmp_path / 'source'}"
    target = f"rocksdb://{tmp_path / 'target'}"
    out = tmp_path / "export.snap"
    steps = {
        "import into the source": child("import", source, synthetic_file),
        "export": child("export", source, out),
        "import into a fresh store": child("import", target, out),
    }
    manifest = read_manifest(out)
    assert manifest.keys == KEYS and manifest.state_root.hex() == made["root"]
    assert len(manifest.chunks) > 100, "the state must span many chunks"
    for name, figures in steps.items():
        assert figures["keys"] == KEYS, name
        assert figures["root"] == made["root"], name
        for measure in ("growth_kb", "sampled_growth_kb"):
            growth = int(figures[measure]) * 1024  # type: ignore[call-overload]
            assert growth < RSS_BOUND, (
                f"{name}: RSS grew by {growth / 2**20:.0f} MiB ({measure}; bound "
                f"{RSS_BOUND >> 20} MiB) for {made['state_bytes']} bytes of state: {figures}"
            )
    assert state_count(target) == state_count(source) == KEYS
