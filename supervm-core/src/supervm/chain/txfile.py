"""Transaction files for ``supervm run`` and ``supervm block``: one JSON object per line.

    {"deploy": "examples/contracts/token.wasm", "as": "token"}
    {"contract": "token", "method": "mint", "sender": "aa..aa", "input": "<hex>"}
    {"contract": "9f3c...", "method": "balance", "input_text": "...", "gas": 100000}

``contract`` is a hex address or a name given with ``as`` earlier in the file.
Optional fields: ``input`` (hex) or ``input_text``, ``sender`` (hex, default 20
zero bytes), ``gas``, ``height``, ``timestamp``. Blank lines and lines starting
with ``#`` are skipped. Paths are relative to the file.

In a block file (``supervm block``) the calls form one block: the block sets
height and timestamp, so calls may not; a call may say ``"owned": true`` (it
touches only objects its sender owns), and a line may make an account the
owner of a contract's storage key before the block runs::

    {"assign": {"contract": "counter", "key_text": "counter", "owner": "0a..0a"}}

(``key`` takes the key in hex instead of ``key_text``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervm.chain.block import Block, Transaction
from supervm.errors import SuperVMError
from supervm.vm.runtime import contract_address

if TYPE_CHECKING:
    from supervm.chain.chain import Chain

__all__ = [
    "Assignment",
    "BlockFile",
    "Deployment",
    "Transaction",
    "TransactionFileError",
    "read_block_file",
    "read_transactions",
    "run_transactions",
]

_FIELDS = {"contract", "method", "input", "input_text", "sender", "gas", "height", "timestamp"}
_BLOCK_FIELDS = (_FIELDS - {"height", "timestamp"}) | {"owned"}
_ASSIGN_FIELDS = {"contract", "key", "key_text", "owner"}


class TransactionFileError(SuperVMError, ValueError):
    """A line of a transaction file is malformed; the message names the line."""


@dataclass(frozen=True)
class Assignment:
    """``owner`` becomes the only account that may write ``key`` of ``contract``."""

    contract: bytes
    key: bytes
    owner: bytes


def _hex(value: Any, what: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise TransactionFileError(f"{where}: {what} must be a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise TransactionFileError(f"{where}: {what} {value!r} is not hexadecimal") from None


def _contract(entry: dict[str, Any], names: dict[str, bytes], where: str) -> bytes:
    target = entry["contract"]
    address = names.get(target) if isinstance(target, str) else None
    if address is None:
        address = _hex(target, "contract", where)
    return address


def _parse(
    entry: dict[str, Any], names: dict[str, bytes], where: str, block: bool = False
) -> tuple[Transaction, int, int]:
    unknown = set(entry) - (_BLOCK_FIELDS if block else _FIELDS)
    if block and unknown & {"height", "timestamp"}:
        raise TransactionFileError(
            f"{where}: height and timestamp are set by the block, not by its calls"
        )
    if not block and "owned" in unknown:
        raise TransactionFileError(f"{where}: 'owned' is only allowed in block files")
    if unknown:
        raise TransactionFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "contract" not in entry or "method" not in entry:
        raise TransactionFileError(f"{where}: a call needs 'contract' and 'method'")
    address = _contract(entry, names, where)
    if not isinstance(entry["method"], str):
        raise TransactionFileError(f"{where}: method must be a string")
    if "input_text" in entry:
        if not isinstance(entry["input_text"], str):
            raise TransactionFileError(f"{where}: input_text must be a string")
        data = entry["input_text"].encode()
    else:
        data = _hex(entry.get("input", ""), "input", where)
    numbers = {}
    for name, default in (("gas", 10_000_000), ("height", 0), ("timestamp", 0)):
        value = entry.get(name, default)
        if type(value) is not int or value < 0:
            raise TransactionFileError(f"{where}: {name} must be a non-negative integer")
        numbers[name] = value
    owned = entry.get("owned", False)
    if type(owned) is not bool:
        raise TransactionFileError(f"{where}: owned must be true or false")
    sender = _hex(entry.get("sender", "00" * 20), "sender", where)
    tx = Transaction(address, entry["method"], data, sender, numbers["gas"], owned)
    return tx, numbers["height"], numbers["timestamp"]


def _assignment(entry: dict[str, Any], names: dict[str, bytes], where: str) -> Assignment:
    spec = entry["assign"]
    if len(entry) != 1 or not isinstance(spec, dict):
        raise TransactionFileError(
            f'{where}: an assign line is {{"assign": {{"contract", "key" or "key_text", "owner"}}}}'
        )
    unknown = set(spec) - _ASSIGN_FIELDS
    if unknown:
        raise TransactionFileError(f"{where}: unknown assign field(s) {', '.join(sorted(unknown))}")
    if "contract" not in spec or "owner" not in spec or ("key" in spec) == ("key_text" in spec):
        raise TransactionFileError(
            f"{where}: assign needs 'contract', 'owner' and one of 'key' or 'key_text'"
        )
    if "key_text" in spec:
        if not isinstance(spec["key_text"], str):
            raise TransactionFileError(f"{where}: key_text must be a string")
        key = spec["key_text"].encode()
    else:
        key = _hex(spec["key"], "key", where)
    owner = _hex(spec["owner"], "owner", where)
    if not key or not owner:
        raise TransactionFileError(f"{where}: assign key and owner must not be empty")
    return Assignment(_contract(spec, names, where), key, owner)


def read_transactions(
    path: Path, deploy: Callable[[bytes], bytes] | None = None, *, block: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parse ``path`` line by line; ``deploy(code) -> address`` handles deploy lines.

    Yields ``(line number, item)`` where item is ``{"tx", "height", "timestamp"}``
    for a call, ``{"deployed", "address"}`` for a deploy and, with ``block=True``
    (block file rules), ``{"assign"}`` for an ownership assignment.
    """
    names: dict[str, bytes] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TransactionFileError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(entry, dict):
                raise TransactionFileError(f"{where}: each line must be a JSON object")
            if "deploy" in entry:
                if deploy is None:
                    raise TransactionFileError(f"{where}: deploy lines are not allowed here")
                code_path = (path.parent / str(entry["deploy"])).resolve()
                try:
                    code = code_path.read_bytes()
                except OSError as exc:
                    raise TransactionFileError(
                        f"{where}: cannot read {code_path}: {exc.strerror or exc}"
                    ) from None
                address = deploy(code)
                if "as" in entry:
                    names[str(entry["as"])] = address
                yield number, {"deployed": str(entry["deploy"]), "address": address}
                continue
            if "assign" in entry:
                if not block:
                    raise TransactionFileError(f"{where}: assign lines are only allowed in blocks")
                yield number, {"assign": _assignment(entry, names, where)}
                continue
            tx, height, timestamp = _parse(entry, names, where, block)
            yield number, {"tx": tx, "height": height, "timestamp": timestamp}


def run_transactions(chain: Chain, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Deploy and call, line by line, each in a block of its own; yield each line's result.

    A call's block is the chain's next one (a line's ``height`` is not used);
    its timestamp is the line's.
    """
    for number, item in read_transactions(path, deploy=chain.deploy):
        if "tx" in item:
            height = chain.head().height + 1
            block = Block(height, item["timestamp"], (item["tx"],))
            (receipt,) = chain.apply(block, mode="sequential").receipts
            yield number, {"receipt": receipt}
        else:
            yield number, item


@dataclass(frozen=True)
class Deployment:
    """A deploy line of a block file: its line number, the file it named and the code."""

    line: int
    name: str
    code: bytes

    @property
    def address(self) -> bytes:
        """The address the code deploys at (it depends only on the code)."""
        return contract_address(self.code)


@dataclass
class BlockFile:
    """A block file read in full: deploys and assignments to make, then the block's calls."""

    path: Path
    deployments: list[Deployment] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    #: (line number, call) in block order.
    calls: list[tuple[int, Transaction]] = field(default_factory=list)

    def prepare(self, chain: Chain) -> list[tuple[Deployment, bytes]]:
        """Deploy the contracts and make the assignments (outside any block)."""
        deployed = []
        for deployment in self.deployments:
            address = chain.deploy(deployment.code)
            if address != deployment.address:
                raise SuperVMError(f"{self.path}:{deployment.line}: deployed at an unexpected "
                                   "address")  # fmt: skip
            deployed.append((deployment, address))
        for assignment in self.assignments:
            chain.ownership.assign(assignment.contract, assignment.key, assignment.owner)
        return deployed

    def block(self, height: int, timestamp: int) -> Block:
        """The calls as the block at ``height``."""
        return Block(height, timestamp, tuple(tx for _, tx in self.calls))


def read_block_file(path: Path) -> BlockFile:
    """Parse a whole block file without touching any store.

    Deploys get their addresses up front (an address depends only on the code),
    so calls may name contracts the file deploys.
    """
    if not path.is_file():
        raise TransactionFileError(f"{path}: no such file")
    plan = BlockFile(path)
    codes: list[bytes] = []

    def plan_deploy(code: bytes) -> bytes:
        codes.append(code)
        return contract_address(code)

    for number, item in read_transactions(path, deploy=plan_deploy, block=True):
        if "tx" in item:
            plan.calls.append((number, item["tx"]))
        elif "assign" in item:
            plan.assignments.append(item["assign"])
        else:
            plan.deployments.append(Deployment(number, item["deployed"], codes[-1]))
    if not plan.calls:
        raise TransactionFileError(f"{path}: no calls: nothing to put in a block")
    return plan
