"""py-evm's token transfers per second, with every block finalised: the peer figure.

    python bench/pyevm_peer.py [--txs 2000] [--block-size 100] [--repeats 3]
                               [--senders 16] [--recipients 1000] [--ecc coincurve|native]

A standalone script (it imports nothing of SuperVM) run in its own virtual
environment holding py-evm (``bench/pyevm.py`` makes that environment and runs
this). It prints one JSON line.

The chain is py-evm's ``MiningChain`` on its latest fork (``PragueVM``) over an
``AtomicDB`` (a dict in memory). Its genesis funds ``--senders`` accounts with
ether and holds a token contract whose runtime code is assembled here (there is
no compiler): ``transfer(address,uint256)`` (selector ``0xa9059cbb``) keeps each
holder's balance in the storage slot numbered by its address, reverts when the
caller holds less than the amount, emits ERC-20's ``Transfer(address,address,
uint256)`` log and returns ``true``. The senders' token balances are set in the
contract's genesis storage, so nothing is minted. Every other selector reverts.

Each repeat starts from a fresh genesis and:

1. *signs* ``--txs`` transfers, round-robin over the senders, each to one of
   ``--recipients`` addresses with an amount from 1 to 1,000 (legacy
   transactions with the chain id, EIP-155), and encodes them to raw bytes:
   timed on its own (``sign_per_s``), not part of the main figure;
2. *applies* them (the timed part, ``tx_per_s``) in blocks of ``--block-size``:
   for each block the raw transactions are decoded (so no sender is cached
   from signing: py-evm recovers each transaction's sender from its signature,
   an ecrecover, while it validates and applies it) and
   ``MiningChain.mine_all`` applies them, computes the block's state root,
   receipts and transaction roots, and persists the block and its state;
3. *checks*, untimed, that every transaction succeeded (its computation and
   receipt) and emitted one log, that every token balance (senders' and
   recipients') is what the transfers imply and the chain head is at the last
   block, and, once, that a transfer of more than the sender holds reverts and
   changes no balance.

``--ecc`` chooses eth-keys' secp256k1 back end for signing and recovery:
``coincurve`` (libsecp256k1, the default) or ``native`` (pure Python, what a
bare ``pip install py-evm`` gives). ``recover_per_s`` is decoding plus sender recovery alone, on
transactions not otherwise used, for the share signature checks take.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time

TRANSFER = 0xA9059CBB
TRANSFER_TOPIC = 0xDDF252AD1BE2C89B69C2B068FC378DAA952BA7F163C4A11628F55A4DF523B3EF
CHAIN_ID = 1337
TOKEN = bytes.fromhex("70" * 20)
GAS = 100_000
GAS_PRICE = 10**10
SENDER_TOKENS = 10**30

OPCODES = """
    ADD=01 SUB=03 LT=10 EQ=14 AND=16 SHR=1c CALLER=33 CALLDATALOAD=35 CALLDATASIZE=36
    POP=50 MSTORE=52 SLOAD=54 SSTORE=55 JUMPI=57 JUMPDEST=5b DUP2=81 SWAP1=90 LOG3=a3
    RETURN=f3 REVERT=fd
"""
OPS = {name: int(code, 16) for name, code in (pair.split("=") for pair in OPCODES.split())}

# The token's runtime code. Stack comments list the top last.
TOKEN_ASM = f"""
    PUSH 0x44 CALLDATASIZE LT PUSH :revert JUMPI     ; calldata shorter than a transfer's
    PUSH 0 CALLDATALOAD PUSH 0xe0 SHR                ; [selector]
    PUSH {TRANSFER:#x} EQ PUSH :transfer JUMPI
:revert
    PUSH 0 PUSH 0 REVERT
:transfer
    PUSH 0x24 CALLDATALOAD                           ; [amount]
    CALLER SLOAD                                     ; [amount, balance]
    DUP2 DUP2 LT PUSH :revert JUMPI                  ; balance < amount: revert
    DUP2 SWAP1 SUB CALLER SSTORE                     ; [amount]; caller's slot -= amount
    PUSH 4 CALLDATALOAD PUSH {(1 << 160) - 1:#x} AND ; [amount, to]
    DUP2 DUP2 SLOAD ADD DUP2 SSTORE                  ; [amount, to]; to's slot += amount
    DUP2 PUSH 0 MSTORE                               ; memory[0:32] = amount
    CALLER PUSH {TRANSFER_TOPIC:#x} PUSH 0x20 PUSH 0
    LOG3                                             ; Transfer(caller, to, amount); [amount]
    POP PUSH 1 PUSH 0 MSTORE PUSH 0x20 PUSH 0 RETURN ; returns true
"""


def assemble(source: str) -> bytes:
    """Bytecode of ``source``: opcode names, ``PUSH`` and a number or a ``:label``,
    ``:label`` alone (a ``JUMPDEST`` there); ``;`` starts a comment. A label is
    pushed as two bytes, a number in as few as hold it."""
    words = " ".join(line.split(";")[0] for line in source.splitlines()).split()
    labels: dict[str, int] = {}
    for final in (False, True):
        code = bytearray()
        items = iter(words)
        for word in items:
            if word == "PUSH":
                operand = next(items)
                if operand.startswith(":"):
                    data = labels.get(operand, 0).to_bytes(2, "big") if final else b"\0\0"
                else:
                    value = int(operand, 0)
                    data = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
                code.append(0x5F + len(data))  # PUSH1..PUSH32
                code += data
            elif word.startswith(":"):
                labels[word] = len(code)
                code.append(OPS["JUMPDEST"])
            else:
                code.append(OPS[word])
    return bytes(code)


def transfer_data(to: bytes, amount: int) -> bytes:
    return TRANSFER.to_bytes(4, "big") + to.rjust(32, b"\0") + amount.to_bytes(32, "big")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--ecc", choices=("coincurve", "native"), default="coincurve")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backend = {"native": "NativeECCBackend", "coincurve": "CoinCurveECCBackend"}[args.ecc]
    os.environ["ECC_BACKEND_CLASS"] = "eth_keys.backends." + backend

    from importlib.metadata import version

    from eth import constants
    from eth.chains.base import MiningChain
    from eth.db.atomic import AtomicDB
    from eth.vm.forks import PragueVM
    from eth_keys import keys
    from eth_utils import keccak

    if keys.PrivateKey(b"\1" * 32).backend.__class__.__name__ != backend:
        sys.exit(f"eth-keys does not use {backend}")

    chain_class = MiningChain.configure(
        __name__="PeerChain",
        vm_configuration=((constants.GENESIS_BLOCK_NUMBER, PragueVM),),
        chain_id=CHAIN_ID,
    )
    private = [keys.PrivateKey(keccak(b"sender %d" % i)) for i in range(args.senders)]
    senders = [key.public_key.to_canonical_address() for key in private]
    recipients = [keccak(b"recipient %d" % i)[12:] for i in range(args.recipients)]
    code = assemble(TOKEN_ASM)
    genesis_state = {
        **{a: {"balance": 10**24, "nonce": 0, "code": b"", "storage": {}} for a in senders},
        TOKEN: {
            "balance": 0,
            "nonce": 0,
            "code": code,
            "storage": {int.from_bytes(a, "big"): SENDER_TOKENS for a in senders},
        },
    }
    genesis_params = {
        "coinbase": constants.ZERO_ADDRESS,
        "difficulty": 0,
        "gas_limit": 60_000_000,
        "timestamp": 1_700_000_000,
        "base_fee_per_gas": 10**9,
        "extra_data": b"",
        "nonce": b"\0" * 8,
    }

    def new_chain():
        return chain_class.from_genesis(AtomicDB(), genesis_params, genesis_state)

    def balance(chain, account: bytes) -> int:
        return chain.get_vm().state.get_storage(TOKEN, int.from_bytes(account, "big"))

    def sign(chain, plan, nonces):
        vm = chain.get_vm()
        raw = []
        for sender, to, amount in plan:
            unsigned = vm.create_unsigned_transaction(
                nonce=nonces[sender],
                gas_price=GAS_PRICE,
                gas=GAS,
                to=TOKEN,
                value=0,
                data=transfer_data(to, amount),
            )
            nonces[sender] += 1
            raw.append(unsigned.as_signed_transaction(private[sender], chain_id=CHAIN_ID).encode())
        return raw

    rng = random.Random(args.seed)
    runs, sign_runs, recover_runs = [], [], []
    blocks = -(-args.txs // args.block_size)
    for repeat in range(args.repeats):
        chain = new_chain()
        plan = [
            (i % args.senders, rng.choice(recipients), rng.randint(1, 1000))
            for i in range(args.txs)
        ]
        gc.collect()
        start = time.perf_counter()
        raw = sign(chain, plan, [0] * args.senders)
        sign_runs.append(args.txs / (time.perf_counter() - start))

        builder = chain.get_vm().get_transaction_builder()
        results = []
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        for first in range(0, args.txs, args.block_size):
            txs = [builder.decode(r) for r in raw[first : first + args.block_size]]
            _, receipts, computations = chain.mine_all(txs)
            results.append((receipts, computations))
        elapsed = time.perf_counter() - start
        gc.enable()
        runs.append(args.txs / elapsed)

        expected: dict[bytes, int] = {a: SENDER_TOKENS for a in senders}
        for sender, to, amount in plan:
            expected[senders[sender]] -= amount
            expected[to] = expected.get(to, 0) + amount
        done = 0
        for receipts, computations in results:
            for receipt, computation in zip(receipts, computations, strict=True):
                if not computation.is_success or receipt.state_root != b"\x01":
                    sys.exit(f"transfer {done} failed: {computation.error!r}")
                if len(receipt.logs) != 1 or receipt.logs[0].address != TOKEN:
                    sys.exit(f"transfer {done} logged {receipt.logs!r}")
                done += 1
        if done != args.txs or chain.get_canonical_head().block_number != blocks:
            sys.exit(f"{done} transfers applied, head at {chain.get_canonical_head()}")
        wrong = [a.hex() for a, v in expected.items() if balance(chain, a) != v]
        if wrong:
            sys.exit(f"{len(wrong)} token balances wrong, e.g. {wrong[0]}")
        if repeat == 0:
            nonces = [
                args.txs // args.senders + (i < args.txs % args.senders)
                for i in range(args.senders)
            ]
            to = recipients[0]
            before = balance(chain, senders[0]), balance(chain, to)
            (too_much,) = sign(chain, [(0, to, before[0] + 1)], nonces)
            _, receipts, computations = chain.mine_all([builder.decode(too_much)])
            if not computations[0].is_error or receipts[0].state_root != b"":
                sys.exit("a transfer of more than the balance did not revert")
            if (balance(chain, senders[0]), balance(chain, to)) != before:
                sys.exit("a reverted transfer changed balances")

        fresh = sign(new_chain(), plan[: min(args.txs, 500)], [0] * args.senders)
        gc.collect()
        start = time.perf_counter()
        for r in fresh:
            builder.decode(r).sender  # noqa: B018
        recover_runs.append(len(fresh) / (time.perf_counter() - start))

    print(
        json.dumps(
            {
                "tx_per_s": statistics.median(runs),
                "runs": runs,
                "min": min(runs),
                "max": max(runs),
                "txs": args.txs,
                "block_size": args.block_size,
                "blocks": blocks,
                "senders": args.senders,
                "recipients": args.recipients,
                "ecc": args.ecc,
                "sign_per_s": statistics.median(sign_runs),
                "sign_runs": sign_runs,
                "recover_per_s": statistics.median(recover_runs),
                "recover_runs": recover_runs,
                "fork": PragueVM.fork,
                "py_evm": version("py-evm"),
                "eth_keys": version("eth-keys"),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
