"""The ``supervm`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from supervm import __version__
from supervm.errors import SuperVMError
from supervm.registry import available_backends, load_backend

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
    except SuperVMError as exc:
        print(f"supervm: error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
