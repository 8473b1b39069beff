"""Serving the node's app with uvicorn in the foreground, until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal only stops it: the process then exits normally
    (uvicorn raises the signal again after shutting down, killing the process before
    the caller can close its store)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8645, **uvicorn_kwargs: Any) -> bool:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM; False if it could not start
    (e.g. the port is taken: uvicorn logs why)."""
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **uvicorn_kwargs}
    server = _Server(uvicorn.Config(app, host=host, port=port, **options))
    try:
        server.run()
    except SystemExit:
        return False
    return server.started
