"""The status page in headless Chromium, against a real node and its RPC server.

Debian's ``chromium`` and ``chromium-driver`` packages drive it (``.ci/run`` installs them);
Selenium is pointed at their binaries, so Selenium Manager never fetches a browser or a
driver. Without them the tests skip, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from supervm.chain import Transaction
from supervm.chain.workload import token_code
from supervm.client import Client
from supervm.memory import MemoryStorage
from supervm.vm.runtime import DEPLOY_ADDRESS, DEPLOY_METHOD, contract_address, deploy_input
from supervm_node.keys import KeyPair
from supervm_node.node import Node
from supervm_node.rpc import BackgroundServer, create_app
from supervm_node.signing import sign_transaction

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHAIN_ID = 77
#: How long the page may take to show what the node already knows.
WAIT = 20
MINTED = 1_000_000
SENT = 1_234


def _missing_browser() -> str | None:
    if find_spec("selenium") is None:
        return "selenium is not installed (it is in the workspace's dev group)"
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return None
    return f"{' and '.join(missing)} missing (Debian packages chromium and chromium-driver)"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; skips without it, fails under ``CI=true``."""
    problem = _missing_browser()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: the status-page tests must not be skipped)")
        pytest.skip(f"{problem}: the status-page tests need it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1600",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    """A node on a memory store behind the real RPC server, on a free port."""
    node = Node(MemoryStorage(), chain_id=CHAIN_ID, block_time_ms=100, threads=1)
    with BackgroundServer(create_app(node)) as running:
        yield running


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[Client]:
    with Client(server.url) as connected:
        yield connected


def _wait(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    """``condition``'s first truthy value; on timeout, a failure naming ``what`` and the page."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiter = WebDriverWait(
        driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )
    try:
        return waiter.until(condition)
    except Exception as exc:
        page = driver.execute_script("return document.body.innerText;")
        raise AssertionError(f"the page never showed {what}; it reads:\n{page}") from exc


def _element(driver: WebDriver, element_id: str) -> WebElement:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _text(driver: WebDriver, element_id: str) -> str:
    return str(_element(driver, element_id).text)


def _rows(driver: WebDriver) -> list[list[str]]:
    """The recent-blocks table's cells, read at once (the page redraws it on every block)."""
    rows: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#recent-blocks tr'),"
        " row => Array.from(row.cells, cell => cell.textContent));"
    )
    return rows


def _fields(driver: WebDriver, result_id: str) -> dict[str, str] | str:
    """A lookup's answer: its fields by element id, or its text (an error, "not found")."""
    answer: dict[str, str] | str = driver.execute_script(
        "const target = document.getElementById(arguments[0]);"
        "const fields = target.querySelectorAll('dd');"
        "if (!fields.length) return target.textContent;"
        "return Object.fromEntries(Array.from(fields, dd => [dd.id, dd.textContent]));",
        result_id,
    )
    return answer


def _look_up(driver: WebDriver, result_id: str, inputs: dict[str, str], submit: str) -> Any:
    """Fill in a form, submit it and wait for its answer (as :func:`_fields`)."""
    for element_id, value in inputs.items():
        field = _element(driver, element_id)
        field.clear()
        if value:
            field.send_keys(value)
    driver.execute_script("document.getElementById(arguments[0]).replaceChildren();", result_id)
    _element(driver, submit).click()

    def answered(d: WebDriver) -> Any:
        answer = _fields(d, result_id)
        return answer if answer and answer != "looking up…" else None

    return _wait(driver, f"an answer in #{result_id}", answered)


def _look_up_tx(driver: WebDriver, tx_hash: bytes) -> Any:
    return _look_up(driver, "tx-result", {"tx-hash": tx_hash.hex()}, "tx-submit")


def _look_up_state(driver: WebDriver, contract: bytes, key: bytes, height: str = "") -> Any:
    inputs = {"state-contract": contract.hex(), "state-key": key.hex(), "state-height": height}
    return _look_up(driver, "state-result", inputs, "state-submit")


def _head_height(driver: WebDriver) -> int | None:
    shown = _text(driver, "head-height")
    return int(shown) if shown.isdigit() else None


def _balance_key(account: bytes) -> bytes:
    """Where the token contract keeps an account's balance (examples/contracts/token.c)."""
    return b"bal/" + account


def test_status_page_follows_the_node(
    browser: WebDriver, server: BackgroundServer, client: Client
) -> None:
    owner = KeyPair.from_seed(bytes(range(32)))
    recipient = KeyPair.from_seed(bytes(range(1, 33))).address
    code = token_code()
    token = contract_address(code, b"")

    def signed(nonce: int, contract: bytes, method: str, input: bytes) -> Transaction:
        return sign_transaction(
            owner, chain_id=CHAIN_ID, nonce=nonce, contract=contract, method=method, input=input
        )

    deployed = client.wait_for_receipt(
        client.send_transaction(signed(0, DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(code)))
    )
    assert deployed["receipt"]["status"] == "ok"
    deploy_height = deployed["height"]
    # Two transfers ahead of the owner's nonce wait in the mempool until the mint fills the gap;
    # the second asks for more than the owner has, and reverts.
    transfer = signed(2, token, "transfer", recipient + struct.pack("<Q", SENT))
    too_much = signed(3, token, "transfer", recipient + struct.pack("<Q", MINTED))
    transfer_hash, too_much_hash = (client.send_transaction(tx) for tx in (transfer, too_much))
    assert client.mempool()["count"] == 2

    browser.get(server.url + "/")
    _wait(browser, "the chain id", lambda d: _text(d, "chain-id") == f"chain {CHAIN_ID}")
    _wait(browser, "the head", lambda d: _head_height(d) == deploy_height)
    head = client.head()
    assert _text(browser, "head-hash") == head["hash"]
    assert _text(browser, "head-state-root") == head["state_root"]
    assert _text(browser, "head-timestamp")
    _wait(browser, "the waiting transfers", lambda d: _text(d, "mempool-count") == "2")
    assert int(_text(browser, "mempool-bytes")) == len(transfer.encode()) + len(too_much.encode())
    rows = _rows(browser)
    assert [row[0] for row in rows] == [str(h) for h in range(deploy_height, 0, -1)]
    assert rows[0][1] == head["hash"][:16] + "…"
    _wait(browser, "the deploy block's transaction count", lambda d: _rows(d)[0][2] == "1")

    pending = _look_up_tx(browser, transfer_hash)
    assert pending["tx-status"] == "pending"
    assert pending["tx-receipt-status"] == "—"

    # The mint fills the gap: one block takes all three, and the page follows it.
    mint_hash = client.send_transaction(
        signed(1, token, "mint", owner.address + struct.pack("<Q", MINTED))
    )
    minted = client.wait_for_receipt(mint_hash)
    for tx_hash in (transfer_hash, too_much_hash):
        assert client.wait_for_receipt(tx_hash)["height"] == minted["height"]
    height = minted["height"]
    assert height > deploy_height
    _wait(browser, f"head height {height}", lambda d: (_head_height(d) or 0) >= height)
    _wait(browser, "an empty mempool", lambda d: _text(d, "mempool-count") == "0")
    assert _text(browser, "mempool-bytes") == "0"
    newest = f"block {height} with its 3 transactions first in the list"
    _wait(browser, newest, lambda d: [_rows(d)[0][i] for i in (0, 2)] == [str(height), "3"])

    for tx_hash in (mint_hash, transfer_hash):
        included = _look_up_tx(browser, tx_hash)
        assert included["tx-status"] == "included"
        assert included["tx-height"] == str(height)
        assert included["tx-receipt-status"] == "ok"
        known = client.get_transaction(tx_hash)
        assert known is not None
        assert int(included["tx-gas"]) == known["receipt"]["gas_used"] > 0
    reverted = _look_up_tx(browser, too_much_hash)
    assert reverted["tx-status"] == "included"
    assert reverted["tx-receipt-status"] == "reverted"
    assert reverted["tx-error"] == "insufficient balance"
    assert _look_up_tx(browser, bytes(32)) == "not found"

    # Balances, as the token stores them; an account that never held any has no key.
    balance = _look_up_state(browser, token, _balance_key(recipient))
    assert balance["state-value"] == struct.pack("<Q", SENT).hex()
    assert balance["state-at-height"] == str(height)
    balance = _look_up_state(browser, token, _balance_key(owner.address))
    assert balance["state-value"] == struct.pack("<Q", MINTED - SENT).hex()
    before = _look_up_state(browser, token, _balance_key(recipient), str(deploy_height))
    assert before["state-value"] == "absent"
    assert before["state-at-height"] == str(deploy_height)
    absent = _look_up_state(browser, token, _balance_key(bytes(20)))
    assert absent["state-value"] == "absent"

    above = _look_up_state(browser, token, _balance_key(recipient), str(height + 100))
    assert isinstance(above, str)
    assert above.startswith("Error: ")
    assert "above the head" in above
    assert "height_above_head" in above
    assert _text(browser, "error") == ""


def test_status_page_shows_errors(browser: WebDriver, server: BackgroundServer) -> None:
    browser.get(server.url + "/")
    _wait(browser, "the head", lambda d: _head_height(d) == 0)
    assert _rows(browser) == []
    bad = _look_up(browser, "tx-result", {"tx-hash": "not hex"}, "tx-submit")
    assert isinstance(bad, str)
    assert bad.startswith("Error: ")
    server.stop()
    _wait(browser, "that the node is unreachable", lambda d: "unreachable" in _text(d, "error"))
    failed = _look_up(browser, "tx-result", {"tx-hash": "00" * 32}, "tx-submit")
    assert isinstance(failed, str)
    assert "unreachable" in failed
