"""The Idempotency-Key middleware: one wrapper that makes a POST handler safe to retry.

Theory of operation: a request with a key first claims it in the store (atomically: of fifty at
once, one wins). The winner runs the handler, which writes its effect and, through `Keyed.completion`,
the response to replay, in one transaction; so a crash leaves either both or neither. The others are
answered from the record: the stored response (marked `Idempotent-Replayed: true`), 409 while the
winner still runs, 422 if the payload differs. A handler that refuses the request (a 4xx problem) has
that answer kept too, so a retry sees the same refusal; a failure of ours (5xx, a crash, a cancelled
task) releases the key, so a retry executes afresh. A claim whose request died without a word (its
process was killed) is taken over once it is `stale_s` old.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from wirelab.errors import ProblemError, path_instance, problem_body
from wirelab.http.asgi import Request
from wirelab.proto.idempotency import (
    HEADER,
    REPLAYED_HEADER,
    Completion,
    KeyRecord,
    StoredResponse,
    check_key,
    decide,
    fingerprint,
    worth_keeping,
)

__all__ = ["Idempotency", "KeyStore", "Keyed"]


class KeyStore(Protocol):
    async def claim(
        self, key: str, fingerprint: str, *, now: float, stale_before: float, expired_before: float
    ) -> KeyRecord | None: ...

    async def complete(self, completion: Completion) -> None: ...

    async def release(self, key: str) -> None: ...


class Keyed:
    """Handed to an idempotent handler: the completion to write with its effect, if a key came."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.recorded = False

    def completion(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Completion | None:
        if self.key is None:
            return None
        self.recorded = True
        return Completion(self.key, StoredResponse.of(status, headers, body))


KeyedHandler = Callable[..., Awaitable[None]]


class Idempotency:
    def __init__(
        self,
        keys: KeyStore,
        *,
        ttl_s: float = 86400.0,
        stale_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._ttl = ttl_s
        self._stale = stale_s
        self._clock = clock

    def wrap(self, handler: KeyedHandler) -> Callable[..., Awaitable[None]]:
        """`handler(request, keyed, **params)` made retry-safe; it must pass `keyed.completion(...)`
        to the store write that carries its effect, then send that same response."""

        async def idempotent(request: Request, **params: str) -> None:
            raw = request.headers.get(HEADER)
            if raw is None:
                await handler(request, Keyed(None), **params)
                return
            key = check_key(raw)
            mark = fingerprint(request.method, request.path, await request.body())
            now = self._clock()
            record = await self._keys.claim(
                key, mark, now=now, stale_before=now - self._stale, expired_before=now - self._ttl
            )
            replay = decide(record, mark)
            if replay is not None:
                await _send_replay(request, replay)
                return
            await self._execute(handler, request, key, params)

        return idempotent

    async def _execute(
        self, handler: KeyedHandler, request: Request, key: str, params: dict[str, str]
    ) -> None:
        keyed = Keyed(key)
        try:
            await handler(request, keyed, **params)
        except ProblemError as error:
            if not keyed.recorded and worth_keeping(error.status):
                body = json.dumps(problem_body(error, instance=path_instance(request.path))).encode()
                headers = [("content-type", "application/problem+json"), *error.headers.items()]
                await self._keys.complete(Completion(key, StoredResponse.of(error.status, headers, body)))
            elif not keyed.recorded:
                await self._keys.release(key)
            raise
        except BaseException:
            await self._keys.release(key)  # only an in-flight claim goes; a committed answer stays
            raise
        if not keyed.recorded:
            raise RuntimeError(f"{request.method} {request.path} answered without recording its response")


async def _send_replay(request: Request, response: StoredResponse) -> None:
    headers = [(k.encode(), v.encode()) for k, v in response.headers]
    headers += [
        (REPLAYED_HEADER.encode(), b"true"),
        (b"content-length", str(len(response.body)).encode()),
    ]
    await request.send({"type": "http.response.start", "status": response.status, "headers": headers})
    await request.send({"type": "http.response.body", "body": response.body})
