"""Idempotency-Key over real connections: replays, conflicts, 50 racing retries, expiry, kill -9."""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from wirelab.testing import ServerProcess


def _post(url: str, post: str, text: str, key: str | None = None) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return httpx.post(f"{url}/comments", json={"post": post, "text": text}, headers=headers, timeout=10)


def _count(url: str, post: str) -> int:
    count: int = httpx.get(f"{url}/comments", params={"post": post}).json()["count"]
    return count


def test_comments_are_stored_and_listed_oldest_first(server: ServerProcess) -> None:
    post = secrets.token_hex(4)
    first = _post(server.url, post, "first")
    assert first.status_code == 201 and first.headers["location"] == f"/comments/{first.json()['id']}"
    _post(server.url, post, "second")
    listed = httpx.get(f"{server.url}/comments", params={"post": post}).json()
    assert [c["text"] for c in listed["comments"]] == ["first", "second"] and listed["count"] == 2
    one = httpx.get(f"{server.url}/comments", params={"post": post, "limit": "1"}).json()
    assert [c["text"] for c in one["comments"]] == ["first"] and one["count"] == 2


def test_bad_comments_are_problems(server: ServerProcess) -> None:
    for body in ({"post": "p"}, {"post": "", "text": "x"}, {"post": "p", "text": 5}, ["list"]):
        response = httpx.post(f"{server.url}/comments", json=body)
        assert (
            response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
        )
    assert httpx.get(f"{server.url}/comments").status_code == 400


def test_a_comment_with_a_lone_surrogate_is_422_not_500(server: ServerProcess) -> None:
    """RFC 8259 §8.2: `"\\ud800"` is valid JSON but no Unicode text, and no store can encode it
    (it was a 500: SQLite could not encode it)."""
    for body in (b'{"post": "p", "text": "a\\ud800b"}', b'{"post": "\\udc00", "text": "t"}'):
        response = httpx.post(f"{server.url}/comments", content=body)
        assert response.status_code == 422, response.text
        assert "lone surrogate" in response.json()["detail"]


def test_nul_in_a_comment_or_a_post_id_is_refused_before_any_store(server: ServerProcess) -> None:
    """PostgreSQL's text type cannot hold NUL: refused the same on every store, never a 500."""
    response = httpx.post(f"{server.url}/comments", content=b'{"post": "p", "text": "a\\u0000b"}')
    assert response.status_code == 422, response.text
    assert httpx.get(f"{server.url}/comments", params={"post": "a\x00b"}).status_code == 400


def test_a_retry_with_the_same_key_replays_and_executes_nothing(server: ServerProcess) -> None:
    post, key = secrets.token_hex(4), secrets.token_hex(8)
    first = _post(server.url, post, "hello", key)
    again = _post(server.url, post, "hello", key)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert _count(server.url, post) == 1


def test_the_same_key_with_another_payload_is_422(server: ServerProcess) -> None:
    post, key = secrets.token_hex(4), secrets.token_hex(8)
    assert _post(server.url, post, "one", key).status_code == 201
    other = _post(server.url, post, "two", key)
    assert other.status_code == 422 and "another request" in other.json()["detail"]
    assert _count(server.url, post) == 1


def test_a_refusal_is_kept_and_replayed_too(server: ServerProcess) -> None:
    key = secrets.token_hex(8)
    body = {"post": "p"}
    first = httpx.post(f"{server.url}/comments", json=body, headers={"idempotency-key": key})
    again = httpx.post(f"{server.url}/comments", json=body, headers={"idempotency-key": key})
    assert first.status_code == again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


def test_malformed_keys_are_400(server: ServerProcess) -> None:
    assert _post(server.url, "p", "x", "k" * 256).status_code == 400


def test_fifty_racing_requests_with_one_key_execute_once(server: ServerProcess) -> None:
    post, key = secrets.token_hex(4), secrets.token_hex(8)
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda _: _post(server.url, post, "once", key), range(50)))
    statuses = [r.status_code for r in responses]
    fresh = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert len(fresh) == 1 and set(statuses) <= {201, 409}
    assert len(replays) + statuses.count(409) == 49
    assert all(r.content == fresh[0].content for r in replays)
    assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 409)
    assert _count(server.url, post) == 1


def test_a_retried_job_submission_creates_one_job(server: ServerProcess) -> None:
    key, spec = secrets.token_hex(8), {"kind": "demo", "steps": 2, "step_ms": 10}
    first = httpx.post(f"{server.url}/jobs", json=spec, headers={"idempotency-key": key})
    again = httpx.post(f"{server.url}/jobs", json=spec, headers={"idempotency-key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/jobs/{first.json()['id']}"


def test_keys_expire_and_are_swept(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--idempotency-ttl", "1") as server:
        post, key = secrets.token_hex(4), secrets.token_hex(8)
        assert _post(server.url, post, "x", key).status_code == 201
        time.sleep(1.3)
        fresh = _post(server.url, post, "x", key)
        assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
        assert _count(server.url, post) == 2


def test_a_server_killed_mid_requests_leaves_each_key_done_once_or_not_at_all(tmp_path: Path) -> None:
    """kill -9 during a burst of keyed posts; after a restart every key is retried until it lands:
    exactly one comment per key, none half-written (a claim the dead process held is taken over
    once stale)."""
    server = ServerProcess(tmp_path, "--idempotency-stale", "1").start()
    post, keys = secrets.token_hex(4), [secrets.token_hex(8) for _ in range(120)]
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            burst = [pool.submit(_try_post, server.url, post, key) for key in keys]
            time.sleep(0.15)
            server.kill()
            answered = sum(1 for future in burst if future.result() is not None)
        assert answered < len(keys), "the kill came after every request had its answer"
        server.start()
        time.sleep(1.1)
        bodies = {key: _post_until_done(server.url, post, key) for key in keys}
        assert _count(server.url, post) == len(keys)
        stored = httpx.get(f"{server.url}/comments", params={"post": post}).json()["comments"]
        assert sorted(c["id"] for c in stored) == sorted(b["id"] for b in bodies.values())
    finally:
        server.stop()


def _try_post(url: str, post: str, key: str) -> dict[str, Any] | None:
    try:
        response = _post(url, post, key, key)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 201 else None


def _post_until_done(url: str, post: str, key: str) -> dict[str, Any]:
    for _ in range(50):
        response = _post(url, post, key, key)
        if response.status_code == 201:
            body: dict[str, Any] = response.json()
            return body
        assert response.status_code == 409, response.text
        time.sleep(0.1)
    raise AssertionError(f"key {key} never got its answer")
