"""npm `ws`, the most used Node WebSocket client, against /ws (push) and /ws/echo.

The Node peer (js/ws_client.mjs) only speaks the protocol: the test sends it frames to write and reads
back, as JSON lines, every message and close it saw.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers import create_job
from tests.interop.interop_peers import JsonLinesPeer, Record
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop

Start = Callable[..., JsonLinesPeer]
TERMINAL = ("done", "failed", "canceled")


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def connect(node_peer: Start, server: ServerProcess, path: str) -> JsonLinesPeer:
    peer = node_peer("ws_client.mjs", ws_url(server, path))
    assert peer.next()["type"] == "open"
    return peer


def send_json(peer: JsonLinesPeer, message: dict[str, Any]) -> None:
    peer.send({"op": "text", "data": json.dumps(message)})


def received(record: Record) -> Any:
    assert record["type"] == "message", record
    assert record["binary"] is False, "push messages are JSON text frames"
    return json.loads(record["text"])


def follow_to_end(peer: JsonLinesPeer) -> list[dict[str, Any]]:
    records = peer.until(lambda r: r["type"] != "message" or received(r).get("event") in TERMINAL)
    return [received(record) for record in records]


def test_follow_a_job_to_done(node_peer: Start, server: ServerProcess) -> None:
    """RFC 6455 §5.6: each feed entry arrives as one JSON text message, versions 1, 2, 3... to done."""
    job = create_job(server.url, steps=6, step_ms=30)
    peer = connect(node_peer, server, "/ws")
    send_json(peer, {"op": "subscribe", "topic": f"jobs/{job['id']}", "after": 0})
    messages = follow_to_end(peer)
    assert [m["version"] for m in messages] == list(range(1, len(messages) + 1))
    assert {m["topic"] for m in messages} == {f"jobs/{job['id']}"}
    assert all(m["data"]["version"] == m["version"] for m in messages)
    assert messages[-1]["event"] == "done"
    assert messages[-1]["data"]["state"] == "done"
    assert len(messages) == 9  # queued, running, six steps, done


def test_reconnect_with_after_resumes_without_loss_or_repeat(
    node_peer: Start, server: ServerProcess
) -> None:
    """RFC 6455 §7.1.2 then a new connection: subscribing with `after` = last version seen
    delivers the rest, so the two halves together hold every version exactly once."""
    job = create_job(server.url, steps=10, step_ms=60)
    topic = f"jobs/{job['id']}"
    first = connect(node_peer, server, "/ws")
    send_json(first, {"op": "subscribe", "topic": topic, "after": 0})
    halfway = first.until(lambda r: received(r)["version"] >= 5)
    first.send({"op": "close", "code": 1000})
    closing = first.until(lambda r: r["type"] == "close")
    assert closing[-1]["code"] == 1000
    seen = [received(r)["version"] for r in halfway + closing[:-1]]

    second = connect(node_peer, server, "/ws")
    send_json(second, {"op": "subscribe", "topic": topic, "after": seen[-1]})
    rest = [m["version"] for m in follow_to_end(second)]
    assert rest[0] == seen[-1] + 1
    union = Counter(seen + rest)
    assert sorted(union) == list(range(1, rest[-1] + 1))
    assert max(union.values()) == 1, f"repeated versions: {union}"
    assert seen[-1] < rest[-1] == 13, "the first connection must have left half-way"


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ({"op": "text", "data": "not json"}, "not valid JSON"),
        ({"op": "text", "data": '{"op": "teleport", "topic": "logins"}'}, "op must be"),
        ({"op": "text", "data": '["subscribe"]'}, "JSON object"),
        ({"op": "binary", "base64": base64.b64encode(b"{}").decode()}, "text frames"),
        ({"op": "text", "data": '{"op": "subscribe", "topic": "jobs/0000000000000000"}'}, "no job"),
    ],
    ids=["not-json", "unknown-op", "not-an-object", "binary-frame", "unknown-job"],
)
def test_a_bad_message_gets_a_problem_and_the_socket_stays_usable(
    node_peer: Start, server: ServerProcess, frame: Record, detail: str
) -> None:
    """RFC 9457 §3 inside RFC 6455 §5.6 text: {"error": problem}; the connection is not closed."""
    job = create_job(server.url, steps=1, step_ms=0)
    peer = connect(node_peer, server, "/ws")
    peer.send(frame)
    error = received(peer.next())["error"]
    assert detail in error["detail"]
    assert error["status"] in (400, 404)
    assert error["title"]
    assert error["type"] == "about:blank"

    send_json(peer, {"op": "subscribe", "topic": f"jobs/{job['id']}", "after": 0})
    assert follow_to_end(peer)[-1]["event"] == "done"


def logins_version(server: ServerProcess) -> int:
    response = httpx.get(f"{server.url}/topics/logins")
    return 0 if response.status_code == 404 else int(response.json()["version"])


def test_two_subscribers_both_receive_a_login(node_peer: Start, server: ServerProcess) -> None:
    """RFC 6455 §5.6: one POST /logins is pushed to every socket subscribed to `logins`."""
    after = logins_version(server)
    peers = [connect(node_peer, server, "/ws") for _ in range(2)]
    for peer in peers:
        send_json(peer, {"op": "subscribe", "topic": "logins", "after": after})
    posted = httpx.post(f"{server.url}/logins", json={"user": "ada"})
    assert posted.status_code == 202
    version = posted.json()["version"]
    for peer in peers:
        message = received(peer.next())
        assert message["topic"] == "logins"
        assert message["event"] == "login"
        assert message["version"] == version == after + 1
        assert message["data"]["user"] == "ada"


def test_echo_text_and_binary(node_peer: Start, server: ServerProcess) -> None:
    """RFC 6455 §5.6: a text message comes back as text, a binary one as the same bytes;
    §5.5.1: our close 1000 is answered with 1000."""
    peer = connect(node_peer, server, "/ws/echo")
    text = "hello, wörld ☃ " * 100
    peer.send({"op": "text", "data": text})
    assert peer.next() == {"type": "message", "binary": False, "text": text}
    payload = base64.b64encode(bytes(range(256)) * 10).decode()
    peer.send({"op": "binary", "base64": payload})
    assert peer.next() == {"type": "message", "binary": True, "base64": payload}
    peer.send({"op": "close", "code": 1000})
    assert peer.next() == {"type": "close", "code": 1000, "reason": ""}


def test_permessage_deflate_is_negotiated(node_peer: Start, server: ServerProcess) -> None:
    """RFC 7692 §7: ws offers permessage-deflate and the server accepts it; echo still works."""
    peer = node_peer("ws_client.mjs", ws_url(server, "/ws/echo"))
    opened = peer.next()
    assert opened["type"] == "open"
    assert opened["extensions"].startswith("permessage-deflate")
    text = "compress me " * 1000
    peer.send({"op": "text", "data": text})
    assert peer.next()["text"] == text


def test_a_message_over_the_size_limit_closes_with_1009(node_peer: Start, server: ServerProcess) -> None:
    """RFC 6455 §7.4.1: a message bigger than --ws-max-size (1 MiB by default) is refused with 1009,
    measured after permessage-deflate, so 2 MiB that compress to a few KiB are refused too."""
    peer = connect(node_peer, server, "/ws/echo")
    peer.send({"op": "text", "data": "x" * (2 * 1024 * 1024)})
    closed = peer.next()
    assert closed["type"] == "close"
    assert closed["code"] == 1009
