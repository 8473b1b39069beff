"""Real ``supervm node`` processes on loopback for the tests: start, wait, stop, kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from supervm.client import Client
from supervm_node import workload

CHAIN_ID = 31
TOKEN = workload.TOKEN
#: The longest a node may take to answer /health after starting (a hang, not a timing check).
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """``supervm node`` in a child process on a free loopback port, its logs in ``log``."""

    def __init__(
        self,
        store: str,
        log: Path,
        *extra: str,
        chain_id: int = CHAIN_ID,
        healthy: bool = True,
    ) -> None:
        """Start the node and wait until ``/health`` says ok (``healthy=False``: until it
        answers at all, e.g. a follower about to refuse a block)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [
            sys.executable, "-m", "supervm", "node", "--store", store,
            "--rpc", f"127.0.0.1:{self.port}", "--chain-id", str(chain_id),
            "--log-format", "json", *extra,
        ]  # fmt: skip
        self._out = log.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        self._wait_healthy(healthy)

    def _wait_healthy(self, healthy: bool = True) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the node exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if json.load(answer).get("ok") or not healthy:
                        return
            except urllib.error.HTTPError:
                if not healthy:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the node did not become healthy:\n{self.log.read_text()}")

    def health(self) -> tuple[int, dict[str, object]]:
        """``GET /health``: the HTTP status and the report."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=10) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def client(self) -> Client:
        return Client(self.url, timeout=30)

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or ``sig``), and wait for a clean exit; the exit status."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._out.close()
        return code

    def kill(self) -> None:
        """kill -9."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()

    def log_records(self) -> list[dict[str, object]]:
        records = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records


def Workload(senders: int, seed: int = 1) -> workload.Workload:
    """The signed token workload on the tests' chain."""
    return workload.Workload(senders, chain_id=CHAIN_ID, seed=seed)


u64 = workload.u64
