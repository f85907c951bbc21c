"""The layer 7 balancer over real sockets: small h11 backends on loopback, httpx, curl and websockets.

Theory of operation: each backend is an asyncio server speaking HTTP/1.1 through h11 that reports in
its answers what it saw (its name, its connection number, the forwarding fields), streams big bodies
in pieces, and can be stopped mid-test, closing its keep-alive connections, to play a dead backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers import unavailable
from tests.proxy.l7_backends import (
    BIG,
    BIG_SHA256,
    PIECE,
    SSE_GAP_S,
    Backend,
    balancer,
    l7_config,
    running,
    url,
)
from wirelab.errors import ConfigError
from wirelab.http.h1client import upstream_fields
from wirelab.proto.balance import Backend as BalancedBackend
from wirelab.proto.balance import State
from wirelab.proto.http1 import Request
from wirelab.proto.sse import ServerSentEvent, SSEDecoder
from wirelab.proxy.l7 import L7Balancer
from wirelab.testing import ServerProcess


async def test_keep_alive_on_both_sides() -> None:
    """RFC 9112 §9.3: one client connection and one backend connection carry every request."""
    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        answers = [await client.get(url(lb, "/x")) for _ in range(20)]
        assert {a.headers["x-connection"] for a in answers} == {"1"}
        assert lb.accepted == 1
        assert lb.upstreams.opened == 1


async def test_forwarding_fields_added_and_hop_by_hop_dropped() -> None:
    """RFC 9110 §7.6: Connection-named and hop-by-hop fields dropped, Via added; RFC 7239 Forwarded."""
    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        answer = await client.get(
            url(lb, "/x"),
            headers={
                "x-forwarded-for": "10.0.0.1",
                "connection": "keep-alive, x-secret",
                "x-secret": "1",
                "keep-alive": "timeout=5",
            },
        )
        assert answer.headers["x-seen-x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        assert answer.headers["x-seen-forwarded"].startswith("for=127.0.0.1;proto=http;host=")
        assert answer.headers["x-seen-via"] == "1.1 wirelab"
        assert "1.1 wirelab" in answer.headers["via"]
        assert "x-seen-x-secret" not in answer.headers
        assert "x-seen-keep-alive" not in answer.headers


async def test_16_mib_streamed_both_ways() -> None:
    """RFC 9112 §6: chunked and sized bodies relayed in pieces; the digests prove nothing was lost."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BIG // len(PIECE)):
            yield PIECE

    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        chunked = await client.post(url(lb, "/upload"), content=chunks())
        assert chunked.text == BIG_SHA256
        sized = await client.post(url(lb, "/upload"), content=PIECE * (BIG // len(PIECE)))
        assert sized.text == BIG_SHA256
        digest = hashlib.sha256()
        async with client.stream("GET", url(lb, "/download")) as download:
            assert download.headers["transfer-encoding"] == "chunked"
            async for piece in download.aiter_raw():
                digest.update(piece)
        assert digest.hexdigest() == BIG_SHA256


async def test_weighted_round_robin() -> None:
    async with (
        running("a", "b", "c") as backends,
        balancer(*backends, weights=(1, 1, 2)) as lb,
        httpx.AsyncClient() as client,
    ):
        seen = Counter([(await client.get(url(lb, "/x"))).text for _ in range(100)])
        assert seen == {"a": 25, "b": 25, "c": 50}


async def test_least_outstanding_prefers_the_idle_backend() -> None:
    async with (
        running("a", "b") as backends,
        balancer(*backends, algorithm="least-outstanding") as lb,
        httpx.AsyncClient() as client,
    ):
        async with client.stream("GET", url(lb, "/events")) as slow:  # holds one backend busy
            busy = slow.headers["x-backend"]
            others = {(await client.get(url(lb, "/x"))).text for _ in range(5)}
            await slow.aclose()
        assert others == {"a", "b"} - {busy}


@pytest.mark.parametrize("algorithm", ["hash-header:X-User", "hash-cookie:session"])
async def test_hashing_is_sticky_and_spreads(algorithm: str) -> None:
    async with (
        running("a", "b", "c") as backends,
        balancer(*backends, algorithm=algorithm) as lb,
        httpx.AsyncClient() as client,
    ):
        chosen: dict[int, set[str]] = {}
        for user in range(30):
            fields = (
                {"x-user": f"u{user}"} if "header" in algorithm else {"cookie": f"a=1; session=u{user}"}
            )
            chosen[user] = {(await client.get(url(lb, "/x"), headers=fields)).text for _ in range(4)}
        assert all(len(names) == 1 for names in chosen.values())
        assert len(set().union(*chosen.values())) == 3


async def test_killed_backend_is_ejected_and_idempotent_requests_retried() -> None:
    async with running("a", "b", "c") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        assert Counter([(await client.get(url(lb, "/x"))).text for _ in range(9)]) == {
            "a": 3,
            "b": 3,
            "c": 3,
        }
        await backends[1].stop()  # its pooled keep-alive connections die with it
        answers = await asyncio.gather(*(client.get(url(lb, "/x")) for _ in range(60)))
        assert all(a.status_code == 200 for a in answers)
        assert {a.text for a in answers} == {"a", "c"}
        assert lb.pools["default"].state(lb.pools["default"].backends[1]) is State.EJECTED
        metrics = (await client.get(url(lb, "/__metrics"))).text
        assert (
            f'wirelab_l7_backend_up{{pool="default",backend="127.0.0.1:{backends[1].port}"}} 0' in metrics
        )
        assert f'wirelab_l7_errors_total{{backend="127.0.0.1:{backends[1].port}"' in metrics


async def test_reset_before_answering_retries_only_what_is_safe() -> None:
    """RFC 9110 §9.2.2: idempotent requests (or ones with an Idempotency-Key) may be replayed."""
    async with AsyncExitStack() as stack:
        good, slammer = await Backend("a").start(), await Backend("r", slam=True).start()
        stack.push_async_callback(good.stop)
        stack.push_async_callback(slammer.stop)
        lb = await stack.enter_async_context(balancer(good, slammer))
        client = await stack.enter_async_context(httpx.AsyncClient())
        for _ in range(3):
            assert (await client.get(url(lb, "/x"))).text == "a"
        assert (await client.post(url(lb, "/x"), headers={"idempotency-key": "k1"})).status_code == 200
        assert lb.pools["default"].state(lb.pools["default"].backends[1]) is State.EJECTED
        assert lb.metrics.retries >= 1
        alone = await stack.enter_async_context(balancer(slammer))
        refused = await client.post(url(alone, "/x"))  # not idempotent: never replayed
        assert refused.status_code == 502
        assert refused.headers["content-type"] == "application/problem+json"


async def test_no_backend_left_answers_503() -> None:
    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        await backends[0].stop()
        answer = await client.get(url(lb, "/x"))
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"


async def test_metrics_in_prometheus_text_format() -> None:
    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        await client.get(url(lb, "/x"))
        metrics = (await client.get(url(lb, "/__metrics"))).text
        backend = f"127.0.0.1:{backends[0].port}"
        assert f'wirelab_l7_responses_total{{backend="{backend}",code="200"}} 1' in metrics
        assert f'wirelab_l7_response_seconds_count{{backend="{backend}"}} 1' in metrics
        assert f'wirelab_l7_backend_up{{pool="default",backend="{backend}"}} 1' in metrics
        assert "# TYPE wirelab_l7_response_seconds histogram" in metrics


async def test_sse_events_arrive_one_by_one() -> None:
    """Each event reaches the client when the backend sends it, not when the response ends."""
    async with running("a") as backends, balancer(*backends) as lb, httpx.AsyncClient() as client:
        loop = asyncio.get_running_loop()
        start, arrivals = loop.time(), []
        async with client.stream("GET", url(lb, "/events")) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append(loop.time() - start)
        assert len(arrivals) == 3
        assert arrivals[0] < SSE_GAP_S * 0.8
        assert arrivals[1] - arrivals[0] > SSE_GAP_S * 0.5


async def test_websocket_echo_through_the_balancer() -> None:
    """RFC 6455 §4: the Upgrade handshake passes through, then frames flow both ways unchanged."""

    async def echo(ws: websockets.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        config = l7_config([f"127.0.0.1:{port}"])
        lb = L7Balancer(config)
        await lb.start()
        try:
            async with websockets.connect(f"ws://127.0.0.1:{lb.address[1]}/ws") as ws:
                for message in ("hello", "x" * 100_000, b"\x00\x01binary"):
                    await ws.send(message)
                    assert await ws.recv() == message
        finally:
            await lb.close()


async def raw_exchange(lb: L7Balancer, data: bytes) -> bytes:
    """Send `data`, then read until the balancer closes the connection (a timeout fails the test)."""
    reader, writer = await asyncio.open_connection(*lb.address)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
    ids=["cl-and-te", "two-cl", "obs-fold", "bad-chunk", "oversized"],
)
@pytest.mark.parametrize("parser", ["llhttp", "python"])
async def test_smuggling_attempts_refused_and_closed(
    request_bytes: bytes, status: int, parser: str
) -> None:
    """RFC 9112 §6.3, §5.2, §7.1: ambiguous framing is answered with an error and the connection
    closed, whichever parser reads it."""
    async with running("a") as backends, balancer(*backends, parser=parser) as lb:
        answer = await raw_exchange(lb, request_bytes + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 %d " % status)
        assert b"application/problem+json" in answer
        assert answer.count(b"HTTP/1.1") == 1  # the smuggled request was never answered


@pytest.mark.parametrize("parser", ["llhttp", "python"])
async def test_head_pipelined_and_http_1_0(parser: str) -> None:
    """RFC 9110 §9.3.2: HEAD has no body; RFC 9112 §9.3: pipelined requests answered in order."""
    async with running("a") as backends, balancer(*backends, parser=parser) as lb:
        answer = await raw_exchange(
            lb,
            b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        head, second = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 1" in head.lower()
        assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"\r\n\r\na")
        old = await raw_exchange(lb, b"GET /x HTTP/1.0\r\n\r\n")
        assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b"\r\n\r\na")
        assert f"x-seen-host: 127.0.0.1:{backends[0].port}".encode() in old


async def test_slow_heads_are_cut_and_others_still_served() -> None:
    """Slowloris: heads sent a byte at a time are cut at the header timeout; others go through."""
    async with running("a") as backends, balancer(*backends, header_timeout_s=0.5) as lb:
        slow = [await asyncio.open_connection(*lb.address) for _ in range(50)]
        for _, writer in slow:
            writer.write(b"GET / HTTP/1.1\r\nHo")
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                await asyncio.sleep(0.1)
                assert (await client.get(url(lb, "/x"))).text == "a"
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 2) for r, _ in slow))
        assert closed == [b""] * 50
        for _, writer in slow:
            writer.close()


async def test_a_slow_head_after_a_body_on_a_kept_alive_connection_is_cut_too() -> None:
    """The header timeout holds for every request on a connection, also after one whose body was read
    under the (much longer) idle timeout."""
    async with running("a") as backends, balancer(*backends, header_timeout_s=0.5) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
        await asyncio.sleep(0.8)  # longer than the header timeout: the body is under the idle one
        writer.write(b"abc")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        writer.write(b"GET / HTTP/1.1\r\nHo")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 2
        writer.close()


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_through_the_balancer(tmp_path: Path) -> None:
    """curl as a user runs it: two URLs on one connection, then a 16 MiB upload (Expect: 100-continue)."""
    async with running("a", "b") as backends, balancer(*backends) as lb:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--fail", url(lb, "/x"), url(lb, "/y"), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        assert out in (b"ab", b"ba")
        assert lb.accepted == 1  # curl reused its connection for the second URL
        upload = tmp_path / "big"
        upload.write_bytes(PIECE * (BIG // len(PIECE)))
        process = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--fail",
            "--data-binary",
            f"@{upload}",
            url(lb, "/upload"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        assert out.decode() == BIG_SHA256


def test_config_names_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="algorithm"):
        l7_config(["127.0.0.1:1"], algorithm="hash-header:")
    with pytest.raises(ConfigError, match="pools"):
        l7_config([])
    with pytest.raises(ConfigError, match=r"backends\[0\].weight"):
        l7_config(["127.0.0.1:1,weight=0"])
    config = l7_config(["127.0.0.1:1"], algorithm="hash-cookie:SID")
    assert config.pools[0].policy == "source-hash"
    assert config.pools[0].hash_on == ("cookie", b"sid")


@pytest.fixture
async def in_front_of_server(server: ServerProcess) -> AsyncIterator[L7Balancer]:
    """The balancer in front of a real `wirelab up` process (the core issue's transports)."""
    async with balancer_for([f"127.0.0.1:{server.port}"]) as lb:
        yield lb


@asynccontextmanager
async def balancer_for(flags: list[str], **options: Any) -> AsyncIterator[L7Balancer]:
    lb = L7Balancer(l7_config(flags, **options))
    await lb.start()
    try:
        yield lb
    finally:
        await lb.close()


async def test_wirelab_sse_and_websocket_work_through_unchanged(in_front_of_server: L7Balancer) -> None:
    """A job's SSE stream (WHATWG HTML §9.2) and WebSocket subscription deliver every version."""
    lb = in_front_of_server
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(url(lb, "/jobs"), json={"kind": "demo", "steps": 4, "step_ms": 50})
        assert created.status_code == 202
        job = created.json()["id"]
        decoder, events = SSEDecoder(), []
        async with client.stream(
            "GET", url(lb, f"/jobs/{job}/events"), headers={"last-event-id": "0"}
        ) as stream:
            async for chunk in stream.aiter_raw():
                events += [e for e in decoder.receive_data(chunk) if isinstance(e, ServerSentEvent)]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "done"
    async with websockets.connect(f"ws://127.0.0.1:{lb.address[1]}/ws", compression=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topic": f"jobs/{job}", "after": 0}))
        versions: list[int] = []
        while not versions or versions[-1] < len(events):
            versions.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["version"])
    assert versions == list(range(1, len(events) + 1))


async def wait_state(lb: L7Balancer, index: int, state: State, within_s: float = 3.0) -> None:
    for _ in range(int(within_s / 0.02)):
        if lb.pools["default"].state(lb.pools["default"].backends[index]) is state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {index} did not become {state.value} within {within_s}s")


async def test_active_checks_take_a_backend_out_and_bring_it_back() -> None:
    """Active HTTP checks: `fall` failed probes mark a backend down, `rise` good ones re-admit it."""
    async with running("a", "b") as backends:
        flags = [f"127.0.0.1:{b.port}" for b in backends]
        async with balancer_for(flags, check_interval=0.05) as lb, httpx.AsyncClient() as client:
            await backends[1].stop()
            await wait_state(lb, 1, State.DOWN)
            assert {(await client.get(url(lb, "/x"))).text for _ in range(4)} == {"a"}
            await backends[1].start()  # the same port again
            await wait_state(lb, 1, State.UP)
            assert {(await client.get(url(lb, "/x"))).text for _ in range(4)} == {"a", "b"}


async def test_the_cli_serves_and_stops_on_sigterm() -> None:
    """`wirelab lb l7` as a user runs it: flags, one log line when listening, a clean SIGTERM exit."""
    async with running("a", "b") as backends:
        with socket.socket() as probe_sock:
            probe_sock.bind(("127.0.0.1", 0))
            port = probe_sock.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wirelab",
            "lb",
            "l7",
            "--listen",
            f"127.0.0.1:{port}",
            *(f"--backend=127.0.0.1:{b.port}" for b in backends),
            "--algorithm",
            "hash-header:X-User",
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            line = await asyncio.wait_for(process.stderr.readline(), 20)
            assert b"listening on 127.0.0.1:%d" % port in line
            async with httpx.AsyncClient() as client:
                base = f"http://127.0.0.1:{port}/x"
                names = {(await client.get(base, headers={"x-user": "u1"})).text for _ in range(5)}
                assert len(names) == 1
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0


def test_upstream_head_fields() -> None:
    """RFC 7239 §6: an IPv6 node is quoted in brackets; RFC 9110 §7.8: Upgrade survives the hop."""
    request = Request(
        b"GET",
        b"/ws",
        b"1.1",
        (
            (b"host", b"example.test:8080"),
            (b"connection", b"Upgrade, X-Drop"),
            (b"upgrade", b"websocket"),
            (b"x-drop", b"1"),
            (b"forwarded", b"for=10.0.0.1"),
            (b"te", b"trailers"),
        ),
    )
    fields = dict(upstream_fields(request, "::1", BalancedBackend("127.0.0.1", 9), "http"))
    assert fields[b"forwarded"] == b'for=10.0.0.1, for="[::1]";proto=http;host="example.test:8080"'
    assert fields[b"x-forwarded-for"] == b"::1"
    assert fields[b"via"] == b"1.1 wirelab"
    assert fields[b"upgrade"] == b"websocket"
    assert fields[b"connection"] == b"upgrade"
    assert b"x-drop" not in fields
    assert b"te" not in fields


async def test_a_backend_killed_under_wrk_costs_no_request() -> None:
    """wrk keeps 20 keep-alive connections busy through the balancer; one of two backends dies in
    the middle: every GET is still answered 2xx (retried on the other), and the dead one is out."""
    wrk = shutil.which("wrk")
    if wrk is None:
        unavailable("wrk is not installed (Debian package wrk; .ci/peers.sh installs it)")
    async with running("a", "b") as backends, balancer(*backends) as lb:
        load = await asyncio.create_subprocess_exec(
            wrk, "-t1", "-c20", "-d3s", url(lb, "/x"), stdout=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(1.0)
        await backends[1].stop()
        report = (await load.communicate())[0].decode()
        assert load.returncode == 0, report
        assert "Non-2xx" not in report and "Socket errors" not in report, report
        requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
        assert requests > 100, report
        assert lb.pools["default"].state(lb.pools["default"].backends[1]) is State.EJECTED
