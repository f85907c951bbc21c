"""Routes from (method, path pattern) to handlers, with errors turned into problem+json in one place."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from wirelab.errors import MethodNotAllowed, NotFound, ProblemError, path_instance
from wirelab.http.asgi import (
    ClientGone,
    Receive,
    Request,
    Scope,
    Send,
    WebSocket,
    WebSocketClosed,
    send_problem,
)

__all__ = ["HttpHandler", "Router", "WebSocketHandler"]

log = logging.getLogger("wirelab.http")

HttpHandler = Callable[..., Awaitable[None]]
WebSocketHandler = Callable[..., Awaitable[None]]


def _compile(pattern: str) -> re.Pattern[str]:
    """`/jobs/{id}` matches one path segment per name."""
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


class Router:
    def __init__(self) -> None:
        self._http: list[tuple[str, re.Pattern[str], dict[str, HttpHandler]]] = []
        """(pattern as registered, compiled, handler per method), in registration order."""
        self._ws: list[tuple[re.Pattern[str], WebSocketHandler]] = []

    def http(self, method: str, pattern: str, handler: HttpHandler) -> None:
        for registered, _, methods in self._http:
            if registered == pattern:
                methods[method] = handler
                return
        self._http.append((pattern, _compile(pattern), {method: handler}))

    def websocket(self, pattern: str, handler: WebSocketHandler) -> None:
        self._ws.append((_compile(pattern), handler))

    def routes(self) -> list[tuple[str, str]]:
        """(method, pattern) of every HTTP route, as registered: the HEAD each GET also answers is
        implied, not listed (a HEAD registered on its own is)."""
        return [(method, pattern) for pattern, _, methods in self._http for method in methods]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """An ASGI application. Not itself a coroutine: it returns the handler's, so a long-lived
        connection's suspended stack has no frame for the dispatch."""
        if scope["type"] == "http":
            return self._serve_http(Request(scope, receive, send))
        if scope["type"] == "websocket":
            return self._serve_websocket(WebSocket(scope, receive, send))
        return _nothing()

    async def _serve_http(self, request: Request) -> None:
        try:
            handler, params = self._match_http(request)
            await handler(request, **params)
        except ClientGone:
            pass
        except ProblemError as error:
            await send_problem(request.send, error, instance=path_instance(request.path))
        except Exception:
            await self._internal_error(request)

    async def _internal_error(self, request: Request) -> None:
        instance = _log_bug(f"{request.method} {request.path}")
        error = ProblemError(f"an unexpected error; the server's log has it under {instance}")
        # If the response had begun, the server refuses a second start and cuts the connection.
        with contextlib.suppress(RuntimeError):
            await send_problem(request.send, error, instance=instance)

    def _match_http(self, request: Request) -> tuple[HttpHandler, dict[str, str]]:
        for _, pattern, methods in self._http:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None and request.method == "HEAD":
                handler = methods.get("GET")
            if handler is None:
                allowed = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
                raise MethodNotAllowed(
                    f"{request.method} is not allowed here; use {allowed}", headers={"allow": allowed}
                )
            return handler, match.groupdict()
        raise NotFound(f"nothing is served at {request.path}")

    async def _serve_websocket(self, ws: WebSocket) -> None:
        for pattern, handler in self._ws:
            params = _params(pattern, ws.path)  # not the Match: this frame lives as long as the socket
            if params is not None:
                try:
                    await handler(ws, **params)
                except WebSocketClosed:
                    pass
                except Exception:
                    instance = _log_bug(f"WebSocket {ws.path}")
                    with contextlib.suppress(WebSocketClosed, RuntimeError):
                        await ws.close(1011, instance)
                return
        await ws.close(1008, "no WebSocket is served at this path")


async def _nothing() -> None:
    pass


def _params(pattern: re.Pattern[str], path: str) -> dict[str, str] | None:
    match = pattern.match(path)
    return None if match is None else match.groupdict()


def _log_bug(where: str) -> str:
    """A handler's bug, not the client's fault: logged whole under a new id, which the client is
    given (a problem's `instance`, a close reason) so that a report can be matched to its traceback;
    the process serves on."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    log.exception("unexpected error on %s (%s)", where, instance)
    return instance
