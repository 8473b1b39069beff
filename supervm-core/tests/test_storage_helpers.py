from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from supervm.errors import (
    InvalidKeyError,
    InvalidURLError,
    KeyTooLargeError,
    StorageError,
    StoreNotFoundError,
    ValueTooLargeError,
)
from supervm.memory import MemoryStorage
from supervm.storage import (
    FINISHED_BATCH,
    Batch,
    DriverBatch,
    ListBatch,
    QueuedBatch,
    apply_ops,
    check_key,
    check_ops,
    check_value,
    normalise_ops,
    prefix_upper_bound,
    store_path,
)
from supervm.url import parse_url


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        (b"", None),
        (b"a", b"b"),
        (b"a\x00", b"a\x01"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\xfe\xff", b"\xff"),
        (b"\xff", None),
        (b"\xff\xff\xff", None),
        (b"ab\x7f", b"ab\x80"),
    ],
)
def test_prefix_upper_bound(prefix: bytes, bound: bytes | None) -> None:
    assert prefix_upper_bound(prefix) == bound


def test_prefix_upper_bound_is_tight() -> None:
    # Every key with the prefix is below the bound; the bound itself lacks the prefix.
    for prefix in [b"a", b"a\xff", b"\x00\xff", b"z\xfe"]:
        bound = prefix_upper_bound(prefix)
        assert bound is not None
        assert prefix + b"\xff" * 8 < bound
        assert not bound.startswith(prefix)


def test_check_key_and_value() -> None:
    assert check_key(b"k") == b"k"
    with pytest.raises(TypeError, match="bytearray"):
        check_key(bytearray(b"k"))
    with pytest.raises(InvalidKeyError):
        check_key(b"")
    with pytest.raises(KeyTooLargeError, match="limit of 3"):
        check_key(b"abcd", 3)
    assert check_value(b"") == b""
    with pytest.raises(TypeError, match="str"):
        check_value("v")


def test_normalise_ops_checks_everything_first() -> None:
    assert normalise_ops([(b"a", b"1"), (b"b", None)], None, None) == [(b"a", b"1"), (b"b", None)]
    with pytest.raises(TypeError):
        normalise_ops([[b"a", b"1"]], None, None)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        normalise_ops([(b"a", 1)], None, None)  # type: ignore[list-item]


def test_parse_url_parts() -> None:
    url = parse_url("postgresql+psycopg://user:p%40ss@db.example:5433/chain?table=kv&retries=2")
    assert url.scheme == "postgresql+psycopg"
    assert url.backend == "postgresql"
    assert (url.username, url.password, url.host, url.port) == ("user", "p@ss", "db.example", 5433)
    assert url.path == "/chain"
    assert url.options == {"table": "kv", "retries": "2"}
    assert url.int_option("retries", 1) == 2


def test_file_paths() -> None:
    assert parse_url("rocksdb:///var/lib/supervm").file_path() == "/var/lib/supervm"
    assert parse_url("rocksdb://Data/chain").file_path() == "Data/chain"
    with pytest.raises(InvalidURLError, match="needs a database path"):
        parse_url("rocksdb://").file_path()


def test_option_parsing_errors() -> None:
    url = parse_url("x:///p?sync=maybe&n=abc&c=gzip")
    with pytest.raises(InvalidURLError, match="not a boolean"):
        url.bool_option("sync", False)
    with pytest.raises(InvalidURLError, match="not an integer"):
        url.int_option("n", 1)
    with pytest.raises(InvalidURLError, match="must be one of"):
        url.choice_option("c", "lz4", ["lz4", "zstd"])
    with pytest.raises(InvalidURLError, match="given twice"):
        parse_url("x:///p?a=1&a=2")
    with pytest.raises(InvalidURLError, match="malformed"):
        parse_url("x://host:notaport/p")
    assert parse_url("x:///p?sync=YES").bool_option("sync", False) is True


def test_passwords_never_reach_messages() -> None:
    from supervm.url import mask_password

    assert mask_password("postgresql://u:secret@h:5/db?x=1") == "postgresql://u:***@h:5/db?x=1"
    assert mask_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_password("memory://") == "memory://"
    assert mask_password("postgresql://u@h/db?password=sekrit&a=1") == (
        "postgresql://u@h/db?password=***&a=1"
    )
    url = parse_url("postgresql://u:secret@h/db?retries=x&bogus=1")
    for call in (
        lambda: url.int_option("retries", 1),
        lambda: url.reject_unknown_options(["retries"]),
    ):
        with pytest.raises(InvalidURLError) as info:
            call()
        assert "secret" not in str(info.value)
        assert "u:***@h" in str(info.value)
    with pytest.raises(InvalidURLError) as info:
        parse_url("postgresql://u:secret@h:port/db")
    assert "secret" not in str(info.value)


def test_check_ops_validates_the_whole_batch_first() -> None:
    ops = [(b"a", b"1"), (b"b", None)]
    checked, deletes = check_ops(ops)
    assert checked is ops  # a list is checked in place, not copied
    assert deletes is True
    assert check_ops(op for op in [(b"a", b"1")]) == ([(b"a", b"1")], False)
    assert check_ops({b"k": b"v"}.items()) == ([(b"k", b"v")], False)
    for bad in ([[b"a", b"1"]], [(b"a",)], [(b"a", b"1", b"2")], [b"ab"], [None], [(b"a", 1)]):
        with pytest.raises(TypeError, match=r"batch operations|bytes"):
            check_ops(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        check_ops([(b"ok", b"v"), (b"", b"v")])
    with pytest.raises(KeyTooLargeError, match="limit of 3"):
        check_ops([(b"abc", b"v"), (b"abcd", None)], max_key_size=3)
    with pytest.raises(ValueTooLargeError, match="limit of 2"):
        check_ops([(b"a", b""), (b"b", None), (b"c", b"xyz")], max_value_size=2)
    assert check_ops([(b"abc", b"xy"), (b"d", None)], 3, 2)[1] is True


def test_apply_ops_keeps_the_order() -> None:
    seen: list[tuple[str, bytes]] = []

    def put(key: bytes, value: bytes) -> None:
        seen.append(("put", key))

    def remove(key: bytes) -> None:
        seen.append(("remove", key))

    apply_ops([(b"a", b"1"), (b"b", b"2")], False, put, remove)
    apply_ops([(b"c", None), (b"a", b"3")], True, put, remove)
    assert seen == [("put", b"a"), ("put", b"b"), ("remove", b"c"), ("put", b"a")]


def _batches() -> list[tuple[str, Batch, Callable[[], Sequence[object]]]]:
    """One batch of each shared kind, with what it wrote so far."""
    memory = MemoryStorage()
    written: dict[str, list[object]] = {"driver": [], "queued": []}
    driver_ops: list[object] = []
    driver = DriverBatch(
        lambda k, v: driver_ops.append((k, v)),
        lambda k: driver_ops.append((k, None)),
        lambda: written["driver"].extend(driver_ops),
    )
    queued = QueuedBatch(lambda ops, deletes: written["queued"].extend(ops), max_key_size=4)
    return [
        ("list", ListBatch(memory), lambda: list(memory.scan())),
        ("driver", driver, lambda: written["driver"]),
        ("queued", queued, lambda: written["queued"]),
    ]


@pytest.mark.parametrize("index", range(3), ids=["list", "driver", "queued"])
def test_shared_batches_finish_once(index: int) -> None:
    name, batch, written = _batches()[index]
    late_set = batch.set
    batch.set(b"a", b"1")
    batch.delete(b"b")
    assert len(batch) == 2
    assert written() == []
    batch.commit()
    assert len(batch) == 2
    assert written() == ([(b"a", b"1")] if name == "list" else [(b"a", b"1"), (b"b", None)])
    calls: list[Callable[[], object]] = [
        lambda: batch.set(b"c", b"1"),
        lambda: late_set(b"c", b"1"),
        batch.commit,
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=FINISHED_BATCH):
            call()
    batch.discard()  # harmless once finished
    fresh = _batches()[index][1]
    with pytest.raises(TypeError):
        fresh.set(b"k", "v")  # type: ignore[arg-type]
    for bad in ("k", bytearray(b"k"), None):
        with pytest.raises(TypeError):
            fresh.set(bad, b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            fresh.delete(bad)  # type: ignore[arg-type]
    assert len(fresh) == 0


@pytest.mark.parametrize("index", range(3), ids=["list", "driver", "queued"])
def test_shared_batches_discard(index: int) -> None:
    _, batch, written = _batches()[index]
    batch.set(b"a", b"1")
    batch.discard()
    assert len(batch) == 0
    with pytest.raises(RuntimeError, match=FINISHED_BATCH):
        batch.delete(b"a")
    with pytest.raises(RuntimeError, match=FINISHED_BATCH):
        batch.commit()
    assert written() == []


def test_queued_batch_refuses_long_keys_as_they_come() -> None:
    batch = QueuedBatch(lambda ops, deletes: None, max_key_size=4)
    batch.set(b"abcd", b"v")
    with pytest.raises(KeyTooLargeError):
        batch.set(b"abcde", b"v")
    with pytest.raises(KeyTooLargeError):
        batch.delete(b"abcde")


def test_store_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with pytest.raises(StoreNotFoundError, match="nothing was created") as info:
        store_path(target, create=False, kind="Test", marker="CURRENT")
    assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert store_path(target, create=True, kind="Test", marker="CURRENT") == str(target)
    assert target.is_dir()
    with pytest.raises(StoreNotFoundError):
        store_path(target, create=False, kind="Test", marker="CURRENT")
    (target / "CURRENT").write_text("")
    assert store_path(target, create=False, kind="Test", marker="CURRENT") == str(target)
    db = tmp_path / "c" / "kv.db"
    assert store_path(db, create=True, kind="Test") == str(db)
    assert db.parent.is_dir() and not db.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="file") as error:
        store_path(blocker / "db", create=True, kind="Test", marker="CURRENT")
    assert isinstance(error.value.original, OSError)


def test_float_and_with_option() -> None:
    url = parse_url("sqlite:///x.db?timeout=0.5&bad=soon&inf=inf")
    assert url.float_option("timeout", 5.0) == 0.5
    assert url.float_option("absent", 5.0) == 5.0
    for name in ("bad", "inf"):
        with pytest.raises(InvalidURLError, match="not a number"):
            url.float_option(name, 1.0)
    with pytest.raises(InvalidURLError, match=">= 1"):
        url.float_option("timeout", 5.0, minimum=1.0)
    changed = url.with_option("timeout", "2")
    assert changed.float_option("timeout", 5.0) == 2.0
    assert url.options["timeout"] == "0.5"
    assert changed.raw == url.raw
