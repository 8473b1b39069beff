"""Several hosts in one store URL: parsing, failing over when a node is down, causal reads.

A real Galera cluster is exercised by the repository's ``tests/cluster``; here
the nodes are the test server and loopback ports where nothing listens.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import pytest
from sqlalchemy.engine import make_url

from supervm import open_storage
from supervm.errors import InvalidURLError, StorageConnectionError, StorageError
from supervm_mariadb import MariaDBStorage
from supervm_mariadb.nodes import Address, parse_hosts


def closed_port() -> int:
    """A loopback port with no listener (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_address(url: str) -> Address:
    parsed = make_url(url)
    return Address(parsed.host or "localhost", parsed.port or 3306)


def open_maria(url: str) -> MariaDBStorage:
    store = open_storage(url)
    assert isinstance(store, MariaDBStorage)
    return store


@pytest.fixture
def dead() -> Address:
    return Address("127.0.0.1", closed_port())


def test_hosts_are_parsed_with_default_ports_and_ipv6() -> None:
    assert parse_hosts("a:1,b, [::1]:3307") == (
        Address("a", 1), Address("b", 3306), Address("::1", 3307),
    )  # fmt: skip
    assert str(Address("::1", 3307)) == "[::1]:3307"


@pytest.mark.parametrize("spec", ["", " ", "a:0", "a:70000", "a:b", "a,,b", "::1:3306", "a/b"])
def test_bad_hosts_are_refused_before_connecting(spec: str) -> None:
    with pytest.raises(InvalidURLError, match="hosts="):
        open_storage(f"mariadb://bob:sekrit@127.0.0.1:1/test?hosts={spec}")


def test_hosts_with_a_unix_socket_is_refused() -> None:
    with pytest.raises(InvalidURLError, match="unix_socket"):
        open_storage("mariadb://bob@127.0.0.1:1/test?hosts=127.0.0.1:2&unix_socket=/tmp/s")


def test_bad_conflict_retries_and_causal_reads_are_refused() -> None:
    for query in ("conflict_retries=-1", "conflict_retries=x", "causal_reads=perhaps"):
        with pytest.raises(InvalidURLError, match=query.split("=")[0]):
            open_storage(f"mariadb://bob@127.0.0.1:1/test?{query}")
    with pytest.raises(ValueError, match="conflict_retries"):
        MariaDBStorage("test", port=1, conflict_retries=-1)
    with pytest.raises(TypeError, match="causal_reads"):
        MariaDBStorage("test", port=1, causal_reads="yes")  # type: ignore[arg-type]


@pytest.mark.mariadb
def test_a_down_first_node_fails_over_to_the_next(
    table_url: str, with_options: Callable[..., str], dead: Address,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = server_address(table_url)
    url = make_url(table_url).set(host=dead.host, port=dead.port)
    caplog.set_level(logging.WARNING, logger="supervm_mariadb")
    store = open_maria(with_options(url.render_as_string(hide_password=False), hosts=str(server)))
    try:
        assert store.nodes == (dead, server)
        assert store.node == server
        assert store.failovers == 1
        store.set(b"k", b"v")
        assert store.get(b"k") == b"v"
        assert not store.server_settings.galera
    finally:
        store.drop()
    (record,) = [r for r in caplog.records if r.name == "supervm_mariadb"]
    assert f"MariaDB node {dead} is not usable" in record.getMessage()
    assert f"failed over to {server}" in record.getMessage()


@pytest.mark.mariadb
def test_the_url_host_listed_again_in_hosts_is_one_node(
    table_url: str, with_options: Callable[..., str]
) -> None:
    server = server_address(table_url)
    store = open_maria(with_options(table_url, hosts=f"{server},{server}"))
    try:
        assert store.nodes == (server,)
        assert store.failovers == 0
    finally:
        store.drop()


def test_no_usable_node_names_every_node(dead: Address) -> None:
    other = Address("127.0.0.1", closed_port())
    with pytest.raises(StorageConnectionError) as info:
        open_storage(f"mariadb://bob:sekrit@{dead}/test?hosts={other}&connect_timeout=2")
    message = str(info.value)
    assert f"no node of {dead},{other} is usable" in message
    assert str(dead) in message and str(other) in message
    assert "sekrit" not in message


@pytest.mark.mariadb
def test_causal_reads_on_a_server_that_is_not_a_galera_node_changes_nothing(
    table_url: str, with_options: Callable[..., str]
) -> None:
    store = open_maria(with_options(table_url, causal_reads="true"))
    try:
        assert not store.server_settings.galera
        store.write_batch([(b"a", b"1"), (b"b", b"2")])
        assert dict(store.scan()) == {b"a": b"1", b"b": b"2"}
    finally:
        store.drop()


@pytest.mark.mariadb
def test_a_login_refused_by_the_first_node_is_not_failed_over(
    table_url: str, with_options: Callable[..., str], dead: Address
) -> None:
    bad_user = make_url(table_url).set(username="no_such_user_supervm", password="x")
    url = with_options(bad_user.render_as_string(hide_password=False), hosts=str(dead))
    with pytest.raises(StorageError, match="Access denied") as info:
        open_storage(url)
    # Refused at once by the first node: the second was never tried.
    assert "no node of" not in str(info.value)
    assert "Connection refused" not in str(info.value)
