"""The ``supervm`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supervm import __version__
from supervm.errors import SuperVMError
from supervm.registry import available_backends, load_backend, open_storage

__all__ = ["main"]


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


def default_store_url() -> str:
    """``$SUPERVM_STORE``, else the first installed embedded store under ``$SUPERVM_HOME``."""
    explicit = os.environ.get("SUPERVM_STORE")
    if explicit:
        return explicit
    home = os.environ.get("SUPERVM_HOME", ".supervm")
    installed = available_backends()
    for scheme, template in DEFAULT_STORES:
        if scheme in installed:
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
    url = args.store or default_store_url()
    with open_storage(url) as store:
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


def _hex_arg(text: str, what: str) -> bytes:
    cleaned = text[2:] if text.startswith("0x") else text
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise SystemExit(f"supervm: error: {what} {text!r} is not hexadecimal") from None


def _runtime(args: argparse.Namespace) -> Any:
    from supervm.vm import Runtime

    url = args.store or default_store_url()
    return Runtime(open_storage(url), fast=not args.public_api)


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
    runtime = _runtime(args)
    try:
        address = runtime.deploy(code, salt=_hex_arg(args.salt, "salt"))
    finally:
        runtime.storage.close()
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
    runtime = _runtime(args)
    try:
        receipt = runtime.call(
            _hex_arg(args.address, "address"),
            args.method,
            _call_input(args),
            sender=_hex_arg(args.sender, "sender"),
            gas_limit=args.gas,
            block_height=args.height,
            block_timestamp=args.timestamp,
        )
    finally:
        runtime.storage.close()
    _print_receipt(receipt, args.json)
    return 0 if receipt.ok else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from supervm.vm.txfile import run_transactions

    runtime = _runtime(args)
    statuses: dict[str, int] = {}
    try:
        for line_no, result in run_transactions(runtime, Path(args.file)):
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
        runtime.storage.close()
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


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="storage URL (default: $SUPERVM_STORE, else an embedded store in ./.supervm)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--public-api",
        action="store_true",
        help="use wasmtime's public API instead of the fast path",
    )


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

    kv = sub.add_parser("kv", help="read and write a store directly")
    kv.add_argument(
        "--store",
        metavar="URL",
        help="storage URL (default: $SUPERVM_STORE, else an embedded store in ./.supervm)",
    )
    kv.add_argument("--hex", action="store_true", help="keys and values are hexadecimal")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    kv_get = kv_sub.add_parser("get", help="print the value of KEY")
    kv_get.add_argument("key")
    kv_set = kv_sub.add_parser("set", help="store VALUE under KEY")
    kv_set.add_argument("key")
    kv_set.add_argument("value")
    kv_del = kv_sub.add_parser("delete", help="remove KEY")
    kv_del.add_argument("key")
    kv_scan = kv_sub.add_parser("scan", help="list keys starting with PREFIX, in order")
    kv_scan.add_argument("prefix", nargs="?", default="")
    kv.set_defaults(func=_cmd_kv)

    deploy = sub.add_parser("deploy", help="deploy a contract; prints its address")
    deploy.add_argument("contract", help="compiled contract (.wasm)")
    deploy.add_argument("--salt", default="", help="hex salt (a new address for the same code)")
    _add_store_options(deploy)
    deploy.set_defaults(func=_cmd_deploy)

    call = sub.add_parser("call", help="call a contract method and print the receipt")
    call.add_argument("address", help="contract address (hex)")
    call.add_argument("method")
    given = call.add_mutually_exclusive_group()
    given.add_argument("--input", default="", help="call input (hex)")
    given.add_argument("--input-text", help="call input (UTF-8 text)")
    call.add_argument("--sender", default="00" * 20, help="sender address (hex)")
    call.add_argument("--gas", type=int, default=10_000_000, help="gas limit")
    call.add_argument("--height", type=int, default=0, help="block height")
    call.add_argument("--timestamp", type=int, default=0, help="block timestamp")
    _add_store_options(call)
    call.set_defaults(func=_cmd_call)

    run = sub.add_parser("run", help="run a file of transactions (JSON lines)")
    run.add_argument("file")
    _add_store_options(run)
    run.set_defaults(func=_cmd_run)

    build = sub.add_parser("build", help="compile a C contract to wasm (needs supervm-core[build])")
    build.add_argument("source")
    build.add_argument("-o", "--output", help="output file (default: SOURCE with .wasm)")
    build.set_defaults(func=_cmd_build)
    return parser


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
