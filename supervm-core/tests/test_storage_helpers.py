from __future__ import annotations

import pytest

from supervm.errors import InvalidKeyError, InvalidURLError, KeyTooLargeError
from supervm.storage import check_key, check_value, normalise_ops, prefix_upper_bound
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
