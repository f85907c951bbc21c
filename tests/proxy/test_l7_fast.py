"""The layer 7 balancer's fast path (`wirelab.proxy.l7fast`) over real connections: what it hands to
the stream path and when, what a backend failure does there, and what a client that leaves costs.
(Every other layer 7 test runs through it too: cleartext HTTP/1.1 starts there.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack

import h11
import httpx

from tests.proxy.l7_backends import BIG, Backend, balancer, running, url
from wirelab.proxy.l7 import L7Balancer


async def _answers(reader: asyncio.StreamReader, count: int) -> list[tuple[h11.Response, bytes]]:
    """`count` responses read off one connection, each with its body."""
    conn, answers = h11.Connection(h11.CLIENT), []
    for _ in range(count):
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))  # only to read
        conn.send(h11.EndOfMessage())
        head, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(1 << 16))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert head is not None
        answers.append((head, body))
        conn.start_next_cycle()
    return answers


async def _settled(lb: L7Balancer) -> None:
    """Wait (at most 5 s) until no request is in flight."""
    async with asyncio.timeout(5):
        while lb.in_flight:  # noqa: ASYNC110  (the balancer has no event to await for this)
            await asyncio.sleep(0.01)


async def test_a_connection_goes_on_as_streams_mid_way_and_keeps_its_order() -> None:
    """A bodyless request, one with a body (the stream path's) and another bodyless one, pipelined in
    one write on one connection: three answers, in order, over one backend connection."""
    async with running("a") as backends, balancer(*backends) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = await _answers(reader, 3)
        writer.close()
        assert [head.status_code for head, _ in answers] == [200, 200, 200]
        assert [body for _, body in answers] == [b"a", hashlib.sha256(b"hello").hexdigest().encode(), b"a"]
        assert {dict(head.headers)[b"x-connection"] for head, _ in answers} == {b"1"}
        assert lb.accepted == 1
        assert lb.upstreams.opened == 1


async def test_a_reset_answers_502_to_what_may_not_be_replayed_and_retries_what_may() -> None:
    async with AsyncExitStack() as stack:
        good, slammer = await Backend("a").start(), await Backend("r", slam=True).start()
        stack.push_async_callback(good.stop)
        stack.push_async_callback(slammer.stop)
        client = await stack.enter_async_context(httpx.AsyncClient())
        alone = await stack.enter_async_context(balancer(slammer))
        refused = await client.delete(url(alone, "/x"))  # bodyless, but not idempotent by its method
        assert refused.status_code == 502
        assert refused.headers["content-type"] == "application/problem+json"
        assert "failed" in json.loads(refused.text)["detail"]
        both = await stack.enter_async_context(balancer(slammer, good))
        answers = [await client.get(url(both, "/x")) for _ in range(4)]
        assert {(a.status_code, a.text) for a in answers} == {(200, "a")}
        assert both.metrics.retries >= 1
        await _settled(alone)
        await _settled(both)


async def test_a_client_gone_mid_answer_holds_the_backend_back_then_frees_it() -> None:
    """A client that stops reading a 16 MiB answer: the backend is paused (the balancer buffers a
    little, not the body); once the client leaves, the backend connection is closed, not reused."""
    async with running("a") as backends, balancer(*backends) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        writer.write(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read(1 << 16)).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.5)  # not reading: the socket buffers fill, then the backend waits
        assert backends[0].handlers, "the backend finished a 16 MiB answer nobody read"
        writer.transport.abort()
        await _settled(lb)
        async with asyncio.timeout(5):
            while backends[0].handlers:  # noqa: ASYNC110  (nor the backend)
                await asyncio.sleep(0.01)  # the balancer closed its connection to the backend
        async with httpx.AsyncClient() as client:
            answer = await client.get(url(lb, "/download"))
        assert answer.status_code == 200 and len(answer.content) == BIG
        assert lb.upstreams.opened == 2
