"""No JSON a client sends reaches a 500: every JSON endpoint of `wirelab up`, over real connections,
answers hostile bodies with a 4xx problem+json and keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from wirelab.testing import ServerProcess

ENDPOINTS = ["/jobs", "/comments", "/logins", "/sessions", "/tokens"]

HOSTILE: dict[str, tuple[bytes, str]] = {
    # name: (body, content type); each under the 64 KiB body limit
    "nested 30,000 levels": (b"[" * 30_000 + b"]" * 30_000, "application/json"),
    "nested objects": (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    "a 5,000-digit number": (b'{"steps": ' + b"9" * 5_000 + b"}", "application/json"),
    "1e999": (b'{"steps": 1e999, "user": "a"}', "application/json"),
    "NaN": (b'{"steps": NaN, "user": "a"}', "application/json"),
    "invalid UTF-8": (b'{"user": "\xc3\x28", "post": "\xff"}', "application/json"),
    "duplicate keys": (b'{"user": "a", "user": "b", "kind": "demo", "kind": "x"}', "application/json"),
    "text/plain": (b'{"user": "a", "kind": "demo"}', "text/plain"),
    "a form": (b"user=a&kind=demo", "application/x-www-form-urlencoded"),
    "truncated": (b'{"user": "a', "application/json"),
    "a lone surrogate": (b'{"user": "\\ud800", "post": "p", "text": "t"}', "application/json"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_get_a_4xx_problem(server: ServerProcess, endpoint: str, name: str) -> None:
    body, content_type = HOSTILE[name]
    response = httpx.post(f"{server.url}{endpoint}", content=body, headers={"content-type": content_type})
    if response.status_code < 300 and name == "a lone surrogate":
        return  # a valid JSON escape: taken as text, as any JSON parser does
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("endpoint", ["/jobs", "/comments"])
def test_hostile_bodies_with_an_idempotency_key_are_refused_and_not_stored(
    server: ServerProcess, endpoint: str
) -> None:
    headers = {"content-type": "application/json", "idempotency-key": f"hostile-{endpoint[1:]}"}
    body = b"[" * 30_000 + b"]" * 30_000
    first = httpx.post(f"{server.url}{endpoint}", content=body, headers=headers)
    again = httpx.post(f"{server.url}{endpoint}", content=body, headers=headers)
    assert first.status_code == again.status_code == 400, (first.text, again.text)


def test_the_reasons_are_named(server: ServerProcess) -> None:
    def detail(body: bytes, content_type: str = "application/json") -> str:
        response = httpx.post(f"{server.url}/logins", content=body, headers={"content-type": content_type})
        return str(response.json()["detail"])

    assert "deeper than the limit of 32 levels" in detail(b"[" * 30_000 + b"]" * 30_000)
    assert "appears twice" in detail(b'{"user": "a", "user": "b"}')
    assert "not valid UTF-8" in detail(b'{"user": "\xff"}')
    assert "application/json" in detail(b'{"user": "a"}', "text/plain")


def test_a_body_without_a_content_type_is_taken_as_json(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/logins", content=b'{"user": "ada"}')
    assert response.status_code == 202, response.text


def test_the_server_still_serves_after_all_of_it(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert "RecursionError" not in server.log()
    assert "unexpected error" not in server.log()


def test_a_hostile_websocket_message_is_answered_and_the_socket_kept(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/ws", compression=None, open_timeout=5) as ws:
        for hostile in ["[" * 30_000 + "]" * 30_000, '{"op": "subscribe", "after": ' + "1" * 5_000 + "}"]:
            ws.send(hostile)
            error = json.loads(ws.recv(timeout=5))["error"]
            assert error["status"] == 400, error
        ws.send(json.dumps({"op": "subscribe", "topic": "logins"}))
        httpx.post(f"{server.url}/logins", json={"user": "ws"})
        assert json.loads(ws.recv(timeout=5))["topic"] == "logins"
