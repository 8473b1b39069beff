"""Incremental sync: blocks H1+1..H2 exported, applied with their roots checked, or re-executed."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervm.chain import Chain, PrunedHeightError
from supervm.chunkfile import ChunkReader, ChunkWriter, CorruptFileError, frame_none, unframe
from supervm.chunkfile import frame as frame_field
from supervm.layout import state_key
from supervm.snapshot import export_snapshot, import_snapshot
from supervm.sync import MAGIC, SyncError, apply_blocks, export_blocks, read_block_manifest


def _pair(builder, blocks: int, at: int):
    """A source chain of ``blocks`` blocks and a target holding the same chain up to ``at``."""
    source = builder.token_chain(blocks)
    target = builder.token_chain(0)
    target.close()
    while target.head().height < at:
        height = target.head().height + 1
        block = source.block(height)
        target.apply(block, mode="sequential")
    return source, target


def test_apply_write_sets_and_reexecute(builder, tmp_path: Path) -> None:
    source, target = _pair(builder, 8, 4)
    out = tmp_path / "blocks"
    manifest = export_blocks(source.storage, out, from_height=4, chunk_bytes=2048)
    assert (manifest.from_height, manifest.to_height, manifest.blocks) == (4, 10, 6)
    assert manifest.from_hash == source.header(4).hash and manifest.chunks > 1
    assert read_block_manifest(out) == manifest
    other = builder.chain()
    for h in range(1, 5):
        other.apply(source.block(h), mode="sequential")
    report = apply_blocks(out, target.storage)
    assert report.applied == 6 and report.skipped == 0 and not report.reexecuted
    assert target.head() == source.head()
    assert builder.state_of(target.storage) == builder.state_of(source.storage)
    for h in range(5, 11):
        assert target.header(h) == source.header(h)
        assert target.block(h) == source.block(h)
    # History written by applied blocks serves past reads as on the source.
    key = max(builder.state_of(source.storage))
    assert target.at(6).get(key) == source.at(6).get(key)
    again = apply_blocks(out, target.storage)
    assert again.applied == 0 and again.skipped == 6
    # Re-executing instead of trusting the write sets gives the same chain.
    rerun = apply_blocks(out, other.storage, reexecute=True, mode="sequential")
    assert rerun.applied == 6 and rerun.reexecuted
    assert other.head() == source.head()


def test_gap_fork_and_other_chain_are_refused(builder, tmp_path: Path) -> None:
    source, target = _pair(builder, 6, 3)
    out = tmp_path / "blocks"
    export_blocks(source.storage, out, from_height=5, to_height=7)
    with pytest.raises(SyncError, match="gap"):
        apply_blocks(out, target.storage)
    assert target.head().height == 3
    fork = builder.chain()
    for h in range(1, 5):
        fork.apply(source.block(h), mode="sequential")
    builder.extend(fork, 1, seed=77)  # another block 5
    with pytest.raises(SyncError, match="fork"):
        apply_blocks(out, fork.storage)
    assert fork.head().height == 5
    stranger = builder.chain()
    builder.bulk_block(stranger, [(state_key(b"\x01" * 20, b"a"), b"b")] * 1)
    with pytest.raises(SyncError, match="holds blocks of chain"):
        apply_blocks(out, stranger.storage)
    assert stranger.head().height == 1


def _rewrite(path: Path, out: Path, change) -> None:
    with ChunkReader(path, MAGIC, "block") as reader:
        body = {k: v for k, v in reader.manifest.items() if k != "chunks"}
        with ChunkWriter(out, MAGIC) as writer:
            for info, raw in reader.iter_chunks():
                fields = change(info, unframe(raw))
                data = b"".join(frame_none() if f is None else frame_field(f) for f in fields)
                writer.add(info.kind, data, info.items)
            writer.finish(body)


def test_wrong_root_stops_at_the_last_good_block(builder, tmp_path: Path) -> None:
    source, target = _pair(builder, 6, 2)
    out = tmp_path / "blocks"
    export_blocks(source.storage, out, from_height=2, chunk_bytes=1 << 20)
    lying = tmp_path / "lying"
    blocks_seen = []

    def alter_fourth_block(info, fields):
        at = 0
        while at < len(fields):
            count = int.from_bytes(fields[at + 2], "big")
            blocks_seen.append(at)
            if len(blocks_seen) == 3:  # block 5: one value changed
                fields[at + 4] = (fields[at + 4] or b"") + b"\x01"
            at += 3 + 2 * count
        return fields

    _rewrite(out, lying, alter_fourth_block)
    with pytest.raises(SyncError, match=r"block 5 refused.*state root.*last good block"):
        apply_blocks(lying, target.storage)
    assert target.head() == source.head()._replace(
        height=4, block_hash=source.header(4).hash, state_root=source.header(4).state_root
    )
    # The same file re-executed: the transactions disagree with the altered write set.
    with pytest.raises(SyncError, match=r"block 5 refused.*write set"):
        apply_blocks(lying, target.storage, reexecute=True, mode="sequential")
    assert target.head().height == 4
    # The true file finishes the job.
    assert apply_blocks(out, target.storage).applied == 4
    assert target.head() == source.head()


def test_corrupt_block_file_applies_nothing(builder, tmp_path: Path) -> None:
    source, target = _pair(builder, 4, 2)
    out = tmp_path / "blocks"
    export_blocks(source.storage, out, from_height=2)
    data = out.read_bytes()
    bad = tmp_path / "bad"
    for offset in range(0, len(data), max(1, len(data) // 40)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises((CorruptFileError, SyncError)):
            apply_blocks(bad, target.storage)
        assert target.head().height == 2
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError):
        apply_blocks(bad, target.storage)


def test_snapshot_then_sync(builder, tmp_path: Path) -> None:
    """A node starts from a snapshot at H1 and catches up with the blocks to H2."""
    source = builder.token_chain(7)
    h1 = 5
    snap = tmp_path / "s.snap"
    export_snapshot(source.storage, snap, height=h1)
    target = builder.store("rocksdb")
    import_snapshot(snap, target)
    blocks = tmp_path / "blocks"
    export_blocks(source.storage, blocks, from_height=h1)
    apply_blocks(blocks, target, reexecute=True, mode="sequential")
    chain = Chain(target, threads=1)
    assert chain.head() == source.head()
    with pytest.raises(PrunedHeightError):
        chain.at(h1 - 1)
    # The snapshot's store exports blocks above its height, not below it.
    with pytest.raises(PrunedHeightError):
        export_blocks(target, tmp_path / "x", from_height=2)
    chain.close()


def test_export_bounds(builder, tmp_path: Path) -> None:
    source = builder.token_chain(3)
    for lo, hi in ((3, 3), (4, 2), (0, 99)):
        with pytest.raises(SyncError, match="not in this chain"):
            export_blocks(source.storage, tmp_path / "x", from_height=lo, to_height=hi)
    with pytest.raises(ValueError):
        export_blocks(source.storage, tmp_path / "x", from_height=-1)
    assert not (tmp_path / "x").exists()


def test_a_file_of_the_other_kind_is_refused(builder, tmp_path: Path) -> None:
    source = builder.token_chain(3)
    blocks, snap = tmp_path / "blocks", tmp_path / "s.snap"
    export_blocks(source.storage, blocks, from_height=2)
    export_snapshot(source.storage, snap)
    target = builder.store()
    with pytest.raises(CorruptFileError, match="snapshot file magic"):
        import_snapshot(blocks, target)
    with pytest.raises(CorruptFileError, match="block file magic"):
        apply_blocks(snap, target)
    assert list(target.scan(b"")) == []
