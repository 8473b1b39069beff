"""``supervm keys``: the node's commands, added to the core CLI through the
``supervm.commands`` entry-point group."""

from __future__ import annotations

import argparse
import json

from supervm.cli import PluginSubparsers
from supervm_node.keys import KeyPair, load_key, save_key

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


def register(subparsers: PluginSubparsers) -> None:
    """Add ``supervm keys new`` and ``supervm keys show``."""
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
