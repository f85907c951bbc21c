"""Run an ASGI application on uvicorn: HTTP/1.1 with httptools under our connection limits (`guard`),
WebSocket with websockets' sans-I/O core (extended in `wsprotocol`).

Our server subclass changes one thing: on SIGINT or SIGTERM it first tells the application to begin
shutting down (so streams end now instead of when uvicorn's grace period runs out), then lets uvicorn
drain connections, and it does not re-raise the signal afterwards, so a graceful stop exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from wirelab.http.guard import ConnectionLimits, Guard

__all__ = ["serve"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _stop(self, sig: int) -> None:
        if self.should_exit:  # a second Ctrl-C: stop waiting for connections
            self.force_exit = True
            return
        self._on_stop()
        self.should_exit = True


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    on_stop: Callable[[], None],
    ws_max_size: int,
    limits: ConnectionLimits,
    access_log: bool,
    log_level: str,
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=Guard(limits).protocol_factory(),
        timeout_keep_alive=limits.idle_timeout_s,
        ws="wirelab.http.wsprotocol:PushWebSocketProtocol",
        ws_max_size=ws_max_size,
        interface="asgi3",  # said, not detected: the app's __call__ returns an awaitable (app.server)
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    _Server(config, on_stop).run()
