"""Snapshots: export at any kept height, import verified chunk by chunk, resume, refusals."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from supervm.chain import Chain, IncompleteStoreError, PrunedHeightError
from supervm.chunkfile import ChunkReader, ChunkWriter, CorruptFileError, frame, unframe
from supervm.layout import INCOMPLETE_KEY, state_key
from supervm.snapshot import (
    MAGIC,
    SnapshotError,
    export_snapshot,
    import_snapshot,
    read_manifest,
)
from supervm.tree import verify
from supervm.tree.rebuild import root_of

SMALL_CHUNK = 1024


def _snapshot(builder, chain: Chain, tmp_path: Path, name: str = "s.snap", **kw) -> Path:
    out = tmp_path / name
    export_snapshot(chain.storage, out, **kw)
    return out


def test_round_trip_continues_the_chain(builder, tmp_path: Path) -> None:
    source = builder.token_chain(6)
    path = _snapshot(builder, source, tmp_path, chunk_bytes=SMALL_CHUNK)
    manifest = read_manifest(path)
    head = source.head()
    assert (manifest.height, manifest.block_hash, manifest.state_root) == head
    assert manifest.chain == source.identity()
    assert len(manifest.chunks) > 3  # small chunks: the state spans many

    target = builder.chain(builder.store())
    target.close()
    report = import_snapshot(path, target.storage)
    assert report.head == head and not report.resumed
    copy = builder.chain(target.storage)
    assert copy.head() == head
    assert builder.state_of(copy.storage) == builder.state_of(source.storage)
    assert copy.tree.check(head.height) == len(builder.state_of(source.storage))
    assert copy.identity() == source.identity()
    for h in range(1, head.height + 1):
        assert copy.header(h) == source.header(h)
        assert copy.height_of(source.header(h).hash) == h
    # Proofs against the copy verify under the source's root.
    key = max(builder.state_of(source.storage))
    proof = copy.prove(key)
    assert proof.value is not None and verify(head.state_root, key, proof.value, proof.proof)
    # Below the snapshot's height nothing is kept.
    with pytest.raises(PrunedHeightError):
        copy.at(head.height - 1)
    with pytest.raises(PrunedHeightError):
        copy.block(head.height - 1)
    with pytest.raises(PrunedHeightError):
        copy.revert_to(head.height - 1)
    # Both continue with the same next blocks.
    builder.extend(source, 2, seed=9)
    builder.extend(copy, 2, seed=9)
    assert copy.head() == source.head()
    assert copy.at(head.height).get(key) == source.at(head.height).get(key)


def test_export_is_deterministic_across_back_ends(builder, tmp_path: Path) -> None:
    memory = builder.token_chain(4)
    rocks = builder.token_chain(4, storage=builder.store("rocksdb"))
    a = _snapshot(builder, memory, tmp_path, "a.snap", chunk_bytes=SMALL_CHUNK)
    b = _snapshot(builder, memory, tmp_path, "b.snap", chunk_bytes=SMALL_CHUNK)
    c = _snapshot(builder, rocks, tmp_path, "c.snap", chunk_bytes=SMALL_CHUNK)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_past_height_while_blocks_commit(builder, tmp_path: Path) -> None:
    source = builder.token_chain(5)
    past = source.head().height - 2
    expected = dict(source.at(past).scan(b""))
    committed = []

    def commit_during_read(stage: str, done: int, total: int | None) -> None:
        if stage == "reading" and not committed:
            builder.extend(source, 2, seed=5)  # blocks commit while the export reads
            committed.append(source.head().height)

    out = tmp_path / "past.snap"
    # A run budget of 1 KiB spills many sorted runs: the external merge is exercised.
    export_snapshot(
        source.storage, out, height=past, chunk_bytes=SMALL_CHUNK, run_bytes=1024,
        progress=commit_during_read,
    )  # fmt: skip
    assert committed
    manifest = read_manifest(out)
    assert manifest.height == past and manifest.state_root == source.header(past).state_root
    target = builder.store()
    import_snapshot(out, target)
    assert builder.state_of(target) == expected
    assert root_of(expected) == manifest.state_root


def test_bulk_state_many_chunks(builder, tmp_path: Path) -> None:
    chain = builder.chain()
    rng = random.Random(3)
    pairs = [(state_key(b"\x07" * 20, b"k%06d" % i), rng.randbytes(rng.randint(0, 60)))
             for i in range(5000)]  # fmt: skip
    builder.bulk_block(chain, pairs[:3000])
    builder.bulk_block(chain, [(k, None) for k, _ in pairs[:500]] + pairs[3000:])
    path = _snapshot(builder, chain, tmp_path, chunk_bytes=4096, run_bytes=20_000)
    manifest = read_manifest(path)
    assert manifest.keys == 4500 and len(manifest.chunks) > 20
    target = builder.store("rocksdb")
    import_snapshot(path, target)
    assert builder.state_of(target) == dict(pairs[500:])
    assert Chain(target, threads=1).tree.check(2) == 4500


def test_refuses_non_empty_target(builder, tmp_path: Path) -> None:
    source = builder.token_chain(2)
    path = _snapshot(builder, source, tmp_path)
    target = builder.store()
    target.set(b"something", b"here")
    with pytest.raises(SnapshotError, match="not empty"):
        import_snapshot(path, target)
    assert list(target.scan(b"")) == [(b"something", b"here")]
    # Importing the same snapshot twice: the second run finds it done and changes nothing.
    done = builder.store()
    import_snapshot(path, done)
    before = list(done.scan(b""))
    again = import_snapshot(path, done)
    assert again.resumed_chunks == again.chunks and again.head == source.head()
    assert list(done.scan(b"")) == before
    # Once the imported chain has moved on, the snapshot is refused.
    builder.extend(builder.chain(done), 1, seed=3)
    with pytest.raises(SnapshotError, match="not empty"):
        import_snapshot(path, done)


def test_refuses_another_chain(builder, tmp_path: Path) -> None:
    ours = builder.token_chain(2, seed=1)
    theirs = builder.chain()
    builder.bulk_block(theirs, [(state_key(b"\x01" * 20, b"x"), b"y")])
    path = _snapshot(builder, theirs, tmp_path)
    target = builder.store()
    with pytest.raises(SnapshotError, match="not of the expected chain"):
        import_snapshot(path, target, expect_chain=ours.identity())
    assert list(target.scan(b"")) == []


def _fresh_target(builder):
    return builder.store()


def _refused(path: Path, target) -> Exception:
    with pytest.raises((CorruptFileError, SnapshotError)) as caught:
        import_snapshot(path, target)
    assert list(target.scan(b"")) == [], "a refused import left keys behind"
    return caught.value


def test_byte_flips_and_truncations_are_refused(builder, tmp_path: Path) -> None:
    path = _snapshot(builder, builder.token_chain(3), tmp_path, chunk_bytes=SMALL_CHUNK)
    data = path.read_bytes()
    rng = random.Random(11)
    bad = tmp_path / "bad.snap"
    target = _fresh_target(builder)
    offsets = [*sorted(rng.sample(range(len(data)), 60)), 0, len(data) - 1]
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(flipped))
        _refused(bad, target)
    for length in [*sorted(rng.sample(range(len(data)), 30)), 0, 7, len(data) - 1]:
        bad.write_bytes(data[:length])
        error = _refused(bad, target)
        assert str(bad) in str(error)
    bad.write_bytes(b"")
    # The intact file still imports.
    import_snapshot(path, target)


def test_swapped_chunks_are_refused(builder, tmp_path: Path) -> None:
    path = _snapshot(builder, builder.token_chain(3), tmp_path, chunk_bytes=SMALL_CHUNK)
    with ChunkReader(path, MAGIC, "snapshot") as reader:
        chunks = reader.chunks
        frames = []
        data = path.read_bytes()
        for info in chunks:
            frames.append(data[info.offset : info.offset + 4 + info.size])
    first = chunks[0]
    body = bytearray(data)
    swapped = frames[1] + frames[0]
    start = first.offset
    body[start : start + len(swapped)] = swapped
    bad = tmp_path / "swapped.snap"
    bad.write_bytes(bytes(body))
    error = _refused(bad, _fresh_target(builder))
    assert "chunk" in str(error)


def _rewrite(path: Path, out: Path, change) -> None:
    """Copy snapshot ``path`` to ``out`` with its chunks' contents changed by ``change``
    (hashes recomputed: a lying writer, not a damaged file)."""
    with ChunkReader(path, MAGIC, "snapshot") as reader:
        body = {k: v for k, v in reader.manifest.items() if k != "chunks"}
        with ChunkWriter(out, MAGIC) as writer:
            for info, raw in reader.iter_chunks():
                fields = change(info, unframe(raw))
                items = len(fields) // 2 if info.kind != "headers" else len(fields)
                writer.add(info.kind, b"".join(frame(f) for f in fields), items)
            writer.finish(body)


def test_wrong_root_is_refused_and_nothing_stays(builder, tmp_path: Path) -> None:
    path = _snapshot(builder, builder.token_chain(3), tmp_path, chunk_bytes=SMALL_CHUNK)
    lying = tmp_path / "lying.snap"

    def alter_value(info, fields):
        if info.index == 2 and info.kind == "state":
            fields[1] = fields[1] + b"!"
        return fields

    _rewrite(path, lying, alter_value)
    error = _refused(lying, _fresh_target(builder))
    assert "root" in str(error)

    def reorder(info, fields):
        if info.index == 1 and info.kind == "state":
            pairs = [fields[i : i + 2] for i in range(0, len(fields), 2)]
            pairs.reverse()
            fields = [f for pair in pairs for f in pair]
        return fields

    _rewrite(path, lying, reorder)
    error = _refused(lying, _fresh_target(builder))
    assert "key-hash order" in str(error)


def test_interrupted_import_resumes(builder, tmp_path: Path) -> None:
    source = builder.token_chain(4)
    path = _snapshot(builder, source, tmp_path, chunk_bytes=SMALL_CHUNK)
    target = builder.store("rocksdb")

    class Stop(Exception):
        pass

    def stop_after_three(stage: str, done: int, total: int | None) -> None:
        if stage == "importing" and stop_after_three.calls == 3:  # type: ignore[attr-defined]
            raise Stop
        if stage == "importing":
            stop_after_three.calls += 1  # type: ignore[attr-defined]

    stop_after_three.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(Stop):
        import_snapshot(path, target, progress=stop_after_three)
    assert target.get(INCOMPLETE_KEY) is not None
    with pytest.raises(IncompleteStoreError, match="unfinished snapshot import"):
        Chain(target, threads=1)
    # Another snapshot cannot take over the half-imported store.
    other = _snapshot(builder, builder.token_chain(5, seed=2), tmp_path, "other.snap")
    with pytest.raises(SnapshotError, match="another snapshot"):
        import_snapshot(other, target)
    report = import_snapshot(path, target)
    assert report.resumed_chunks == 4
    assert report.head == source.head()
    assert builder.state_of(target) == builder.state_of(source.storage)


def test_export_refuses_what_it_cannot_snapshot(builder, tmp_path: Path) -> None:
    empty = builder.chain()
    with pytest.raises(SnapshotError, match="no block"):
        export_snapshot(empty.storage, tmp_path / "e.snap")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_snapshot(empty.storage, tmp_path / "missing" / "e.snap")
    chain = builder.token_chain(4)
    with pytest.raises(ValueError, match="above the head"):
        export_snapshot(chain.storage, tmp_path / "x.snap", height=99)
    chain.prune(keep_blocks=1)
    with pytest.raises(PrunedHeightError):
        export_snapshot(chain.storage, tmp_path / "x.snap", height=2)
    assert not (tmp_path / "x.snap").exists()
    assert not (tmp_path / "x.snap.partial").exists()
    # A store whose state no longer matches its root: refused by a verifying export, and
    # an unverified export of it is refused by the import, which leaves the target empty.
    chain.storage.set(state_key(b"\x09" * 20, b"stray"), b"value")
    with pytest.raises(SnapshotError, match="damaged"):
        export_snapshot(chain.storage, tmp_path / "x.snap", verify=True)
    assert not (tmp_path / "x.snap").exists()
    export_snapshot(chain.storage, tmp_path / "x.snap")
    _refused(tmp_path / "x.snap", builder.store())


def test_header_chain_is_checked(builder, tmp_path: Path) -> None:
    path = _snapshot(builder, builder.token_chain(3), tmp_path)
    lying = tmp_path / "headers.snap"

    def drop_a_header(info, fields):
        if info.kind == "headers":
            fields = fields[:1] + fields[2:] + fields[1:2]
        return fields

    _rewrite(path, lying, drop_a_header)
    error = _refused(lying, _fresh_target(builder))
    assert "header" in str(error)
