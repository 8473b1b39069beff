"""py-evm's ERC-20-style token transfers per second, blocks finalised: the peer figure.

    python -m bench.pyevm [--txs 2000] [--block-size 100] [--repeats 3]
                          [--ecc coincurve|native] [--json PATH]

``measure()`` runs ``bench/pyevm_peer.py`` (its docstring says what is timed
and checked) in a virtual environment of its own holding py-evm, so that
py-evm and its dependencies stay out of the workspace. The environment is made
once, with ``python -m venv`` and pip, under ``~/.cache/supervm-bench/pyevm-venv``
(``$XDG_CACHE_HOME`` if set), with the versions in ``REQUIREMENTS`` (all of
py-evm's dependencies as they were tested, and coincurve); a stamp file holding
that list marks it complete, and any other list makes it anew.

The figure is ``tx_per_s``: signed transfers, each decoded from raw bytes,
its signature checked and its sender recovered by py-evm, applied through
``MiningChain.mine_all`` in blocks of ``block_size``, each block finalised
(state root, receipts) and persisted; the median of ``repeats`` runs from a
fresh genesis, with ``runs``, ``min`` and ``max``. Signing is timed apart
(``sign_per_s``). ``ecc`` is eth-keys' secp256k1 back end: ``coincurve``
(libsecp256k1, the default: SuperVM checks its ed25519 signatures in C too) or
``native`` (pure Python, what a bare ``pip install py-evm`` gives, about eight
times slower here). ``setup_s`` is the time making the environment took in this
call (0 when it was cached).

Absolute rates are of this machine; SuperVM's node benchmark divides its own
rate, measured in the same run, by this one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PY_EVM = "0.12.1b1"
REQUIREMENTS = (
    f"py-evm=={PY_EVM}",
    "coincurve==21.0.0",
    "eth-keys==0.8.0",
    "eth-bloom==4.0.0",
    "eth-hash[pycryptodome]==0.8.0",
    "eth-typing==6.0.0",
    "eth-utils==6.0.0",
    "pycryptodome==3.24.1",
    "rlp==5.0.0",
    "trie==4.0.0",
    "ckzg==2.1.8",
    "py-ecc==8.0.0",
    "cached-property==2.0.1",
    "lru-dict==1.4.1",
    "sortedcontainers==2.4.0",
    "hexbytes==2.0.0",
    "cytoolz==1.2.0",
    "toolz==1.2.0",
    "pydantic==2.14.4",
)
PEER = Path(__file__).with_name("pyevm_peer.py")


def venv_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "supervm-bench" / "pyevm-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path | None = None) -> tuple[Path | None, float, str]:
    """The environment's interpreter (None if it cannot be made), the seconds making
    it took (0 if it was there) and why it failed."""
    venv = venv or venv_dir()
    stamp = venv / "supervm-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and _python(venv).exists():
        return _python(venv), 0.0, ""
    start = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(_python(venv)), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            shutil.rmtree(venv, ignore_errors=True)
            return None, time.perf_counter() - start, f"{step[2]}: {error}"
        if done.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            errors = [
                line
                for line in (done.stderr + done.stdout).splitlines()
                if line.strip() and not line.startswith("WARNING: Location")
            ]
            return (
                None,
                time.perf_counter() - start,
                f"{step[2]} failed: " + " | ".join(errors[-5:]),
            )
    stamp.write_text(wanted)
    return _python(venv), time.perf_counter() - start, ""


def measure(
    txs: int = 2000, block_size: int = 100, repeats: int = 3, ecc: str = "coincurve"
) -> dict | None:
    """py-evm's figures (see the module's docstring), or None, with the reason printed,
    when py-evm cannot be installed or its run fails."""
    python, setup_s, why = ensure_venv()
    if python is None:
        print(f"py-evm peer: cannot install py-evm {PY_EVM}: {why}", file=sys.stderr)
        return None
    command = [
        str(python),
        str(PEER),
        "--txs",
        str(txs),
        "--block-size",
        str(block_size),
        "--repeats",
        str(repeats),
        "--ecc",
        ecc,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        print("py-evm peer: the run took more than an hour", file=sys.stderr)
        return None
    if done.returncode:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        print(f"py-evm peer: the run failed ({done.returncode}): {tail}", file=sys.stderr)
        return None
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["setup_s"] = setup_s
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ecc", choices=("coincurve", "native"), default="coincurve")
    parser.add_argument("--json", metavar="PATH", help="also write the figures there")
    args = parser.parse_args(argv)
    figures = measure(args.txs, args.block_size, args.repeats, args.ecc)
    if figures is None:
        return 1
    print(
        f"py-evm {figures['py_evm']} ({figures['fork']}, {figures['ecc']}): "
        f"{figures['tx_per_s']:.0f} token transfers/s "
        f"(min {figures['min']:.0f}, max {figures['max']:.0f}, {len(figures['runs'])} runs "
        f"of {figures['txs']} in blocks of {figures['block_size']}); "
        f"signing {figures['sign_per_s']:.0f}/s, "
        f"decode + sender recovery {figures['recover_per_s']:.0f}/s; "
        f"setup {figures['setup_s']:.1f} s"
    )
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
