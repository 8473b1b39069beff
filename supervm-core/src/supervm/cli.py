"""The ``supervm`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from supervm import __version__
from supervm.errors import SuperVMError
from supervm.registry import available_backends, load_backend, open_storage
from supervm.url import parse_url

__all__ = ["COMMANDS_ENTRY_POINT_GROUP", "PluginSubparsers", "build_parser", "main"]


def _backend_rows() -> list[dict[str, str]]:
    """One row per back-end class, listing every scheme that reaches it."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    infos = available_backends()
    for scheme, info in infos.items():
        groups.setdefault((info.distribution, info.target), []).append(scheme)
    rows = []
    for (distribution, _target), schemes in groups.items():
        info = infos[schemes[0]]
        try:
            url_form = load_backend(schemes[0]).url_form or f"{schemes[0]}://..."
            status = "ok"
        except SuperVMError as exc:
            url_form = f"{schemes[0]}://..."
            status = f"unavailable: {exc}"
        rows.append(
            {
                "scheme": ", ".join(schemes),
                "distribution": distribution or "(registered in-process)",
                "version": info.version or "-",
                "url": url_form,
                "status": status,
            }
        )
    return rows


def _cmd_backends(args: argparse.Namespace) -> int:
    rows = _backend_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = {"scheme": "SCHEME", "distribution": "PACKAGE", "version": "VERSION", "url": "URL"}
    widths = {k: max(len(headers[k]), *(len(r[k]) for r in rows)) for k in headers}
    print("  ".join(headers[k].ljust(widths[k]) for k in headers).rstrip())
    for row in rows:
        line = "  ".join(row[k].ljust(widths[k]) for k in headers).rstrip()
        if row["status"] != "ok":
            line += f"  [{row['status']}]"
        print(line)
    return 0


#: Embedded back ends tried, in order, when no ``--store`` is given.
DEFAULT_STORES = [
    ("rocksdb", "rocksdb://{dir}/rocksdb"),
    ("lmdb", "lmdb://{dir}/lmdb"),
    ("leveldb", "leveldb://{dir}/leveldb"),
    ("sqlite", "sqlite:///{dir}/state.db"),
]


def default_store_url(*, create: bool = True) -> str:
    """``$SUPERVM_STORE``, else the first installed embedded store under ``$SUPERVM_HOME``.

    With ``create`` the home directory is made when missing.
    """
    explicit = os.environ.get("SUPERVM_STORE")
    if explicit:
        return explicit
    home = os.environ.get("SUPERVM_HOME", ".supervm")
    installed = available_backends()
    for scheme, template in DEFAULT_STORES:
        if scheme in installed:
            if create:
                os.makedirs(home, exist_ok=True)
            return template.format(dir=home)
    return "memory://"


def _parse_bytes(text: str, hex_mode: bool) -> bytes:
    if not hex_mode:
        return text.encode()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SystemExit(f"supervm: error: {text!r} is not hexadecimal") from None


def _show(data: bytes, hex_mode: bool) -> str:
    return data.hex() if hex_mode else data.decode("utf-8", errors="backslashreplace")


def _cmd_kv(args: argparse.Namespace) -> int:
    # Reading never creates a store: a URL that holds none is an error.
    writes = args.kv_command in ("set", "delete")
    url = args.store or default_store_url(create=writes)
    if getattr(args, "height", None) is not None:
        return _kv_at_height(args, url)
    with open_storage(url, create=writes) as store:
        if args.kv_command == "get":
            value = store.get(_parse_bytes(args.key, args.hex))
            if value is None:
                print(f"supervm: {args.key!r} not found in {url}", file=sys.stderr)
                return 1
            print(_show(value, args.hex))
        elif args.kv_command == "set":
            store.set(_parse_bytes(args.key, args.hex), _parse_bytes(args.value, args.hex))
        elif args.kv_command == "delete":
            store.delete(_parse_bytes(args.key, args.hex))
        else:
            for key, value in store.scan(_parse_bytes(args.prefix, args.hex)):
                print(f"{_show(key, args.hex)}\t{_show(value, args.hex)}")
    return 0


def _kv_at_height(args: argparse.Namespace, url: str) -> int:
    """``kv get`` / ``kv scan`` of the state after the block at ``--height``."""
    chain = _read_chain(url)
    try:
        view = chain.at(args.height)
        if args.kv_command == "get":
            value = view.get(_parse_bytes(args.key, args.hex))
            if value is None:
                print(f"supervm: {args.key!r} not found at height {args.height} in {url}",
                      file=sys.stderr)  # fmt: skip
                return 1
            print(_show(value, args.hex))
        else:
            for key, value in view.scan(_parse_bytes(args.prefix, args.hex)):
                print(f"{_show(key, args.hex)}\t{_show(value, args.hex)}")
    finally:
        _close(chain)
    return 0


def _height_arg(text: str) -> int:
    """An argparse type: a block height (an integer >= 0)."""
    try:
        height = int(text)
    except ValueError:
        height = -1
    if height < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a height (an integer >= 0)")
    return height


def _count_arg(text: str) -> int:
    """An argparse type: a count of blocks (an integer >= 0)."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of blocks (an integer >= 0)")
    return count


def _hex_arg(text: str, what: str) -> bytes:
    cleaned = text[2:] if text.startswith("0x") else text
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise SystemExit(f"supervm: error: {what} {text!r} is not hexadecimal") from None


def _chain(args: argparse.Namespace, *, create: bool = True) -> Any:
    """The chain on the store of ``--store`` (its runtime on the fast or the public path)."""
    from supervm.chain import Chain, OwnershipRegistry
    from supervm.vm import Runtime

    url = args.store or default_store_url(create=create)
    storage = open_storage(url, create=create)
    try:
        runtime = Runtime(storage, fast=not args.public_api, ownership=OwnershipRegistry(storage))
        return Chain(storage, threads=1, runtime=runtime)
    except BaseException:
        storage.close()
        raise


def _read_chain(url: str) -> Any:
    """The chain on the existing store at ``url`` (never created), for state commands."""
    from supervm.chain import Chain

    storage = open_storage(url, create=False)
    try:
        return Chain(storage, threads=1)
    except BaseException:
        storage.close()
        raise


def _close(chain: Any) -> None:
    chain.close()
    chain.storage.close()


def _print_receipt(receipt: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(receipt.to_json()))
        return
    print(f"status:      {receipt.status.value}")
    print(f"gas used:    {receipt.gas_used}")
    if receipt.error:
        print(f"error:       {receipt.error}")
    if receipt.return_data:
        data = receipt.return_data
        text = data.decode("utf-8", "replace")
        shown = f"{data.hex()}" + (f"  ({text!r})" if text.isprintable() else "")
        print(f"return data: {shown}")
    for event in receipt.events:
        print(f"event:       {event.topic.decode('utf-8', 'replace')} {event.data.hex()}")
    print(f"reads:       {len(receipt.read_set)} keys, {len(receipt.scan_set)} prefix scans")
    print(f"writes:      {len(receipt.write_set)} keys")


def _cmd_deploy(args: argparse.Namespace) -> int:
    code = Path(args.contract).read_bytes()
    salt = _hex_arg(args.salt, "salt")
    chain = _chain(args)
    try:
        address = chain.deploy(code, salt=salt)
    finally:
        _close(chain)
    if args.json:
        print(json.dumps({"address": address.hex(), "code_size": len(code)}))
    else:
        print(address.hex())
    return 0


def _call_input(args: argparse.Namespace) -> bytes:
    if args.input_text is not None:
        return str(args.input_text).encode()
    return _hex_arg(args.input, "input")


def _cmd_call(args: argparse.Namespace) -> int:
    from supervm.chain import Block, Transaction

    tx = Transaction(
        _hex_arg(args.address, "address"), args.method, _call_input(args),
        sender=_hex_arg(args.sender, "sender"), gas_limit=args.gas,
    )  # fmt: skip
    # A call needs a deployed contract: a URL that holds no store is an error.
    chain = _chain(args, create=False)
    try:
        height = chain.head().height + 1
        if args.view:
            receipt = chain.runtime.run(
                tx.contract, tx.method, tx.input, sender=tx.sender, gas_limit=tx.gas_limit,
                block_height=height, block_timestamp=args.timestamp, view=chain.storage,
            )  # fmt: skip
        else:
            result = chain.apply(Block(height, args.timestamp, (tx,)), mode="sequential")
            (receipt,) = result.receipts
    finally:
        _close(chain)
    _print_receipt(receipt, args.json)
    return 0 if receipt.ok else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from supervm.chain.txfile import run_transactions

    chain = _chain(args)
    statuses: dict[str, int] = {}
    try:
        for line_no, result in run_transactions(chain, Path(args.file)):
            if "receipt" in result:
                receipt = result["receipt"]
                statuses[receipt.status.value] = statuses.get(receipt.status.value, 0) + 1
                if args.json:
                    print(json.dumps({"line": line_no, **receipt.to_json()}))
                else:
                    error = f", {receipt.error}" if receipt.error else ""
                    print(f"line {line_no}: {receipt.status.value}, gas {receipt.gas_used}{error}")
            elif args.json:
                print(json.dumps({"line": line_no, "deployed": result["deployed"],
                                  "address": result["address"].hex()}))  # fmt: skip
            else:
                print(f"line {line_no}: deployed {result['deployed']} at {result['address'].hex()}")
    finally:
        _close(chain)
    if not args.json:
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        print(f"{sum(statuses.values())} calls: {summary or 'none'}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from supervm.vm.build import build_contract

    source = Path(args.source)
    output = Path(args.output) if args.output else source.with_suffix(".wasm")
    code = build_contract(source, output)
    print(f"{output}: {len(code)} bytes")
    return 0


# -- blocks ----------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback ``(done, total)`` drawn with rich on stderr when it is a terminal.

    A total of ``None`` leaves the total unknown (the bar pulses).
    """
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done, total: None
        return
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _timed_execute(chain: Any, block: Any, mode: str, label: str) -> tuple[Any, float]:
    """Execute ``block`` on top of the head (no commit); the result and wall seconds."""
    with _progress(label) as progress:
        start = time.perf_counter()
        result = chain.execute(block, mode=mode, progress=progress)
        seconds = time.perf_counter() - start
    return result, seconds


def _fair_timings(chain: Any, block: Any, rounds: int) -> tuple[Any, float, Any, float]:
    """Both modes on the same block: one warm-up each, then ``rounds`` alternating runs.

    Returns each mode's last result and its best time. Warm-up runs compile the
    contract and fill caches for both modes alike; alternating keeps drift of the
    machine out of the comparison.
    """
    best = {"parallel": float("inf"), "sequential": float("inf")}
    results: dict[str, Any] = {}
    # Parallel first: the executor has not seen these transactions yet, so it starts
    # with Block-STM rather than deciding from their gas that threads do not pay off.
    for mode in ("parallel", "sequential"):
        results[mode], _ = _timed_execute(chain, block, mode, f"warm-up {mode[:3]}")
    for _ in range(rounds):
        for mode in ("parallel", "sequential"):
            results[mode], seconds = _timed_execute(chain, block, mode, mode)
            best[mode] = min(best[mode], seconds)
    return results["parallel"], best["parallel"], results["sequential"], best["sequential"]


def _status_counts(receipts: Sequence[Any]) -> dict[str, int]:
    counts = Counter(r.status.value for r in receipts)
    return dict(sorted(counts.items(), key=lambda item: (item[0] != "ok", item[0])))


def _failure_reasons(receipts: Sequence[Any]) -> list[tuple[str, int]]:
    """(status: error, count) of the receipts that did not end ok, most common first."""
    counts = Counter(
        f"{r.status.value}: {r.error}" if r.error else r.status.value for r in receipts if not r.ok
    )
    return counts.most_common()


def _execution_json(result: Any, seconds: float) -> dict[str, Any]:
    stats = result.stats
    count = len(result.receipts)
    return {
        "mode": stats.mode,
        "threads": stats.threads,
        "fallback_reason": stats.fallback_reason or None,
        "seconds": round(seconds, 6),
        "tps": round(count / seconds, 1) if seconds > 0 else None,
        "executions": stats.executions,
        "re_executions": max(0, stats.executions - count),
        "validations": stats.validations,
        "aborts": stats.aborts,
        "owned_fast_path": stats.owned_fast_path,
    }


def _describe_execution(result: Any) -> str:
    """How the executor actually ran a block, in words."""
    stats = result.stats
    count = len(result.receipts)
    if stats.mode == "parallel":
        text = (
            f"Block-STM on {stats.threads} threads: {stats.executions:,} executions "
            f"({_plural(max(0, stats.executions - count), 're-execution')}), "
            f"{_plural(stats.aborts, 'abort')}"
        )
        if stats.owned_fast_path:
            text += f", {stats.owned_fast_path:,} on the owned-object fast path"
        return text
    if stats.fallback_reason:
        return f"ran sequentially: {stats.fallback_reason}"
    return "sequential"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _rate(count: int, seconds: float, unit: str = "tx") -> str:
    return f"{count / seconds:,.0f} {unit}/s" if seconds > 0 else "-"


def _cmd_demo(args: argparse.Namespace) -> int:
    from supervm.chain import Block, Chain, workload

    for name in ("txs", "accounts", "threads", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"supervm: error: --{name} must be at least 1")
    url = args.store or default_store_url()
    storage = open_storage(url)
    chain = Chain(storage, threads=args.threads)
    try:
        token = chain.deploy(workload.token_code(), salt=workload.DEMO_SALT)
        accounts = workload.accounts(args.accounts)
        setup = workload.setup(chain, token, accounts)
        height = chain.head().height
        seed = height + 1 if args.seed is None else args.seed
        txs = workload.transfers(token, accounts, args.txs, seed)
        block = Block(height + 1, int(time.time()), tuple(txs))
        parallel, parallel_s, sequential, sequential_s = _fair_timings(chain, block, args.rounds)
        agree = parallel.encode() == sequential.encode()
        if agree:
            chain.commit(parallel)
        head = chain.head()
    finally:
        chain.close()
        storage.close()

    receipts = parallel.receipts
    average_gas = sum(r.gas_used for r in receipts) / len(receipts)
    min_gas = chain.executor.min_parallel_gas
    report: dict[str, Any] = {
        "store": url,
        "contract": token.hex(),
        "accounts": args.accounts,
        "threads": args.threads,
        "seed": seed,
        "rounds": args.rounds,
        "setup": None if setup is None else {"height": setup.height, "minted": setup.minted},
        "block": block.height,
        "transactions": len(receipts),
        "statuses": _status_counts(receipts),
        "ok": sum(1 for r in receipts if r.ok),
        "reverted": sum(1 for r in receipts if r.status.value == "reverted"),
        "failures": dict(_failure_reasons(receipts)),
        "average_gas": round(average_gas, 1),
        "parallel": _execution_json(parallel, parallel_s),
        "sequential": _execution_json(sequential, sequential_s),
        "speedup": round(sequential_s / parallel_s, 3) if parallel_s > 0 else None,
        "agree": agree,
        "committed": agree,
        "height": head.height,
        "block_hash": head.block_hash.hex(),
        "state_root": head.state_root.hex(),
    }
    if args.json:
        print(json.dumps(report))
        return 0 if agree else 1

    count = len(receipts)
    print(f"supervm demo on {url}")
    minted = (
        f"; block {setup.height} minted {workload.DEMO_MINT:,} each to {setup.minted:,} of them"
        if setup
        else ""
    )
    print(f"token contract {token.hex()} with {args.accounts:,} accounts{minted}")
    print(f"block {block.height}: {count:,} transfers (seed {seed}), {args.threads} threads")
    statuses = ", ".join(f"{n:,} {status}" for status, n in report["statuses"].items())
    print(f"  receipts:    {statuses}")
    for reason, n in _failure_reasons(receipts)[:3]:
        print(f"               {n:,} x {reason}")
    print(f"  timing:      best of {args.rounds} alternating runs per mode, after a warm-up")
    print(f"  parallel:    {parallel_s:.3f} s, {_rate(count, parallel_s)}  "
          f"({_describe_execution(parallel)})")  # fmt: skip
    print(f"  sequential:  {sequential_s:.3f} s, {_rate(count, sequential_s)}")
    if agree:
        print("  agreement:   yes: identical receipts, write set and state root")
    else:
        print("  agreement:   NO: parallel and sequential results differ; block not committed")
    if parallel.stats.mode == "parallel" and parallel_s > sequential_s:
        print(
            f"  note:        parallel was slower: transfers average {average_gas:,.0f} gas, "
            f"far below the {min_gas:,} gas per transaction at which threads pay off "
            "(host calls hold the GIL); once it has seen them, the executor runs such blocks "
            "sequentially (within the process)"
        )
    if agree:
        print(f"committed block {head.height} {head.block_hash.hex()}, state root "
              f"{head.state_root.hex()}")  # fmt: skip
    return 0 if agree else 1


def _cmd_block(args: argparse.Namespace) -> int:
    from supervm.chain import Chain
    from supervm.chain.txfile import read_block_file

    if args.threads < 1:
        raise SystemExit("supervm: error: --threads must be at least 1")
    # The whole file is parsed before the store is touched.
    plan = read_block_file(Path(args.file))
    url = args.store or default_store_url()
    storage = open_storage(url)
    chain = Chain(storage, threads=args.threads)
    try:
        deployed = [(d.line, d.name, address) for d, address in plan.prepare(chain)]
        height = chain.head().height
        timestamp = int(time.time()) if args.timestamp is None else args.timestamp
        block = plan.block(height + 1, timestamp)
        result, seconds = _timed_execute(chain, block, args.mode, args.mode)
        chain.commit(result)
        head = chain.head()
    finally:
        chain.close()
        storage.close()
    assignments, calls = plan.assignments, plan.calls

    receipts = result.receipts
    lines = [number for number, _ in calls]
    if args.json:
        report = {
            "store": url,
            "deployed": [
                {"line": number, "deployed": name, "address": address.hex()}
                for number, name, address in deployed
            ],
            "assigned": len(assignments),
            "receipts": [
                {"line": number, **receipt.to_json()}
                for number, receipt in zip(lines, receipts, strict=True)
            ],
            "height": head.height,
            "block_hash": head.block_hash.hex(),
            "timestamp": timestamp,
            "transactions": len(receipts),
            "statuses": _status_counts(receipts),
            "execution": _execution_json(result, seconds),
            "state_root": head.state_root.hex(),
            "transactions_root": result.header.transactions_root.hex(),
            "receipts_root": result.receipts_root.hex(),
        }
        print(json.dumps(report))
        return 0
    for number, name, address in deployed:
        print(f"line {number}: deployed {name} at {address.hex()}")
    if assignments:
        print(f"assigned {len(assignments)} object(s) to their owners")
    for number, receipt in zip(lines, receipts, strict=True):
        error = f", {receipt.error}" if receipt.error else ""
        print(f"line {number}: {receipt.status.value}, gas {receipt.gas_used}{error}")
    statuses = ", ".join(f"{n:,} {status}" for status, n in _status_counts(receipts).items())
    print(f"block {head.height}: {_plural(len(receipts), 'transaction')}: {statuses}")
    print(f"execution: {_describe_execution(result)}; {seconds:.3f} s, "
          f"{_rate(len(receipts), seconds)}")  # fmt: skip
    print(f"block hash: {head.block_hash.hex()}")
    print(f"state root: {head.state_root.hex()}")
    return 0


# -- state: heads, proofs, pruning, reverting -------------------------------------------


def _head_json(head: Any) -> dict[str, Any]:
    return {
        "height": head.height,
        "block_hash": head.block_hash.hex(),
        "state_root": head.state_root.hex(),
    }


def _cmd_head(args: argparse.Namespace) -> int:
    url = args.store or default_store_url(create=False)
    chain = _read_chain(url)
    try:
        head = chain.head()
        horizon = chain.horizon()
        keep = chain.keep_blocks
    finally:
        _close(chain)
    if args.json:
        print(json.dumps({"store": url, **_head_json(head), "horizon": horizon,
                          "keep_blocks": keep}))  # fmt: skip
        return 0
    print(f"store:       {url}")
    print(f"height:      {head.height}")
    print(f"block hash:  {head.block_hash.hex()}")
    print(f"state root:  {head.state_root.hex()}")
    print(f"horizon:     {horizon} (heights {horizon} to {head.height} can be read)")
    print(f"keep blocks: {'all (an archive)' if keep is None else keep}")
    return 0


def _proof_kind(proof: Any) -> str:
    return "exclusion" if proof.value is None else "inclusion"


def _cmd_prove(args: argparse.Namespace) -> int:
    key = _parse_bytes(args.key, args.hex)
    if not key:
        raise SystemExit("supervm: error: KEY is empty")
    contract = None
    if args.contract is not None:
        contract = _hex_arg(args.contract, "contract address")
        if len(contract) != 20:
            raise SystemExit(
                f"supervm: error: contract address {args.contract!r} is "
                f"{_plural(len(contract), 'byte')}, not 20"
            )
    url = args.store or default_store_url(create=False)
    chain = _read_chain(url)
    try:
        if contract is None:
            proof = chain.prove(key, args.height)
        else:
            proof = chain.prove_state(contract, key, args.height)
    finally:
        _close(chain)
    encoded = proof.encode()
    if args.out:
        Path(args.out).write_bytes(encoded)
    kind = _proof_kind(proof)
    if args.json:
        print(json.dumps({**proof.to_json(), "kind": kind, "encoded": encoded.hex()}))
        return 0
    if contract is not None:
        print(f"contract:     {contract.hex()}")
        print(f"contract key: {key.hex()}")
    print(f"key:          {proof.key.hex()}")
    print(f"value:        {'absent' if proof.value is None else proof.value.hex()}")
    print(f"height:       {proof.height}")
    print(f"state root:   {proof.state_root.hex()}")
    print(f"kind:         {kind}")
    print(f"proof:        {encoded.hex()}")
    print(f"proof size:   {len(encoded)} bytes")
    if args.out:
        print(f"written to:   {args.out}")
    return 0


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SystemExit(f"supervm: error: {path}: no such file") from None


def _load_proof(args: argparse.Namespace) -> Any:
    """The StateProof of ``--proof-file``, ``--proof`` or ``--json-file``."""
    from supervm.chain import StateProof
    from supervm.tree import ProofError

    if args.json_file is not None:
        where = args.json_file
        try:
            data = json.loads(_read_file(where).decode("utf-8"))
        except UnicodeDecodeError:
            raise SystemExit(
                f"supervm: error: {where}: not JSON text (an encoded proof? use --proof-file)"
            ) from None
        except json.JSONDecodeError as exc:
            raise SystemExit(f"supervm: error: {where}: not valid JSON ({exc})") from None
        try:
            proof = StateProof.from_json(data)
        except ProofError as exc:
            raise SystemExit(f"supervm: error: {where}: malformed proof: {exc}") from None
        # What `supervm prove --json` adds must agree with the proof it describes.
        if "encoded" in data and data["encoded"] != proof.encode().hex():
            raise SystemExit(
                f"supervm: error: {where}: malformed proof: its 'encoded' field is not the "
                "encoding of its other fields"
            )
        if "kind" in data and data["kind"] != _proof_kind(proof):
            raise SystemExit(
                f"supervm: error: {where}: malformed proof: kind {data['kind']!r} does not "
                f"match its value (an {_proof_kind(proof)} proof)"
            )
        return proof
    if args.proof_file is not None:
        where = args.proof_file
        data = _read_file(where)
    else:
        where = "--proof"
        data = _hex_arg(args.proof, "proof")
    try:
        return StateProof.decode(data)
    except ProofError as exc:
        hint = " (a JSON proof? use --json-file)" if data.lstrip().startswith(b"{") else ""
        raise SystemExit(f"supervm: error: {where}: malformed proof: {exc}{hint}") from None


def _root_arg(text: str) -> bytes:
    root = _hex_arg(text, "root")
    if len(root) != 32:
        raise SystemExit(f"supervm: error: root {text!r} is {_plural(len(root), 'byte')}, not 32")
    return root


def _trusted_root(args: argparse.Namespace, proof: Any) -> tuple[bytes, str, str, str | None]:
    """The root to check ``proof`` against: (root, source, its description, store URL).

    The source is ``argument``, ``store`` or ``proof``.

    ``--root`` first; else the header at the proof's height in ``--store`` (or
    ``$SUPERVM_STORE``, or the default store when it exists); else the proof's own.
    """
    from supervm.chain import GENESIS
    from supervm.errors import StoreNotFoundError

    if args.root is not None:
        return _root_arg(args.root), "argument", "given with --root", None
    explicit = args.store or os.environ.get("SUPERVM_STORE")
    url = explicit or default_store_url(create=False)
    own = (proof.state_root, "proof", "the proof's own", None)
    if not explicit and url.startswith("memory:"):
        return own
    try:
        chain = _read_chain(url)
    except StoreNotFoundError:
        if explicit:
            raise
        return own
    try:
        if proof.height == 0:
            return GENESIS.state_root, "store", "the empty state's (height 0)", url
        header = chain.header(proof.height)
        head = chain.head().height
    finally:
        _close(chain)
    if header is None:
        raise SystemExit(
            f"supervm: error: {url} has no block at height {proof.height} (its head is "
            f"{head}): cannot check the proof against it; give --root HEX or another --store"
        )
    return header.state_root, "store", f"header of block {proof.height} in {url}", url


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.root is not None:
        _root_arg(args.root)  # a bad --root is reported before the proof is read
    proof = _load_proof(args)
    root, source, described, url = _trusted_root(args, proof)
    key = proof.key.hex()
    value = "absent" if proof.value is None else proof.value.hex()
    claim = f"{key} absent" if proof.value is None else f"{key} = {value}"
    reason = None
    if proof.state_root != root:
        reason = f"the proof names state root {proof.state_root.hex()}, not {root.hex()}"
    elif not proof.verify(root):
        reason = "the tree proof does not lead from the key and value to the root"
    valid = reason is None
    warning = (
        "checked against the proof's own state root: this shows only that the proof is "
        "self-consistent, not that the chain holds it (give --root HEX or --store URL)"
    )
    if source == "proof":
        print(f"supervm: warning: {warning}", file=sys.stderr)
    if args.json:
        report = {
            "valid": valid,
            **proof.to_json(),
            "kind": _proof_kind(proof),
            "root": root.hex(),
            "root_source": source,
            "store": url,
            "reason": reason,
        }
        del report["proof"]
        print(json.dumps(report))
        return 0 if valid else 1
    print(f"root:    {root.hex()} ({described})")
    if valid:
        print(f"valid: {claim} at height {proof.height}")
        return 0
    print(f"invalid: {reason}; the proof claims {claim} at height {proof.height}")
    return 1


def _cmd_prune(args: argparse.Namespace) -> int:
    url = args.store or default_store_url(create=False)
    chain = _read_chain(url)
    try:
        keep = args.keep_blocks
        if keep is None:
            keep = chain.keep_blocks
        else:
            chain.keep_blocks = keep
        head = chain.head().height
        report = None
        if keep is not None:
            done = 0
            with _progress("pruning") as progress:

                def step(keys: int) -> None:
                    nonlocal done
                    done += keys
                    progress(done, None)

                report = chain.prune(keep_blocks=keep, progress=step)
    finally:
        _close(chain)
    if report is None:
        if args.json:
            print(json.dumps({"store": url, "keep_blocks": None, "archive": True,
                              "pruned": False, "head": head}))  # fmt: skip
        else:
            print(f"{url} is an archive (no keep_blocks setting): nothing pruned; "
                  "give --keep-blocks N to keep the history of the last N blocks only")  # fmt: skip
        return 0
    if args.json:
        print(json.dumps({
            "store": url, "keep_blocks": keep, "archive": False, "pruned": True, "head": head,
            "horizon": report.horizon, "keys": report.keys, "bytes": report.bytes,
            "change_sets": report.change_sets, "history_entries": report.history_entries,
            "tree_nodes": report.tree_nodes,
            "complete": report.complete,
        }))  # fmt: skip
        return 0
    print(f"keep blocks: {keep} (recorded in the store)")
    print(f"horizon:     {report.horizon} (heights {report.horizon} to {head} can be read)")
    print(f"reclaimed:   {_plural(report.keys, 'key')}, {_plural(report.bytes, 'byte')}")
    print(f"history:     {report.history_entries:,} entries of {report.change_sets:,} blocks")
    print(f"tree nodes:  {report.tree_nodes:,}")
    return 0


def _cmd_revert(args: argparse.Namespace) -> int:
    url = args.store or default_store_url(create=False)
    chain = _read_chain(url)
    try:
        report = chain.revert_to(args.to)
        head = chain.head()
    finally:
        _close(chain)
    if args.json:
        print(json.dumps({
            "store": url, "from_height": report.from_height, "to_height": report.to_height,
            "keys_restored": report.keys_restored, "operations": report.operations,
            **_head_json(head),
        }))  # fmt: skip
        return 0
    if report.from_height == report.to_height:
        print(f"nothing to revert: the head is already at height {head.height}")
    else:
        print(f"reverted:      blocks {report.to_height + 1} to {report.from_height}")
        print(f"from height:   {report.from_height}")
        print(f"to height:     {report.to_height}")
        print(f"keys restored: {report.keys_restored:,}")
    print(f"head:          height {head.height}")
    print(f"block hash:    {head.block_hash.hex()}")
    print(f"state root:    {head.state_root.hex()}")
    return 0


# -- moving state between stores ----------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Items per second, as rich measures them."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


@contextlib.contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    """A ``progress(stage, done, total)`` callback drawn with rich (rate and ETA) on a
    terminal; silent otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda stage, done, total: None
        return
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=None)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _rates(count: int, size: int, seconds: float) -> dict[str, float]:
    seconds = max(seconds, 1e-9)
    return {"seconds": round(seconds, 3), "keys_per_second": round(count / seconds, 1),
            "mb_per_second": round(size / seconds / 1e6, 2)}  # fmt: skip


def _print_fields(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f"{name + ':':<{width}}{value}")


def _manifest_rows(info: dict[str, Any]) -> list[tuple[str, object]]:
    return [
        ("chain", info["chain"]), ("height", info["height"]), ("block hash", info["block_hash"]),
        ("state root", info["state_root"]), ("keys", f"{info['keys']:,}"),
        ("headers", f"{info['headers']:,}"), ("owners", f"{info['owners']:,}"),
        ("chunks", f"{info['chunks']:,} of up to {info['chunk_bytes']:,} bytes"),
        ("file size", f"{info['file_size']:,} bytes"), ("snapshot", info["snapshot"]),
    ]  # fmt: skip


def _cmd_snapshot_export(args: argparse.Namespace) -> int:
    from supervm.snapshot import export_snapshot

    url = args.store or default_store_url(create=False)
    storage = open_storage(url, create=False)
    started = time.perf_counter()
    try:
        with _stage_progress() as progress:
            manifest = export_snapshot(
                storage, args.out, height=args.height, chunk_bytes=args.chunk_size,
                verify=args.verify, progress=progress,
            )  # fmt: skip
    finally:
        storage.close()
    seconds = time.perf_counter() - started
    info = manifest.describe()
    raw = sum(chunk.raw_size for chunk in manifest.chunks)
    if args.json:
        print(json.dumps({"store": url, "file": str(args.out), **info,
                          **_rates(manifest.keys, raw, seconds)}))  # fmt: skip
        return 0
    _print_fields([("snapshot", args.out), *_manifest_rows(info),
                   ("rate", f"{_rate(manifest.keys, seconds, 'keys')}, "
                            f"{raw / max(seconds, 1e-9) / 1e6:.1f} MB/s")])  # fmt: skip
    return 0


def _cmd_snapshot_import(args: argparse.Namespace) -> int:
    from supervm.snapshot import import_snapshot

    url = args.store or default_store_url()
    expect = None if args.expect_chain is None else _hex_arg(args.expect_chain, "--expect-chain")
    storage = open_storage(url)
    try:
        with _stage_progress() as progress:
            report = import_snapshot(args.file, storage, expect_chain=expect, progress=progress)
    finally:
        storage.close()
    info = report.manifest.describe()
    raw = sum(chunk.raw_size for chunk in report.manifest.chunks)
    if args.json:
        print(json.dumps({"store": url, "file": str(args.file), **info,
                          "resumed_chunks": report.resumed_chunks, **_head_json(report.head),
                          **_rates(report.keys, raw, report.seconds)}))  # fmt: skip
        return 0
    resumed = f" (resumed after chunk {report.resumed_chunks})" if report.resumed else ""
    if report.resumed_chunks == report.chunks:
        resumed = " (it was imported already: nothing left to do)"
    _print_fields([("imported", f"{args.file} into {url}{resumed}"), *_manifest_rows(info),
                   ("head", f"height {report.head.height} (heights below are not kept)"),
                   ("rate", f"{_rate(report.keys, report.seconds, 'keys')}, "
                            f"{raw / max(report.seconds, 1e-9) / 1e6:.1f} MB/s")])  # fmt: skip
    return 0


def _cmd_snapshot_info(args: argparse.Namespace) -> int:
    from supervm.snapshot import read_manifest

    info = read_manifest(args.file).describe()
    if args.json:
        print(json.dumps({"file": str(args.file), **info}))
        return 0
    _print_fields([("snapshot file", args.file), *_manifest_rows(info)])
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from supervm.migrate import migrate

    source_name, target_name = parse_url(args.source).safe, parse_url(args.target).safe
    if args.verify_only:
        return _check_migration(args, source_name, target_name)
    source = open_storage(args.source, create=False)
    try:
        target = open_storage(args.target)
        try:
            with _stage_progress() as progress:
                report = migrate(
                    source, target, batch_keys=args.batch_keys, verify=not args.no_verify,
                    restart=args.restart, source_name=source_name,
                    progress=lambda done, total: progress("copying", done, total),
                )  # fmt: skip
        finally:
            target.close()
    finally:
        source.close()
    copied = report.keys - report.resumed_keys  # this run's share, for its rate
    if args.json:
        print(json.dumps({"from": source_name, "to": target_name, "keys": report.keys,
                          "bytes": report.bytes, "batches": report.batches,
                          "resumed": report.resumed, "resumed_keys": report.resumed_keys,
                          "verified": report.verified, "verified_keys": report.verified_keys,
                          **_head_json(report.head),
                          **_rates(copied, report.bytes, report.seconds)}))  # fmt: skip
        return 0
    resumed = f" (resumed after {report.resumed_keys:,} keys)" if report.resumed else ""
    verified = (
        f"{report.verified_keys:,} pairs equal, same head and root"
        if report.verified
        else "not verified"
    )
    _print_fields([("migrated", f"{source_name} -> {target_name}{resumed}"),
                   ("copied", f"{report.keys:,} keys, {report.bytes:,} bytes in "
                              f"{report.batches:,} batches"),
                   ("verified", verified), ("head", f"height {report.head.height}"),
                   ("state root", report.head.state_root.hex()),
                   ("rate", _rate(copied, report.seconds, "keys"))])  # fmt: skip
    return 0


def _check_migration(args: argparse.Namespace, source_name: str, target_name: str) -> int:
    """``migrate --verify-only``: compare a finished copy with its source."""
    from supervm.migrate import check_copy

    source = open_storage(args.source, create=False)
    try:
        target = open_storage(args.target, create=False)
        try:
            with _stage_progress() as progress:
                compared, head = check_copy(
                    source, target, progress=lambda done, total: progress("comparing", done, total)
                )
        finally:
            target.close()
    finally:
        source.close()
    if args.json:
        print(json.dumps({"from": source_name, "to": target_name, "verified": True,
                          "verified_keys": compared, **_head_json(head)}))  # fmt: skip
        return 0
    _print_fields([("checked", f"{target_name} against {source_name}"),
                   ("verified", f"{compared:,} pairs equal, same head and root"),
                   ("head", f"height {head.height}"),
                   ("state root", head.state_root.hex())])  # fmt: skip
    return 0


def _cmd_sync_export(args: argparse.Namespace) -> int:
    from supervm.sync import export_blocks

    url = args.store or default_store_url(create=False)
    storage = open_storage(url, create=False)
    started = time.perf_counter()
    try:
        with _stage_progress() as progress:
            manifest = export_blocks(
                storage, args.out, from_height=args.from_height, to_height=args.to_height,
                progress=progress,
            )  # fmt: skip
    finally:
        storage.close()
    seconds = time.perf_counter() - started
    info = manifest.describe()
    if args.json:
        print(
            json.dumps({"store": url, "file": str(args.out), **info, "seconds": round(seconds, 3)})
        )
        return 0
    _print_fields([("block file", args.out),
                   ("blocks", f"{manifest.from_height + 1} to {manifest.to_height} "
                              f"({manifest.blocks:,} blocks, {manifest.keys:,} keys written)"),
                   ("chain", info["chain"]), ("first parent", info["from_hash"]),
                   ("last block", info["to_hash"]),
                   ("file size", f"{manifest.file_size:,} bytes in {manifest.chunks} chunks"),
                   ("rate", _rate(manifest.blocks, seconds, "blocks"))])  # fmt: skip
    return 0


def _cmd_sync_apply(args: argparse.Namespace) -> int:
    from supervm.sync import apply_blocks

    url = args.store or default_store_url(create=False)
    storage = open_storage(url)
    try:
        with _stage_progress() as progress:
            report = apply_blocks(args.file, storage, reexecute=args.reexecute, progress=progress)
    finally:
        storage.close()
    if args.json:
        print(json.dumps({"store": url, "file": str(args.file), "applied": report.applied,
                          "skipped": report.skipped, "keys": report.keys,
                          "reexecuted": report.reexecuted, **_head_json(report.head),
                          "seconds": round(report.seconds, 3)}))  # fmt: skip
        return 0
    how = "re-executed, each matching the file" if report.reexecuted else "write sets applied"
    _print_fields([("applied", f"{report.applied:,} blocks ({how}), {report.keys:,} keys"),
                   ("skipped", f"{report.skipped:,} blocks the store already held"),
                   ("head", f"height {report.head.height}"),
                   ("block hash", report.head.block_hash.hex()),
                   ("state root", report.head.state_root.hex()),
                   ("rate", _rate(report.applied, report.seconds, "blocks"))])  # fmt: skip
    return 0


def _chunk_size_arg(text: str) -> int:
    value = _count_arg(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"a chunk size is at least 1024 bytes, not {text!r}")
    return value


def _add_transfer_commands(sub: Any) -> None:
    """``snapshot``, ``migrate`` and ``sync``."""
    snapshot = sub.add_parser(
        "snapshot", help="write a chain's state to a file, or start a store from one"
    )
    snap_sub = snapshot.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    export = snap_sub.add_parser(
        "export", help="write the state at a height to a snapshot file",
        description="Write the state at a kept height (default: the head) as a manifest and "
        "zstandard chunks sorted by key hash. Blocks may commit meanwhile.",
    )  # fmt: skip
    export.add_argument("--height", type=_height_arg, metavar="H", help="default: the head")
    export.add_argument("--out", required=True, metavar="FILE", help="the snapshot file to write")
    export.add_argument(
        "--chunk-size", type=_chunk_size_arg, default=4 << 20, metavar="BYTES",
        help="bytes per chunk before compression (default 4 MiB)",
    )  # fmt: skip
    export.add_argument(
        "--verify", action="store_true",
        help="also rebuild the state root while writing (an import always checks it)",
    )  # fmt: skip
    _add_output_options(export, "print one JSON object")
    export.set_defaults(func=_cmd_snapshot_export)
    imp = snap_sub.add_parser(
        "import", help="start an empty store from a snapshot file",
        description="Check every chunk, rebuild the state tree and compare its root with the "
        "snapshot's block before the state becomes visible. An interrupted import resumes "
        "when run again with the same file.",
    )  # fmt: skip
    imp.add_argument("file", metavar="FILE")
    imp.add_argument(
        "--expect-chain",
        metavar="HEX",
        help="refuse a snapshot of any other chain (the hash of its first block)",
    )
    _add_output_options(imp, "print one JSON object")
    imp.set_defaults(func=_cmd_snapshot_import)
    info = snap_sub.add_parser("info", help="print a snapshot file's manifest")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_cmd_snapshot_info)

    migrate = sub.add_parser(
        "migrate", help="copy a whole store to another back end",
        description="Copy every record (state, tree, history, headers, blocks) in bounded "
        "batches; resumable after a crash by running it again; verified at the end.",
    )  # fmt: skip
    migrate.add_argument("--from", dest="source", required=True, metavar="URL")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL")
    migrate.add_argument("--batch-keys", type=_count_arg, default=10_000, metavar="N",
                         help="keys per batch (default 10000)")  # fmt: skip
    migrate.add_argument(
        "--restart",
        action="store_true",
        help="empty the target and start over (after the source changed)",
    )
    migrate.add_argument("--no-verify", action="store_true", help="skip the final comparison")
    migrate.add_argument(
        "--verify-only", action="store_true",
        help="copy nothing: check that the target is a whole copy of the source",
    )  # fmt: skip
    migrate.add_argument("--json", action="store_true", help="print one JSON object")
    migrate.set_defaults(func=_cmd_migrate)

    sync = sub.add_parser("sync", help="move the blocks between two heights to another store")
    sync_sub = sync.add_subparsers(dest="sync_command", metavar="ACTION", required=True)
    sexport = sync_sub.add_parser("export", help="write blocks FROM+1..TO to a block file")
    sexport.add_argument(
        "--from", dest="from_height", type=_height_arg, required=True, metavar="H1"
    )
    sexport.add_argument("--to", dest="to_height", type=_height_arg, metavar="H2",
                         help="default: the head")  # fmt: skip
    sexport.add_argument("--out", required=True, metavar="FILE")
    _add_output_options(sexport, "print one JSON object")
    sexport.set_defaults(func=_cmd_sync_export)
    apply = sync_sub.add_parser(
        "apply", help="apply a block file to a store standing at its first parent",
        description="Check each block's parent hash, transactions and state root and commit "
        "it; a gap, a fork or a wrong root is refused with nothing applied past the last "
        "good block.",
    )  # fmt: skip
    apply.add_argument("file", metavar="FILE")
    apply.add_argument(
        "--reexecute",
        action="store_true",
        help="run the transactions and check they give the file's write sets",
    )
    _add_output_options(apply, "print one JSON object")
    apply.set_defaults(func=_cmd_sync_apply)


_STORE_HELP = "storage URL (default: $SUPERVM_STORE, else an embedded store in ./.supervm)"


def _add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """``--store URL`` and ``--json``, which every command on a store takes."""
    parser.add_argument("--store", metavar="URL", help=_STORE_HELP)
    parser.add_argument("--json", action="store_true", help=json_help)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    _add_output_options(parser, "print JSON")
    parser.add_argument(
        "--public-api",
        action="store_true",
        help="use wasmtime's public API instead of the fast path",
    )


def _kv_options(suppress: bool) -> argparse.ArgumentParser:
    """``--store`` and ``--hex``, accepted before or after the kv action."""
    parent = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parent.add_argument("--store", metavar="URL", help=_STORE_HELP, **default)
    parent.add_argument(
        "--hex", action="store_true", help="keys and values are hexadecimal", **default
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``supervm``."""
    parser = argparse.ArgumentParser(
        prog="supervm", description="WebAssembly smart contracts over pluggable key-value storage."
    )
    parser.add_argument("--version", action="version", version=f"supervm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    backends = sub.add_parser("backends", help="list installed storage back ends and their URLs")
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(func=_cmd_backends)

    kv = sub.add_parser("kv", help="read and write a store directly", parents=[_kv_options(False)])
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    actions = [_kv_options(True)]
    height_help = "read the state after the block at height H (a kept height)"
    kv_get = kv_sub.add_parser("get", help="print the value of KEY", parents=actions)
    kv_get.add_argument("key")
    kv_get.add_argument("--height", type=_height_arg, metavar="H", help=height_help)
    kv_set = kv_sub.add_parser("set", help="store VALUE under KEY", parents=actions)
    kv_set.add_argument("key")
    kv_set.add_argument("value")
    kv_del = kv_sub.add_parser("delete", help="remove KEY", parents=actions)
    kv_del.add_argument("key")
    kv_scan = kv_sub.add_parser(
        "scan", help="list keys starting with PREFIX, in order", parents=actions
    )
    kv_scan.add_argument("prefix", nargs="?", default="")
    kv_scan.add_argument("--height", type=_height_arg, metavar="H", help=height_help)
    kv.set_defaults(func=_cmd_kv)

    deploy = sub.add_parser("deploy", help="deploy a contract; prints its address")
    deploy.add_argument("contract", help="compiled contract (.wasm)")
    deploy.add_argument("--salt", default="", help="hex salt (a new address for the same code)")
    _add_store_options(deploy)
    deploy.set_defaults(func=_cmd_deploy)

    call = sub.add_parser(
        "call", help="call a contract method in a block of its own; print the receipt"
    )
    call.add_argument("address", help="contract address (hex)")
    call.add_argument("method")
    given = call.add_mutually_exclusive_group()
    given.add_argument("--input", default="", help="call input (hex)")
    given.add_argument("--input-text", help="call input (UTF-8 text)")
    call.add_argument("--sender", default="00" * 20, help="sender address (hex)")
    call.add_argument("--gas", type=int, default=10_000_000, help="gas limit")
    call.add_argument("--timestamp", type=int, default=0, help="block timestamp")
    call.add_argument(
        "--view", action="store_true",
        help="run against the latest state without committing anything (no block)",
    )  # fmt: skip
    _add_store_options(call)
    call.set_defaults(func=_cmd_call)

    run = sub.add_parser("run", help="run a file of transactions (JSON lines)")
    run.add_argument("file")
    _add_store_options(run)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser(
        "demo",
        help="run a block of token transfers in parallel and sequentially, compare, commit",
        description="Deploy the token contract, mint to the demo accounts if needed, then "
        "execute a block of random transfers with Block-STM and sequentially on the same "
        "state, check that both give identical results and commit the block. About 1%% of "
        "the transfers ask for more than any balance and revert.",
    )
    demo.add_argument("--txs", type=int, default=5000, help="transfers in the block (5000)")
    demo.add_argument("--accounts", type=int, default=1000, help="accounts (1000)")
    demo.add_argument("--threads", type=int, default=2, help="executor threads (2)")
    demo.add_argument("--seed", type=int, help="random seed (default: the block height)")
    demo.add_argument("--rounds", type=int, default=3, help="timed runs per mode, alternating (3)")
    _add_output_options(demo, "print one JSON object")
    demo.set_defaults(func=_cmd_demo)

    block = sub.add_parser(
        "block",
        help="execute a file of transactions (JSON lines) as one block and commit it",
        description="Deploy and ownership lines run first, outside the block; the calls "
        "form one block on top of the chain's head. Calls may not set height or timestamp; "
        'they may say "owned": true. See `supervm run` for the line format.',
    )
    block.add_argument("file")
    block.add_argument("--mode", choices=("parallel", "sequential"), default="parallel")
    block.add_argument("--threads", type=int, default=2, help="executor threads (2)")
    block.add_argument("--timestamp", type=int, help="block timestamp (default: now)")
    _add_output_options(block, "print one JSON object")
    block.set_defaults(func=_cmd_block)

    head = sub.add_parser("head", help="the head block, its state root and the pruning horizon")
    _add_output_options(head, "print one JSON object")
    head.set_defaults(func=_cmd_head)

    prove = sub.add_parser(
        "prove",
        help="a Merkle proof of KEY's value (or absence) at a height",
        description="Prove KEY's value, or its absence, in the state tree at --height "
        "(default: the head). With --contract, KEY is the key as that contract sees it; "
        "else a raw store key. --out writes the encoded proof for `supervm verify`.",
    )
    prove.add_argument("key")
    prove.add_argument("--contract", metavar="ADDRESS", help="contract address (hex)")
    prove.add_argument("--height", type=_height_arg, metavar="H", help="height (default: head)")
    prove.add_argument("--hex", action="store_true", help="KEY is hexadecimal")
    prove.add_argument("--out", metavar="FILE", help="write the encoded proof to FILE")
    _add_output_options(prove, "print the proof as JSON")
    prove.set_defaults(func=_cmd_prove)

    verify = sub.add_parser(
        "verify",
        help="check a state proof against a trusted root (exit 0: valid, 1: not)",
        description="Check a proof made by `supervm prove`: against --root when given (the "
        "root you trust; no store is needed), else against the header at the proof's "
        "height in --store ($SUPERVM_STORE, or the default store when it exists), else "
        "against the proof's own root, which shows only that it is self-consistent.",
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--proof-file", metavar="FILE", help="encoded proof (prove --out)")
    source.add_argument("--proof", metavar="HEX", help="encoded proof in hex")
    source.add_argument("--json-file", metavar="FILE", help="proof as JSON (prove --json)")
    verify.add_argument("--root", metavar="HEX", help="the state root you trust (32 bytes)")
    _add_output_options(verify, "print one JSON object")
    verify.set_defaults(func=_cmd_verify)

    prune = sub.add_parser(
        "prune",
        help="delete the history of blocks older than the last N",
        description="Record --keep-blocks N in the store and delete the change sets and "
        "tree nodes that only heights below head - N need. Without --keep-blocks the "
        "store's setting is used; a store with none is an archive and nothing is pruned.",
    )
    prune.add_argument(
        "--keep-blocks", type=_count_arg, metavar="N",
        help="keep the history of the last N blocks (recorded in the store)",
    )  # fmt: skip
    _add_output_options(prune, "print one JSON object")
    prune.set_defaults(func=_cmd_prune)

    revert = sub.add_parser(
        "revert", help="unwind every block above height H (state, tree, headers) at once"
    )
    revert.add_argument(
        "--to", type=_height_arg, metavar="H", required=True,
        help="the height that becomes the head (at or above the horizon)",
    )  # fmt: skip
    _add_output_options(revert, "print one JSON object")
    revert.set_defaults(func=_cmd_revert)

    _add_transfer_commands(sub)

    build = sub.add_parser("build", help="compile a C contract to wasm (needs supervm-core[build])")
    build.add_argument("source")
    build.add_argument("-o", "--output", help="output file (default: SOURCE with .wasm)")
    build.set_defaults(func=_cmd_build)
    _add_plugin_commands(sub)
    return parser


#: Entry points in this group add commands: each is a ``register(subparsers) -> None``.
COMMANDS_ENTRY_POINT_GROUP = "supervm.commands"


class PluginSubparsers:
    """What a command plugin's ``register`` is given: ``add_parser`` as on argparse's
    subparsers, refusing a name (or alias) that is already a command."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add the command ``name``; its parser should ``set_defaults(func=...)``, a
        function of the parsed arguments returning the exit status."""
        for taken in (name, *kwargs.get("aliases", ())):
            if taken in self._sub._name_parser_map:
                raise _CommandClash(taken)
        return self._sub.add_parser(name, **kwargs)


class _CommandClash(Exception):
    """A plugin asked for a command name that exists."""


def _command_entry_points() -> list[EntryPoint]:
    found: dict[tuple[str, str], EntryPoint] = {}
    for ep in entry_points(group=COMMANDS_ENTRY_POINT_GROUP):
        found.setdefault((ep.name, ep.value), ep)  # a distribution on the path twice
    return list(found.values())


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let each ``supervm.commands`` entry point add its commands after the core's.

    A plugin that fails to load or register, or asks for a name already taken, adds
    nothing and gets a one-line warning on stderr; every other command still works.
    """
    for ep in _command_entry_points():
        dist = ep.dist
        label = f"{ep.name!r}" + (f" ({dist.name})" if dist is not None else "")
        # Restored on failure, so a plugin adds all of its commands or none (argparse has
        # no public way to remove a command).
        parsers = dict(sub._name_parser_map)
        helps = list(sub._choices_actions)
        try:
            register = ep.load()
            register(PluginSubparsers(sub))
        except _CommandClash as clash:
            problem = f"wants the command name {clash.args[0]!r}, which is taken; refused"
        except Exception as exc:
            reason = " ".join(str(exc).split()) or "no message"
            problem = f"failed to load ({type(exc).__name__}: {reason}); its commands are off"
        else:
            continue
        sub._name_parser_map.clear()
        sub._name_parser_map.update(parsers)
        sub._choices_actions[:] = helps
        print(f"supervm: warning: command plugin {label} {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``supervm`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
    except (SuperVMError, OSError, ValueError) as exc:
        print(f"supervm: error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
