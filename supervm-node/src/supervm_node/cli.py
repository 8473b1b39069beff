"""The node's commands, added to the core CLI through the ``supervm.commands``
entry-point group: ``supervm keys``, ``supervm node``, ``supervm tx``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
from pathlib import Path
from typing import Any

from supervm import open_storage
from supervm.cli import PluginSubparsers, default_store_url
from supervm.client import Client, RpcError
from supervm.errors import InvalidURLError
from supervm.url import mask_password, parse_url
from supervm.vm.runtime import DEFAULT_GAS_LIMIT, DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input
from supervm_node.keys import KeyPair, load_key, save_key
from supervm_node.logs import configure_logging
from supervm_node.mempool import MempoolLimits
from supervm_node.signing import sign_transaction

log = logging.getLogger("supervm_node.cli")

#: The edge profile's GIL switch interval (seconds; CPython's default is 0.005).
_EDGE_SWITCH_INTERVAL = 0.001
#: Where ``supervm tx`` finds the node unless told (``--rpc`` or ``$SUPERVM_RPC``).
DEFAULT_RPC = "http://127.0.0.1:8645"

__all__ = ["register"]


def _print_key(key: KeyPair, as_json: bool, path: str) -> None:
    """The address and public key; never the seed."""
    if as_json:
        record = {"address": key.address.hex(), "public_key": key.public_key.hex(), "file": path}
        print(json.dumps(record))
    else:
        print(f"address     {key.address.hex()}")
        print(f"public key  {key.public_key.hex()}")
        print(f"file        {path}")


def _cmd_keys_new(args: argparse.Namespace) -> int:
    key = KeyPair.generate()
    save_key(args.out, key)
    _print_key(key, args.json, args.out)
    return 0


def _cmd_keys_show(args: argparse.Namespace) -> int:
    _print_key(load_key(args.file), args.json, args.file)
    return 0


def _listen_arg(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT to listen on."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8645)")
    return host.strip("[]"), int(port)


def _size(text: str) -> int:
    """An argparse type: a size in bytes (``1000``, ``64MB``, ``256MiB``; 0 allowed)."""
    try:
        return parse_url(f"memory://?size={text}").size_option("size", 0)
    except InvalidURLError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (bytes, or a number with KB, MB, GB, KiB, MiB, GiB)"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _cmd_node(args: argparse.Namespace) -> int:
    # Imported here: the web stack loads only for the command that serves.
    from supervm_node.node import Node
    from supervm_node.rpc import create_app
    from supervm_node.serve import serve

    configure_logging(args.log_format, args.log_level)
    url = args.store or default_store_url()
    host, port = args.rpc
    problem = _profile_problem(args)
    if problem is not None:
        print(f"supervm: error: {problem}", file=sys.stderr)
        return 2
    if args.profile == "light":
        return _run_light(args, url, host, port)
    storage = open_storage(url)
    cached: Any = None
    if args.profile == "edge":
        from supervm.cache import CachedStorage

        # Reads must not wait long for the GIL while a block lands: hand it over every
        # millisecond instead of every five.
        sys.setswitchinterval(_EDGE_SWITCH_INTERVAL)
        storage = cached = CachedStorage(storage, args.cache)
    try:
        node = Node(
            storage,
            chain_id=args.chain_id,
            block_time_ms=args.block_time,
            max_block_txs=args.max_block_txs,
            threads=args.threads,
            mempool=MempoolLimits(max_count=args.mempool_count, max_bytes=args.mempool_bytes),
            keep_blocks=args.keep_blocks,
            backend=url.split(":", 1)[0],
            prune=args.profile == "pruned",
            follow=args.follow,
            sync=args.sync or ("apply" if args.profile == "edge" else "reexecute"),
            fast_sync=args.fast_sync,
            data_dir=args.data_dir or _data_dir(url),
        )
        if cached is not None:
            from supervm_node.metrics import CacheCollector

            node.registry.register(CacheCollector(cached))
        app = create_app(node, max_body=args.max_body, max_batch=args.max_batch)
        head = node.chain.head()
        log.info(
            "node starting",
            extra={"store": mask_password(url), "rpc": f"http://{host}:{port}",
                   "chain_id": args.chain_id, "height": head.height,
                   "follow": args.follow, "profile": args.profile},
        )  # fmt: skip
        # uvicorn stops on SIGINT and SIGTERM; the app's shutdown stops the node, which
        # commits the blocks in its pipeline first.
        if not serve(app, host, port):
            print(f"supervm: error: could not serve on {host}:{port}", file=sys.stderr)
            return 1
        log.info("node stopped", extra={"height": node.chain.head().height})
    finally:
        storage.close()
    return 0


def _profile_problem(args: argparse.Namespace) -> str | None:
    """Why the profile cannot run with these arguments (``None``: it can)."""
    if args.follow is None and (args.sync is not None or args.fast_sync):
        return "--sync and --fast-sync are for a follower: give --follow URL"
    if args.profile == "pruned" and args.keep_blocks is None:
        return "the pruned profile needs --keep-blocks N"
    if args.profile == "edge":
        if args.follow is None:
            return "the edge profile is a follower: give --follow URL"
        try:
            import supervm.cache  # noqa: F401
        except ImportError:
            return "the edge profile needs supervm.cache, which this installation lacks"
    if args.profile == "light" and args.follow is None:
        return "the light profile follows a full node: give --follow URL"
    return None


def _run_light(args: argparse.Namespace, url: str, host: str, port: int) -> int:
    """``supervm node --profile light``: headers only, values verified by proof."""
    from supervm_node.lightnode import LightNode
    from supervm_node.rpc import create_light_app
    from supervm_node.serve import serve

    node = LightNode(open_storage(url), args.follow)
    try:
        app = create_light_app(node, max_body=args.max_body, max_batch=args.max_batch)
        log.info(
            "light node starting",
            extra={"store": mask_password(url), "rpc": f"http://{host}:{port}",
                   "follow": args.follow, "height": node.light.height},
        )  # fmt: skip
        if not serve(app, host, port):
            print(f"supervm: error: could not serve on {host}:{port}", file=sys.stderr)
            return 1
        log.info("light node stopped", extra={"height": node.light.height})
    finally:
        node.close()
    return 0


def _data_dir(url: str) -> Path | None:
    """Beside a store kept in a file or directory: ``<path>.node`` (snapshots served or
    downloaded); ``None`` (a temporary directory) for other stores."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest.startswith("/") or scheme in ("memory", "postgres", "mariadb"):
        return None
    path = Path(rest.split("?", 1)[0])
    return path.with_name(path.name + ".node")


def _cmd_node_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status: dict[str, Any] = client.call("svm_syncStatus")
    if args.json:
        print(json.dumps(status))
        return 0
    lag = status.get("lag")
    rows = [
        ("role", status.get("role")),
        ("state", status.get("state")),
        ("height", status.get("height")),
        ("peer", status.get("peer") or "-"),
        ("peer height", status.get("peer_height")),
        ("lag", "-" if lag is None else f"{lag} blocks"),
        ("rate", f"{status.get('rate') or 0:.1f} blocks/s"),
        ("mode", status.get("mode")),
        ("error", status.get("error")),
    ]
    for name, value in rows:
        if value is not None:
            print(f"{name:<12}{value}")
    return 0


def _client(args: argparse.Namespace) -> Client:
    return Client(args.rpc or os.environ.get("SUPERVM_RPC") or DEFAULT_RPC)


def _hex(text: str, what: str) -> bytes:
    cleaned = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not hexadecimal") from None


def _call_input(args: argparse.Namespace) -> bytes:
    """The call's input: ``--input`` hex, or the typed ARGS concatenated."""
    if args.input is not None:
        if args.args:
            raise ValueError("give --input or ARGS, not both")
        return _hex(args.input, "--input")
    parts = []
    for arg in args.args:
        kind, sep, value = arg.partition(":")
        if not sep:
            raise ValueError(
                f"argument {arg!r} has no type: write addr:HEX, u64:N, hex:HEX or str:TEXT"
            )
        if kind == "addr":
            address = _hex(value, "address")
            if len(address) != 20:
                raise ValueError(f"address {value!r} is {len(address)} bytes, not 20")
            parts.append(address)
        elif kind == "u64":
            if not value.isdigit() or int(value) >= 1 << 64:
                raise ValueError(f"u64 {value!r} is not an integer in [0, 2**64)")
            parts.append(struct.pack("<Q", int(value)))
        elif kind == "hex":
            parts.append(_hex(value, "hex argument"))
        elif kind == "str":
            parts.append(value.encode())
        else:
            raise ValueError(f"argument type {kind!r} is unknown: use addr, u64, hex or str")
    return b"".join(parts)


def _send(args: argparse.Namespace, contract: bytes, method: str, data: bytes) -> int:
    key = load_key(args.key)
    with _client(args) as client:
        chain_id = client.chain_id()
        nonce = args.nonce if args.nonce is not None else int(client.nonce(key.address)["next"])
        tx = sign_transaction(
            key, chain_id=chain_id, nonce=nonce, contract=contract, method=method,
            input=data, gas_limit=args.gas,
        )  # fmt: skip
        try:
            tx_hash = client.send_transaction(tx)
        except RpcError as exc:
            print(f"supervm: refused: {exc.message} ({exc.reason or exc.code})", file=sys.stderr)
            return 1
        record: dict[str, Any] = {
            "hash": tx_hash.hex(),
            "sender": key.address.hex(),
            "nonce": nonce,
        }
        if args.wait:
            found = client.wait_for_receipt(tx_hash, timeout=args.timeout)
            record.update(height=found["height"], receipt=found["receipt"])
    _print_tx(record, args.json)
    receipt = record.get("receipt")
    return 0 if receipt is None or receipt["status"] == "ok" else 1


def _print_tx(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record))
        return
    for name in ("hash", "status", "sender", "nonce", "height"):
        if record.get(name) is not None:
            print(f"{name:<10}{record[name]}")
    receipt = record.get("receipt")
    if receipt:
        print(f"{'receipt':<10}{receipt['status']}  gas {receipt['gas_used']}")
        if receipt.get("return_data"):
            print(f"{'returned':<10}{receipt['return_data']}")
        if receipt.get("error"):
            print(f"{'error':<10}{receipt['error']}")


def _cmd_tx_send(args: argparse.Namespace) -> int:
    return _send(args, _hex(args.contract, "contract address"), args.method, _call_input(args))


def _cmd_tx_deploy(args: argparse.Namespace) -> int:
    code = Path(args.wasm).read_bytes()
    return _send(args, DEPLOY_ADDRESS, DEPLOY_METHOD, deploy_input(code, _hex(args.salt, "salt")))


def _cmd_tx_status(args: argparse.Namespace) -> int:
    tx_hash = _hex(args.hash, "transaction hash")
    with _client(args) as client:
        found = client.get_transaction(tx_hash)
    if found is None:
        print(f"supervm: transaction {tx_hash.hex()} is unknown to the node", file=sys.stderr)
        return 1
    _print_tx(found, args.json)
    return 0


def _add_node(subparsers: PluginSubparsers) -> None:
    node = subparsers.add_parser(
        "node",
        help="run a node: mempool, block producer and JSON-RPC (supervm-node)",
        description="Run a node on a store: it takes signed transactions over JSON-RPC "
        "(docs/rpc.md), produces blocks from them and serves the chain, a status page at /, "
        "metrics at /metrics and /health. Stops cleanly on SIGINT or SIGTERM.",
    )
    node.add_argument("--store", metavar="URL", help="the store (default: the embedded default)")
    node.add_argument(
        "--rpc",
        type=_listen_arg,
        default=("127.0.0.1", 8645),
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8645; loopback only unless told)",
    )
    node.add_argument(
        "--chain-id",
        type=int,
        default=1,
        metavar="N",
        help="the chain id transactions must carry (default 1; kept in the store)",
    )
    node.add_argument(
        "--block-time",
        type=_positive,
        default=200,
        metavar="MS",
        help="cut a block every MS milliseconds (default 200)",
    )
    node.add_argument(
        "--max-block-txs",
        type=_positive,
        default=2000,
        metavar="N",
        help="or as soon as N transactions are ready (default 2000)",
    )
    node.add_argument(
        "--threads",
        type=_positive,
        default=2,
        metavar="N",
        help="pipeline threads (1: stages in turn; default 2)",
    )
    node.add_argument(
        "--keep-blocks",
        type=_positive,
        metavar="N",
        help="keep the history of the last N blocks only (default: all)",
    )
    node.add_argument("--mempool-count", type=_positive, default=100_000, metavar="N")
    node.add_argument("--mempool-bytes", type=_positive, default=64 << 20, metavar="BYTES")
    node.add_argument(
        "--max-body",
        type=_positive,
        default=1 << 20,
        metavar="BYTES",
        help="largest request body (default 1 MiB)",
    )
    node.add_argument(
        "--max-batch",
        type=_positive,
        default=1000,
        metavar="N",
        help="longest JSON-RPC batch (default 1000)",
    )
    node.add_argument(
        "--follow",
        metavar="URL",
        help="follow the node at URL (read-only: no producer, transactions refused)",
    )
    node.add_argument(
        "--sync",
        choices=("reexecute", "apply"),
        default=None,
        help="a follower runs each block itself and compares (reexecute, the default; the "
        "edge profile's default is apply) or applies the peer's write set, checking the "
        "state root (apply)",
    )
    node.add_argument(
        "--fast-sync",
        action="store_true",
        help="a follower on an empty store starts from the peer's snapshot",
    )
    node.add_argument(
        "--profile",
        choices=("archive", "pruned", "edge", "light"),
        default="archive",
        help="archive: keep every height (default); pruned: keep --keep-blocks N, pruning in "
        "the background; edge: a follower with a read cache of --cache BYTES",
    )
    node.add_argument(
        "--cache",
        type=_size,
        default=256 << 20,
        metavar="SIZE",
        help="the edge profile's read cache: bytes, or 64MB, 256MiB, ... (default 256 MiB)",
    )
    node.add_argument(
        "--data-dir",
        metavar="DIR",
        help="snapshots served or downloaded (default: beside the store, STORE.node)",
    )
    node.add_argument("--log-format", choices=("text", "json"), default="text")
    node.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    node.set_defaults(func=_cmd_node)
    actions = node.add_subparsers(dest="node_command", metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="a node's sync status: height, lag, rate, peer, state",
        description="Print svm_syncStatus of the node at --rpc URL (default $SUPERVM_RPC or "
        f"{DEFAULT_RPC}).",
    )
    status.add_argument("--rpc", metavar="URL", help="the node")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=_cmd_node_status)  # fmt: skip


def _add_tx(subparsers: PluginSubparsers) -> None:
    tx = subparsers.add_parser("tx", help="send signed transactions to a node, look them up")
    actions = tx.add_subparsers(dest="tx_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--rpc", metavar="URL", help=f"the node (default $SUPERVM_RPC or {DEFAULT_RPC})"
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")
    sending = argparse.ArgumentParser(add_help=False, parents=[common])
    sending.add_argument("--key", required=True, metavar="FILE", help="the sender's key file")
    sending.add_argument(
        "--nonce", type=int, metavar="N", help="default: the node's next for the key"
    )
    sending.add_argument(
        "--gas", type=int, default=DEFAULT_GAS_LIMIT, metavar="N", help="gas limit"
    )
    sending.add_argument(
        "--wait", action="store_true", help="wait for the block and print the receipt"
    )
    sending.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="how long --wait waits"
    )
    send = actions.add_parser(
        "send",
        parents=[sending],
        help="sign and send a call",
        description="Sign a call of METHOD on CONTRACT with the key and send it. The input is "
        "--input HEX, or ARGS concatenated: addr:HEX (20 bytes), u64:N (8 bytes, little-endian), "
        "hex:HEX, str:TEXT.",
    )
    send.add_argument("contract", metavar="CONTRACT", help="contract address (hex)")
    send.add_argument("method", metavar="METHOD")
    send.add_argument("args", nargs="*", metavar="ARGS")
    send.add_argument("--input", metavar="HEX", help="the call's input as hex")
    send.set_defaults(func=_cmd_tx_send)
    deploy = actions.add_parser("deploy", parents=[sending], help="sign and send a deployment")
    deploy.add_argument("wasm", metavar="WASM", help="the compiled contract (.wasm)")
    deploy.add_argument("--salt", default="", metavar="HEX", help="a salt: another address")
    deploy.set_defaults(func=_cmd_tx_deploy)
    status = actions.add_parser(
        "status", parents=[common], help="a transaction's status and receipt"
    )
    status.add_argument("hash", metavar="HASH")
    status.set_defaults(func=_cmd_tx_status)  # fmt: skip


def register(subparsers: PluginSubparsers) -> None:
    """Add ``supervm keys``, ``supervm node`` and ``supervm tx``."""
    _add_node(subparsers)
    _add_tx(subparsers)
    keys = subparsers.add_parser("keys", help="make and read ed25519 key files (supervm-node)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="generate a key pair into a new key file (mode 0600); print its address",
        description="Generate an ed25519 key pair and write it to FILE, which must not "
        "exist, readable by its owner only. Prints the address and public key, never the "
        "secret seed.",
    )
    new.add_argument("--out", metavar="FILE", required=True, help="the key file to create")
    new.add_argument("--json", action="store_true", help="print one JSON object")
    new.set_defaults(func=_cmd_keys_new)
    show = actions.add_parser("show", help="print a key file's address and public key")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_cmd_keys_show)
