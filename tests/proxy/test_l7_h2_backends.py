"""`wirelab lb l7` speaking HTTP/2 to its backends (a pool's `protocol = "h2c"`), over real connections:
nginx over h2c, trailers both ways (what gRPC needs to be balanced per request), a backend killed
under h2load, and the pool's configuration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from tests.http.test_h2server import tool
from tests.proxy.h2_upstream_server import H2TestServer
from tests.proxy.l7_backends import serving, url
from tests.proxy.test_l7_features import h2load
from tests.proxy.test_sidecar import Nginx, nginx  # noqa: F401  (the module's nginx fixture)
from tests.proxy.test_trailers import _check, _get_http11, _post_chunked_with_trailers
from wirelab.errors import ConfigError
from wirelab.proto.balance import State
from wirelab.proxy.l7 import L7Balancer
from wirelab.proxy.l7config import load_l7_config


def _config(backends: list[str], protocol: str = "h2c", **pool: object) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:0",
        "connect_timeout": 1.0,
        "pools": {
            "default": {"protocol": protocol, "backends": [{"address": a} for a in backends], **pool}
        },
    }


@asynccontextmanager
async def _balancer(*ports: int) -> AsyncIterator[L7Balancer]:
    config = load_l7_config(None, _config([f"127.0.0.1:{port}" for port in ports]))
    async with serving(config) as lb:
        yield lb


@asynccontextmanager
async def _h2_backends(count: int) -> AsyncIterator[list[H2TestServer]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(H2TestServer()) for _ in range(count)]


async def test_nginx_over_h2c_serves_http11_clients_on_one_connection(nginx: Nginx) -> None:  # noqa: F811
    """Twenty HTTP/1.1 client connections, one HTTP/2 connection to nginx (its `$connection` log)."""
    nginx.log.write_text("")
    async with _balancer(nginx.h2c_port) as lb:

        async def one() -> httpx.Response:
            async with httpx.AsyncClient() as client:  # a connection of its own
                return await client.get(url(lb, "/x"))

        answers = await asyncio.gather(*(one() for _ in range(20)))
    assert {(a.status_code, a.text) for a in answers} == {(200, "hello")}
    assert all(a.headers["via"] == "2 wirelab" for a in answers)
    lines = nginx.log.read_text().split("\n")
    seen = [line.split() for line in lines if line]
    assert {fields[0] for fields in seen} == {"HTTP/2.0"}
    assert len({fields[1] for fields in seen}) == 1  # one upstream connection for all twenty


async def test_trailers_cross_an_h2c_pool_both_ways() -> None:
    async with _h2_backends(1) as (server,), _balancer(server.port) as lb:
        _check(await _get_http11(lb.address[1], "/trailers"))
        head, body = await _post_chunked_with_trailers(lb.address[1], "/")
    assert head.status == 200
    assert json.loads(body)["trailers"] == {"x-checksum": "abc123", "x-count": "5"}


async def test_the_forwarding_fields_reach_an_h2c_backend_with_the_host_as_authority() -> None:
    async with _h2_backends(1) as (server,), _balancer(server.port) as lb, httpx.AsyncClient() as client:
        answer = await client.get(url(lb, "/who"), headers={"host": "shop.example", "te": "trailers"})
    fields = answer.json()["headers"]
    assert fields[":authority"] == "shop.example" and "host" not in fields
    assert fields["x-forwarded-for"] == "127.0.0.1"
    assert fields["via"] == "1.1 wirelab"
    assert fields["te"] == "trailers"


async def test_a_backend_killed_under_h2load_costs_no_request() -> None:
    """HTTP/2 on both sides; one of two backends dies mid-run: every GET is still answered 2xx
    (retried on the other) and the dead one is ejected."""
    tool("h2load")
    async with _h2_backends(2) as servers, _balancer(*(s.port for s in servers)) as lb:
        load = asyncio.create_task(h2load("-n", "6000", "-c", "4", "-m", "10", url(lb, "/x")))
        await asyncio.sleep(1.0)
        assert not load.done()
        await servers[1].__aexit__()
        await load
        pool = lb.pools["default"]
        assert pool.state(pool.backends[1]) is State.EJECTED
        assert lb.metrics.retries >= 1
        assert servers[0].connections == 1  # every stream on one multiplexed connection


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        ({"protocol": "h3"}, "pools.default.protocol: 'h3' is not http/1.1, h2c, h2"),
        ({"protocol": "h2c", "cacert": "ca.pem"}, "pools.default.cacert: only a pool with protocol h2"),
    ],
)
def test_a_bad_protocol_is_named(pool: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_l7_config(None, _config(["127.0.0.1:9"], **pool))  # type: ignore[arg-type]


async def test_an_h2_pool_reaches_nginx_over_tls_with_its_ca(nginx: Nginx) -> None:  # noqa: F811
    """protocol h2: TLS with ALPN h2, the certificate checked against the pool's cacert."""
    config = _config([f"127.0.0.1:{nginx.tls_port}"], protocol="h2", cacert=str(nginx.ca))
    async with serving(load_l7_config(None, config)) as lb, httpx.AsyncClient() as client:
        answer = await client.get(url(lb, "/x"))
    assert (answer.status_code, answer.text) == (200, "hello over tls")
    assert answer.headers["via"] == "2 wirelab"


async def test_an_h2_pool_refuses_a_certificate_it_cannot_check(nginx: Nginx) -> None:  # noqa: F811
    """Without the lab's CA the system's CAs do not know nginx's certificate: a 503, never plain text."""
    config = _config([f"127.0.0.1:{nginx.tls_port}"], protocol="h2")
    async with serving(load_l7_config(None, config)) as lb, httpx.AsyncClient() as client:
        answer = await client.get(url(lb, "/x"))
    assert answer.status_code in (502, 503)
    assert answer.headers["content-type"] == "application/problem+json"


async def test_a_reload_that_changes_a_pools_protocol_is_followed() -> None:
    """The same backend address, h2c then h2: after the reload the balancer speaks TLS to it (which
    this plain HTTP/2 server cannot answer), not the connection it had."""
    async with _h2_backends(1) as (server,):
        backends = [f"127.0.0.1:{server.port}"]
        async with serving(load_l7_config(None, _config(backends))) as lb, httpx.AsyncClient() as client:
            assert (await client.get(url(lb, "/x"))).status_code == 200
            lb.reload(load_l7_config(None, _config(backends, protocol="h2")))
            refused = await client.get(url(lb, "/x"))
    assert refused.status_code in (502, 503)
    assert refused.headers["content-type"] == "application/problem+json"
