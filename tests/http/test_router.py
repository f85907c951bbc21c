"""The router turns a handler's bug into a 500 problem+json whose instance id is in the log (RFC 9457
§3.1.5: `instance` identifies this occurrence), and a WebSocket handler's bug into close 1011."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from wirelab.http import Request, Router, WebSocket, send_json


async def _broken(request: Request) -> None:
    raise RuntimeError("a bug")


async def _half_answered(request: Request) -> None:
    await request.send({"type": "http.response.start", "status": 200, "headers": []})
    raise KeyError("a bug after the response began")


async def _broken_ws(ws: WebSocket) -> None:
    await ws.accept()
    raise ValueError("a bug")


async def _fine(request: Request) -> None:
    await send_json(request.send, 200, {"ok": True})


def _router() -> Router:
    router = Router()
    router.http("GET", "/broken", _broken)
    router.http("GET", "/half", _half_answered)
    router.http("GET", "/fine", _fine)
    router.websocket("/ws", _broken_ws)
    return router


async def _call(router: Router, kind: str, path: str, first: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming = [first]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": f"{kind}.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and any(
            m["type"] == "http.response.start" for m in sent
        ):
            raise RuntimeError("Expected ASGI message 'http.response.body'")  # as uvicorn does
        sent.append(message)

    scope = {"type": kind, "path": path, "method": "GET", "headers": [], "query_string": b""}
    await router(scope, receive, send)
    return sent


async def test_a_bug_is_a_500_problem_with_its_instance_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = _router()
    with caplog.at_level(logging.ERROR, logger="wirelab.http"):
        start, body = await _call(router, "http", "/broken", {"type": "http.request", "body": b""})
    assert start["status"] == 500
    assert (b"content-type", b"application/problem+json") in start["headers"]
    problem = json.loads(body["body"])
    assert problem["status"] == 500
    assert problem["instance"].startswith("urn:uuid:")
    assert problem["instance"] in caplog.text
    assert "RuntimeError: a bug" in caplog.text
    start, _ = await _call(router, "http", "/fine", {"type": "http.request", "body": b""})
    assert start["status"] == 200


async def test_a_bug_after_the_response_began_is_logged_and_not_answered_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="wirelab.http"):
        sent = await _call(_router(), "http", "/half", {"type": "http.request", "body": b""})
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert "KeyError" in caplog.text


async def test_a_websocket_bug_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="wirelab.http"):
        sent = await _call(_router(), "websocket", "/ws", {"type": "websocket.connect"})
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1]["type"] == "websocket.close"
    assert sent[1]["code"] == 1011
    assert sent[1]["reason"] in caplog.text
