"""The layer 7 balancer's routing, circuit breaker, configuration file, limits, TLS and HTTP/2, over
real connections: h11 backends on loopback (tests/proxy/l7_backends.py), httpx, curl, h2load, a bare
h2 client, and `wirelab lb l7` as a process.

Theory of operation: each backend answers its own name, so where a request landed is in its answer;
a test builds the balancer's configuration the way an operator writes it (the TOML file's tables, or
the file itself for the process), then checks what clients and backends saw, and the balancer's
Prometheus figures where only the balancer knows (an open circuit, an ejected backend).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from h2.events import ResponseReceived, StreamEnded

from tests.http.test_h2server import run, tool
from tests.proxy.h2_peers import h2_client
from tests.proxy.l7_backends import (
    PIECE,
    SSE_GAP_S,
    Backend,
    balancer,
    l7_config,
    running,
    serving,
    url,
)
from wirelab.proto.balance import State
from wirelab.proxy.l7 import L7Balancer
from wirelab.proxy.l7config import L7Config, parse_l7_config

pytestmark = pytest.mark.interop


def config(pools: Mapping[str, list[Backend]], **tables: Any) -> L7Config:
    """The configuration a TOML file with these pools (round-robin) and top-level keys makes."""
    members = {name: {"backends": [{"address": b.address} for b in bs]} for name, bs in pools.items()}
    return parse_l7_config({"listen": "127.0.0.1:0", "pools": members, **tables})


def problem(answer: httpx.Response, status: int) -> bool:
    """Whether `answer` is the balancer's own RFC 9457 problem document for `status`."""
    return (
        answer.status_code == status
        and answer.headers["content-type"] == "application/problem+json"
        and answer.json()["status"] == status
    )


async def test_routes_by_host_wildcard_and_longest_path_prefix() -> None:
    """The most specific host wins (exact, then *.suffix, then any), then the longest prefix at a
    segment boundary; with no route left for a request, 404 problem+json."""
    async with running("api", "web", "wild", "catch") as (api, web, wild, catch):
        routes = [
            {"host": "api.test", "pool": "api"},
            {"path_prefix": "/static", "pool": "web"},
            {"path_prefix": "/static/big", "pool": "api"},
            {"host": "*.example.test", "pool": "wild"},
            {"pool": "catch"},
        ]
        pools = {"api": [api], "web": [web], "wild": [wild], "catch": [catch]}
        async with serving(config(pools, routes=routes)) as lb, httpx.AsyncClient() as client:

            async def landing(host: str, path: str) -> str:
                return (await client.get(url(lb, path), headers={"host": host})).text

            assert await landing("api.test", "/static/x") == "api"
            assert await landing("API.test:8080", "/x") == "api"
            assert await landing("other.test", "/static") == "web"
            assert await landing("other.test", "/static/x?q=1") == "web"
            assert await landing("other.test", "/staticx") == "catch"
            assert await landing("other.test", "/static/big/1") == "api"
            assert await landing("a.example.test", "/static/x") == "wild"
            assert await landing("a.b.example.test", "/") == "wild"
            assert await landing("example.test", "/x") == "catch"
            del pools["catch"]
            lb.reload(config(pools, routes=routes[:-1]))
            unrouted = await client.get(url(lb, "/x"), headers={"host": "other.test"})
            assert problem(unrouted, 404)
            assert await landing("a.example.test", "/x") == "wild"


async def metric(client: httpx.AsyncClient, lb: L7Balancer, name: str) -> str:
    """The value of one sample (`name` with its labels) of the balancer's Prometheus text."""
    text = (await client.get(url(lb, "/__metrics"))).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, text
    return found.group(1)


async def test_circuit_breaker_opens_tries_once_then_closes() -> None:
    """Three 5xx in a row open the circuit: no request reaches the backend; after `open` seconds one
    trial does, and fails (open again); once the backend recovers the next trial closes it."""
    async with running("a", "b") as (good, bad):
        bad.status = 500
        breaker = {"failures": 3, "open": 0.5}
        async with (
            serving(config({"default": [good, bad]}, breaker=breaker)) as lb,
            httpx.AsyncClient() as client,
        ):
            gauge = f'wirelab_l7_breaker_open{{backend="{bad.address}"}}'

            async def landed(count: int) -> Counter[str]:
                answers = [await client.get(url(lb, "/x")) for _ in range(count)]
                assert all(a.status_code == (bad.status if a.text == "b" else 200) for a in answers)
                return Counter(a.text for a in answers)

            assert await landed(6) == {"a": 3, "b": 3}
            assert await landed(10) == {"a": 10}
            assert await metric(client, lb, gauge) == "1"
            await asyncio.sleep(0.55)
            assert await landed(6) == {"a": 5, "b": 1}
            bad.status = 200
            assert await landed(6) == {"a": 6}  # open again for another 0.5 s
            await asyncio.sleep(0.55)
            spread = await landed(6)
            assert spread["b"] >= 2, spread
            assert await metric(client, lb, gauge) == "0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def config_file(port: int, pools: Mapping[str, list[Backend]], routes: Mapping[str, str]) -> str:
    """A TOML file for `wirelab lb l7 --config`: `routes` maps path prefixes to pools."""
    lines = [f'listen = "127.0.0.1:{port}"', "drain_timeout = 5.0"]
    for name, backends in pools.items():
        addresses = ", ".join(f'{{address = "{b.address}"}}' for b in backends)
        lines += [f"[pools.{name}]", f"backends = [{addresses}]"]
    for prefix, pool in routes.items():
        lines += ["[[routes]]", f'path_prefix = "{prefix}"', f'pool = "{pool}"']
    return "\n".join(lines) + "\n"


async def logged(process: asyncio.subprocess.Process, text: str) -> str:
    """The next line of the process's log holding `text` (lines before it are passed over)."""
    assert process.stderr is not None
    async with asyncio.timeout(20):
        while line := (await process.stderr.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the process ended without logging {text!r}")


@asynccontextmanager
async def l7_process(path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`wirelab lb l7 --config PATH`, once it listens; killed on leaving if it still runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wirelab", "lb", "l7", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    try:
        await logged(process, "listening on")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def in_flight(base: str) -> None:
    """Wait until the balancer has a request outstanding on some backend."""
    busy = re.compile(r"^wirelab_l7_backend_outstanding\{.*\} [1-9]", re.MULTILINE)
    async with httpx.AsyncClient() as client:
        for _ in range(250):
            if busy.search((await client.get(f"{base}/__metrics")).text):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("no request reached a backend within 5 s")


async def test_sighup_reloads_the_file_and_sigterm_drains(tmp_path: Path) -> None:
    """SIGHUP: new requests follow the rewritten file while one in flight on a kept-alive connection
    completes; a bad file is refused and the old configuration serves on. SIGTERM: the request in
    flight completes, then the process exits 0."""
    async with running("a", "b", "c") as (a, b, c):
        port, path = free_port(), tmp_path / "lb.toml"
        base = f"http://127.0.0.1:{port}"
        path.write_text(config_file(port, {"main": [a]}, {"/": "main"}))
        async with l7_process(path) as process, httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/x")).text == "a"
            slow = asyncio.create_task(client.get("/slow"))  # on the connection the first one opened
            await in_flight(base)
            path.write_text(config_file(port, {"main": [a, b], "other": [c]}, {"/": "main", "/o": "other"}))
            process.send_signal(signal.SIGHUP)
            await logged(process, "reloaded")
            async with httpx.AsyncClient(base_url=base) as fresh:
                assert {(await fresh.get("/x")).text for _ in range(4)} == {"a", "b"}
                assert (await fresh.get("/o/x")).text == "c"
            answer = await slow
            assert (answer.status_code, answer.text) == (200, "a")
            path.write_text(path.read_text() + "[breaker]\nfailures = 0\n")
            process.send_signal(signal.SIGHUP)
            assert "breaker.failures" in await logged(process, "reload refused")
            assert (await client.get("/o/x")).text == "c"
            slow = asyncio.create_task(client.get("/slow"))
            await in_flight(base)
            process.send_signal(signal.SIGTERM)
            answer = await slow
            assert answer.status_code == 200
            assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_a_bad_file_at_start_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    backends = 'backends = [{address = "127.0.0.1:1"}]\n'
    path.write_text(f'listen = "127.0.0.1:0"\n[pools.main]\nalgorithm = "fastest"\n{backends}')
    code, _, err = await run(sys.executable, "-m", "wirelab", "lb", "l7", "--config", str(path))
    assert code == 2
    assert "pools.main.algorithm" in err


async def test_limits_over_http_1_1() -> None:
    """RFC 9110 §15.5.14: a body over max_body_bytes is 413, refused from its Content-Length before a
    backend sees it, or once a chunked body grows past it; RFC 6585 §5: header fields over
    max_header_bytes are 431. Each refusal closes the connection (its framing is unknown)."""
    async with running("a") as (a,):
        flags = l7_config([a.address], max_body_bytes=1000, max_header_bytes=1024)
        table = {"max_body_bytes": 1000, "max_header_bytes": 1024}
        assert flags.limits == config({"default": [a]}, limits=table).limits

        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"x" * 300

        async with serving(flags) as lb, httpx.AsyncClient() as client:
            assert problem(await client.post(url(lb, "/x"), content=b"x" * 1001), 413)
            assert problem(await client.get(url(lb, "/x"), headers={"x-big": "x" * 1500}), 431)
            assert a.requests == 0
            assert problem(await client.post(url(lb, "/x"), content=pieces()), 413)
            fits = await client.post(url(lb, "/x"), content=b"x" * 1000)
            assert fits.text == hashlib.sha256(b"x" * 1000).hexdigest()
            assert fits.headers["connection"] == "keep-alive"
            assert problem(await client.post(url(lb, "/x"), content=b"x" * 1001), 413)


async def test_a_pipelined_request_before_a_refused_one_is_answered() -> None:
    """RFC 9112 §9.3.2: pipelined requests are answered in order, so a valid GET is answered even
    when the request after it, arriving in the same read, is refused (413)."""
    async with running("a") as (a,), serving(l7_config([a.address], max_body_bytes=1000)) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        writer.write(
            b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"\r\n\r\naHTTP/1.1 413 " in answer, answer


async def test_limits_over_http_2() -> None:
    """RFC 9113 §8.1: over HTTP/2 the same limits answer 413 and 431 on their stream."""
    async with running("a") as (a,):
        flags = l7_config([a.address], max_body_bytes=1000, max_header_bytes=1024)
        async with serving(flags) as lb, h2_client(lb.address[1]) as client:

            async def status(stream_id: int) -> int:
                response = await client.next(ResponseReceived, stream_id)
                return int(dict(response.headers)[b":status"])

            declared = client.request(
                b"/x", method=b"POST", fields=[(b"content-length", b"4000")], end_stream=False
            )
            await client.flush()
            assert await status(declared) == 413
            streamed = client.request(b"/x", method=b"POST", end_stream=False)
            await client.send_body(streamed, b"x" * 4000, stall_s=2)
            assert await status(streamed) == 413
            big = client.request(b"/x", fields=[(b"x-big", b"x" * 1500)])
            await client.flush()
            assert await status(big) == 431
            good = client.request(b"/x")
            await client.flush()
            assert await status(good) == 200
            await client.next(StreamEnded, good)
            assert client.bodies[good] == b"a"


class CurlAnswer(NamedTuple):
    code: int
    version: str
    fields: dict[str, str]
    body: str
    err: str


async def curl(target: str, *args: str) -> CurlAnswer:
    """curl as a user runs it, with the response's fields and the HTTP version it used."""
    code, out, err = await run(
        tool("curl"), "-sS", "--max-time", "20", "-D", "-", "-w", "\n%{http_version}", *args, target
    )
    head, _, rest = out.decode().partition("\r\n\r\n")
    body, _, version = rest.rpartition("\n")
    fields = dict(line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    return CurlAnswer(code, version, fields, body, err)


async def test_tls_termination_with_alpn_h2_and_http_1_1(tmp_path: Path) -> None:
    """RFC 7301: one TLS listener serves h2 and http/1.1 by ALPN with our CA's certificate; the backend
    is told the client came over https (X-Forwarded-Proto); a client not trusting the CA fails."""
    async with running("a") as (a,):
        tls = {"names": ["localhost", "127.0.0.1"], "ca_dir": str(tmp_path / "ca")}
        async with serving(config({"default": [a]}, tls=tls)) as lb:
            ca = str(tmp_path / "ca" / "ca.pem")
            for name in ("localhost", "127.0.0.1"):
                base = f"https://{name}:{lb.address[1]}"
                for option, version in (("--http1.1", "1.1"), ("--http2", "2")):
                    answer = await curl(f"{base}/x", option, "--cacert", ca)
                    assert (answer.code, answer.version, answer.body) == (0, version, "a"), answer
                    assert answer.fields["x-seen-x-forwarded-proto"] == "https"
            untrusting = await curl(f"https://localhost:{lb.address[1]}/x")
            assert untrusting.code == 60, untrusting  # SSL certificate problem
            events = await asyncio.create_subprocess_exec(
                tool("curl"), "-sSN", "--http2", "--cacert", ca, f"https://localhost:{lb.address[1]}/events",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert events.stdout is not None
            arrived = []
            while line := await events.stdout.readline():
                if line.startswith(b"data: "):
                    arrived.append(time.monotonic())
            assert await events.wait() == 0
            assert len(arrived) == 3
            assert arrived[1] - arrived[0] > SSE_GAP_S * 0.5
            assert arrived[2] - arrived[1] > SSE_GAP_S * 0.5


async def h2load(*args: str) -> str:
    """h2load's report, once it checked that every request was answered 2xx."""
    code, out, err = await run(tool("h2load"), *args)
    report = out.decode()
    assert code == 0, err
    done = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, 0 failed, 0 errored", report
    )
    assert done and done.group(1) == done.group(2) == done.group(3), report
    assert re.search(rf"status codes: {done.group(1)} 2xx, 0 3xx, 0 4xx, 0 5xx", report), report
    return report


async def test_h2c_prior_knowledge_reuses_backend_connections(tmp_path: Path) -> None:
    """RFC 9113 §3.3: HTTP/2 in clear with prior knowledge; 5000 streams on 4 connections ride on
    pooled keep-alive backend connections; a 4 MiB upload reaches the backend intact."""
    async with running("a", "b") as backends, balancer(*backends) as lb:
        answer = await curl(url(lb, "/x"), "--http2-prior-knowledge")
        assert (answer.code, answer.version) == (0, "2"), answer
        assert answer.body in ("a", "b")
        await h2load("-n", "5000", "-c", "4", "-m", "10", url(lb, "/x"))
        assert lb.upstreams.opened <= 2 * 4 * 10  # some tens for 5000 requests: kept alive
        upload = tmp_path / "upload"
        upload.write_bytes(PIECE * 64)
        posted = await curl(url(lb, "/upload"), "--http2-prior-knowledge", "--data-binary", f"@{upload}")
        assert (posted.code, posted.version) == (0, "2"), posted
        assert posted.body == hashlib.sha256(PIECE * 64).hexdigest()


async def test_a_backend_killed_under_h2load_costs_no_request() -> None:
    """h2load keeps 40 streams busy over HTTP/2; one of two backends dies in the middle: every GET
    is still answered 2xx (retried on the other) and the dead one is ejected."""
    async with running("a", "b") as backends, balancer(*backends) as lb:
        load = asyncio.create_task(h2load("-n", "6000", "-c", "4", "-m", "10", url(lb, "/x")))
        await asyncio.sleep(1.0)
        assert not load.done()
        await backends[1].stop()
        await load
        pool = lb.pools["default"]
        assert pool.state(pool.backends[1]) is State.EJECTED
        assert lb.metrics.retries >= 1
