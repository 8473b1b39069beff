"""Signing and checking signed transactions: round trips, tampering, parallel checks."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from supervm.chain import Transaction
from supervm.chain.accounts import address_of
from supervm.chain.header import BlockFormatError
from supervm_node.keys import KeyPair
from supervm_node.signing import SignatureChecker, sign_transaction, verify_transaction

CHAIN = 7
TOKEN = bytes(range(20))


def key(i: int) -> KeyPair:
    return KeyPair.from_seed(bytes([i]) * 32)


def transfer(k: KeyPair, nonce: int, amount: int = 5, **kw: Any) -> Transaction:
    data = b"\x42" * 20 + struct.pack("<Q", amount)
    return sign_transaction(
        k, chain_id=CHAIN, nonce=nonce, contract=TOKEN, method="transfer", input=data, **kw
    )


def test_sign_and_verify_round_trip_through_the_encoding() -> None:
    k = key(1)
    tx = transfer(k, 3, gas_limit=12_345, owned=True)
    assert tx.signed and tx.sender == k.address == address_of(k.public_key)
    assert tx.nonce == 3 and tx.chain_id == CHAIN and tx.gas_limit == 12_345 and tx.owned
    assert verify_transaction(tx)
    again = Transaction.decode(tx.encode())
    assert again == tx and again.hash == tx.hash and again.sender == k.address
    assert verify_transaction(again)
    # Another key's signature on the same payload does not verify under this key.
    forged = tx.with_signature(key(2).sign(tx.signing_payload()))
    assert not verify_transaction(forged)
    # The signature of another transaction of the same key does not verify either.
    other = transfer(k, 4)
    assert not verify_transaction(tx.with_signature(other.signature))
    assert not verify_transaction(tx.with_signature(bytes(64)))


def test_an_unsigned_transaction_does_not_verify() -> None:
    unsigned = Transaction(TOKEN, "transfer", b"\1" * 28, sender=key(1).address)
    assert not unsigned.signed and not verify_transaction(unsigned)
    # Signed fields but no signature yet.
    k = key(1)
    bare = Transaction(TOKEN, "transfer", b"", nonce=0, chain_id=CHAIN, public_key=k.public_key)
    assert bare.signed and not verify_transaction(bare)
    assert verify_transaction(bare.with_signature(k.sign(bare.signing_payload())))


def _fields(tx: Transaction) -> list[tuple[str, int, int]]:
    """(name, start, end) of every field of a signed transaction's encoding."""
    method = tx.method.encode()
    layout = [
        ("version", 1), ("chain_id", 8), ("nonce", 8), ("public_key", 32),
        ("contract_len", 4), ("contract", len(tx.contract)),
        ("method_len", 4), ("method", len(method)),
        ("input_len", 4), ("input", len(tx.input)),
        ("gas_limit", 8), ("owned", 1), ("signature", 64),
    ]  # fmt: skip
    fields, at = [], 0
    for name, size in layout:
        fields.append((name, at, at + size))
        at += size
    assert at == len(tx.encode())
    return fields


def test_a_flipped_bit_anywhere_fails_to_decode_or_to_verify() -> None:
    tx = transfer(key(3), 9, gas_limit=77_777, owned=False)
    data = tx.encode()
    fields = _fields(tx)
    decoded_but_refused: dict[str, int] = {}
    undecodable: dict[str, int] = {}
    for bit in range(len(data) * 8):
        at = bit // 8
        flipped = bytearray(data)
        flipped[at] ^= 1 << (bit % 8)
        name = next(n for n, start, end in fields if start <= at < end)
        try:
            changed = Transaction.decode(bytes(flipped))
        except (BlockFormatError, ValueError):
            undecodable[name] = undecodable.get(name, 0) + 1
            continue
        assert changed != tx and changed.hash != tx.hash, (name, bit)
        assert not verify_transaction(changed), f"a flip in {name} (bit {bit}) still verifies"
        decoded_but_refused[name] = decoded_but_refused.get(name, 0) + 1
    # Every field the signature covers was changed by some flip that still decoded:
    # the check really ran on each of them.
    for name in ("chain_id", "nonce", "public_key", "contract", "method", "input",
                 "gas_limit", "owned", "signature"):  # fmt: skip
        assert decoded_but_refused.get(name), name
    # Flips of the framing (lengths) break the encoding itself.
    assert undecodable.get("contract_len") and undecodable.get("input_len")


def test_a_decoded_flip_of_each_field_is_the_field_changed() -> None:
    """The flips above really land in the field named: decode and compare."""
    tx = transfer(key(4), 1, gas_limit=50_000)
    data = tx.encode()
    expect = {
        "chain_id": lambda t: t.chain_id != tx.chain_id,
        "nonce": lambda t: t.nonce != tx.nonce,
        "public_key": lambda t: t.public_key != tx.public_key and t.sender != tx.sender,
        "contract": lambda t: t.contract != tx.contract,
        "method": lambda t: t.method != tx.method,
        "input": lambda t: t.input != tx.input,
        "gas_limit": lambda t: t.gas_limit != tx.gas_limit,
        "owned": lambda t: t.owned != tx.owned,
        "signature": lambda t: t.signature != tx.signature,
    }
    for name, _start, end in _fields(tx):
        if name not in expect:
            continue
        flipped = bytearray(data)
        # The lowest bit of the field's last byte: a small change that keeps the
        # encoding well-formed (and the method ASCII, the owned flag 0/1).
        flipped[end - 1] ^= 1
        changed = Transaction.decode(bytes(flipped))
        assert expect[name](changed), name
        assert not verify_transaction(changed), name


def _mix(count: int) -> list[Transaction]:
    txs: list[Transaction] = []
    for i in range(count):
        k = key(1 + i % 5)
        tx = transfer(k, i, amount=i)
        kind = i % 7
        if kind == 1:  # another transaction's signature
            tx = tx.with_signature(transfer(k, i + 1000).signature)
        elif kind == 2:  # a bit flipped in the signature
            sig = bytearray(tx.signature)
            sig[i % 64] ^= 1 << (i % 8)
            tx = tx.with_signature(bytes(sig))
        elif kind == 3:  # signed by another key than the one it names
            tx = tx.with_signature(key(9).sign(tx.signing_payload()))
        elif kind == 4:  # no signature
            tx = tx.with_signature(b"")
        elif kind == 5:  # unsigned format
            tx = Transaction(TOKEN, "transfer", tx.input, sender=k.address)
        txs.append(tx)
    return txs


@pytest.mark.parametrize(
    ("threads", "processes"), [(1, False), (2, False), (4, False), (1, True), (2, True)]
)
def test_the_checker_agrees_with_verify_transaction(threads: int, processes: bool) -> None:
    txs = _mix(301)
    expected = [verify_transaction(tx) for tx in txs]
    assert 0 < sum(expected) < len(txs)
    assert sum(expected) == sum(1 for i in range(301) if i % 7 in (0, 6))
    checker = SignatureChecker(threads, processes=processes)
    try:
        assert checker.threads == threads
        assert checker.check(txs) == expected
        # Below the parallel threshold, and empty, too.
        assert checker.check(txs[:10]) == expected[:10]
        assert checker.check([]) == []
        # Reversed order: the verdicts follow their transactions.
        assert checker.check(txs[::-1]) == expected[::-1]
    finally:
        checker.close()
    # Closed, it still checks (its workers start again).
    assert checker.check(txs) == expected
    checker.close()


def test_one_and_two_threads_give_the_same_verdicts() -> None:
    txs = _mix(257)
    one, two = SignatureChecker(1), SignatureChecker(2)
    try:
        assert one.check(txs) == two.check(txs) == [verify_transaction(tx) for tx in txs]
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True, None])
def test_a_bad_threads_argument_raises(threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        SignatureChecker(threads)  # type: ignore[arg-type]
