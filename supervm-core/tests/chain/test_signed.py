"""Signed transactions in the chain: encoding, nonces in state, receipts and the
transaction index, and executing a block on an uncommitted parent."""

from __future__ import annotations

import hashlib
import struct

import pytest

from supervm.chain import Block, Chain, ChainError, Transaction
from supervm.chain.accounts import address_of, nonce_key, read_nonce
from supervm.chain.block import decode_receipts, encode_receipts
from supervm.chain.header import BlockFormatError
from supervm.memory import MemoryStorage
from supervm.vm import Status

from .conftest import contents, deploy_all, u64, wasm

# The chain commits to signatures but does not check them (the node does): any 64 bytes.
SIG = bytes(range(64))


def key(i: int) -> bytes:
    return hashlib.sha256(b"key %d" % i).digest()


def signed(contract: bytes, method: str, data: bytes, pk: bytes, nonce: int, **kw: object):
    return Transaction(
        contract, method, data, nonce=nonce, chain_id=7, public_key=pk, signature=SIG, **kw
    )


def test_a_signed_transaction_round_trips_and_its_sender_is_its_keys_address() -> None:
    tx = signed(b"c" * 20, "transfer", b"\1" * 28, key(1), 5, gas_limit=1234, owned=True)
    assert tx.signed and tx.sender == address_of(key(1))
    again = Transaction.decode(tx.encode())
    assert again == tx and again.sender == tx.sender and again.hash == tx.hash
    assert tx.encode()[0] == 2
    # The signature covers everything but itself.
    payload = tx.signing_payload()
    assert payload.startswith(b"supervm/tx-sign/v2") and SIG not in payload
    for changed in (
        signed(b"c" * 20, "transfer", b"\1" * 28, key(1), 6, gas_limit=1234, owned=True),
        signed(b"c" * 20, "transfer", b"\2" * 28, key(1), 5, gas_limit=1234, owned=True),
        signed(b"c" * 20, "transfer", b"\1" * 28, key(2), 5, gas_limit=1234, owned=True),
        Transaction(b"c" * 20, "transfer", b"\1" * 28, gas_limit=1234, owned=True, nonce=5,
                    chain_id=8, public_key=key(1), signature=SIG),
    ):  # fmt: skip
        assert changed.signing_payload() != payload
    assert tx.with_signature(bytes(64)).signing_payload() == payload
    assert tx.with_signature(bytes(64)).hash != tx.hash
    unsigned = Transaction(b"c" * 20, "m", b"")
    assert not unsigned.signed and Transaction.decode(unsigned.encode()) == unsigned
    with pytest.raises(ValueError, match="nothing to sign"):
        unsigned.signing_payload()


def test_bad_signed_transactions_are_refused() -> None:
    with pytest.raises(ValueError, match="public key"):
        Transaction(b"c", "m", nonce=0, public_key=b"short")
    with pytest.raises(ValueError, match="signature"):
        Transaction(b"c", "m", nonce=0, public_key=key(1), signature=b"x")
    with pytest.raises(ValueError, match="nonce"):
        Transaction(b"c", "m", nonce=-1, public_key=key(1))
    with pytest.raises(ValueError, match="not the public key's address"):
        Transaction(b"c", "m", sender=b"\5" * 20, nonce=0, public_key=key(1))
    data = signed(b"c" * 20, "m", b"", key(1), 0).encode()
    for broken in (data[:-1], data + b"\0", b"\3" + data[1:]):
        with pytest.raises(BlockFormatError):
            Transaction.decode(broken)


def test_nonces_are_checked_and_advance_even_when_the_call_fails() -> None:
    store = MemoryStorage()
    chain = Chain(store)
    token = deploy_all(chain).token
    pk = key(1)
    me = address_of(pk)
    txs = (
        signed(token, "mint", me + u64(100), pk, 0),
        signed(token, "transfer", b"\x09" * 20 + u64(30), pk, 1),
        signed(token, "transfer", b"\x09" * 20 + u64(10**6), pk, 2),  # reverts: too much
        signed(token, "transfer", b"\x09" * 20 + u64(1), pk, 2),  # replay of nonce 2
        signed(token, "transfer", b"\x09" * 20 + u64(1), pk, 9),  # a gap
        signed(token, "transfer", b"\x09" * 20 + u64(5), pk, 3),
    )
    head = chain.head().height
    for mode in ("sequential", "parallel"):
        result = chain.execute(Block(head + 1, 0, txs), mode=mode)
        statuses = [r.status for r in result.receipts]
        assert statuses == [Status.OK, Status.OK, Status.REVERTED, Status.REJECTED,
                            Status.REJECTED, Status.OK]  # fmt: skip
        assert "nonce 2 is not the sender's next nonce, 3" in (result.receipts[3].error or "")
        assert dict(result.write_set)[nonce_key(me)] == struct.pack(">Q", 4)
    chain.commit(result)
    assert read_nonce(chain.latest(), me) == 4
    # The nonce is state: under the root, with a proof.
    proof = chain.prove(nonce_key(me))
    assert proof.value == struct.pack(">Q", 4) and proof.verify(chain.head().state_root)


def test_receipts_and_the_transaction_index_are_kept_and_reverted() -> None:
    store = MemoryStorage()
    chain = Chain(store)
    token = deploy_all(chain).token
    pk = key(2)
    me = address_of(pk)
    before = contents(store)
    height = chain.head().height
    txs = (signed(token, "mint", me + u64(7), pk, 0), signed(token, "nope", b"", pk, 1))
    result = chain.apply(Block(height + 1, 0, txs))
    receipts = chain.receipts(height + 1)
    assert receipts is not None and [r.status for r in receipts] == [Status.OK, Status.REJECTED]
    assert receipts[1].error == result.receipts[1].error
    assert receipts == tuple(
        r._replace(read_set=(), scan_set=(), write_set=()) for r in result.receipts
    )
    assert chain.find_transaction(txs[1].hash) == (height + 1, 1)
    assert chain.find_transaction(b"\0" * 32) is None
    assert chain.receipts(height + 5) is None
    chain.revert_to(height)
    assert chain.find_transaction(txs[0].hash) is None and chain.receipts(height + 1) is None
    assert contents(store) == before
    assert decode_receipts(encode_receipts(result.receipts)) == receipts
    with pytest.raises(BlockFormatError):
        decode_receipts(encode_receipts(result.receipts)[:-1])


def test_a_block_executed_on_an_uncommitted_parent_equals_one_executed_after_it() -> None:
    blocks = []
    pk = key(3)
    me = address_of(pk)
    for store_parent in (False, True):
        chain = Chain(MemoryStorage())
        token = chain.deploy(wasm("token.wasm"))
        h = chain.head().height
        first = chain.execute(Block(h + 1, 1, (signed(token, "mint", me + u64(50), pk, 0),)))
        second = Block(h + 2, 2, (signed(token, "transfer", b"\7" * 20 + u64(20),
                                         pk, 1),))  # fmt: skip
        if store_parent:
            chain.commit(first)
            result = chain.execute(second)
        else:
            result = chain.execute(second, parent=first)
            assert chain.head().height == h, "execute must not write"
            chain.commit(first)
            # The parent, committed meanwhile, is fine too.
            assert chain.execute(second, parent=first) == result
        chain.commit(result)
        blocks.append((result, chain.head(), contents(chain.storage)))
    assert blocks[0] == blocks[1]
    chain = Chain(MemoryStorage())
    token = chain.deploy(wasm("token.wasm"))
    first = chain.execute(Block(2, 1, (signed(token, "mint", me + u64(5), pk, 0),)))
    chain.apply(Block(2, 1, ()))
    with pytest.raises(ChainError, match="does not extend head"):
        chain.execute(Block(3, 1, ()), parent=first)
