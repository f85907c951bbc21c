"""`wirelab up --http 1.1,2,3`'s HTTP/3 (our aioquic adapter, h3server) against independent clients:
libcurl (ngtcp2 + nghttp3, through pycurl), ngtcp2's own client, and our fetch client moving to a new
UDP port mid-transfer; a 16 MiB body through 3 % loss each way; Alt-Svc pointing at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import VersionsServer
from tests.interop.h3_peers import blob, curl_h3, gtlsclient
from wirelab.clients.fetch import fetch
from wirelab.net.impair import impair_udp
from wirelab.proto.impair import Impairment

pytestmark = pytest.mark.interop

BIG = 16 << 20


def test_curl_fetches_the_gallery_and_a_thumbnail_over_h3(versions: VersionsServer) -> None:
    """RFC 9114 §3: libcurl with HTTP/3 only (no TCP fallback) gets the same bytes HTTP/1.1 does."""
    import pycurl

    for path in ("/gallery", "/gallery/thumbs/042.png"):
        response = curl_h3(versions.tls_url + path, ca=versions.ca)
        assert response.status == 200
        assert response.http_version == pycurl.CURL_HTTP_VERSION_3
        assert response.headers.startswith("HTTP/3 200")
        assert response.body == httpx.get(versions.url + path).content


def test_ngtcp2_fetches_several_urls_on_one_quic_connection(
    versions: VersionsServer, tmp_path: Path
) -> None:
    """RFC 9114 §4.1: one request per bidirectional stream, all on one connection (one handshake)."""
    thumbs = [f"/gallery/thumbs/{n:03d}.png" for n in (0, 7, 99)]
    done = gtlsclient(versions.tls_port, [*thumbs, "/gallery/blob/1048576"], download=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert (done.stdout + done.stderr).count("QUIC handshake has completed") == 1
    assert (tmp_path / "1048576").read_bytes() == blob(1 << 20)
    for path in thumbs:
        assert (tmp_path / Path(path).name).read_bytes() == httpx.get(versions.url + path).content


async def test_16_mib_through_3_percent_loss_each_way(versions: VersionsServer) -> None:
    """RFC 9002: QUIC's loss recovery carries a 16 MiB body whole through a link that drops 3 % of the
    datagrams each way (and delays them 2 ms); the proxy's counters show it really dropped them."""
    up = Impairment(delay_s=0.002, loss=0.03, seed=1)
    down = Impairment(delay_s=0.002, loss=0.03, seed=2)
    async with impair_udp(("127.0.0.1", 0), ("127.0.0.1", versions.tls_port), up=up, down=down) as proxy:
        url = f"https://127.0.0.1:{proxy.address[1]}/gallery/blob/{BIG}"
        response = await asyncio.to_thread(curl_h3, url, ca=versions.ca, timeout_s=120)
    print(f"16 MiB over h3 through 3 % loss: {response.seconds:.2f}s")
    assert response.status == 200
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(blob(BIG)).digest()
    sent, acks = proxy.down.statistics(), proxy.up.statistics()
    assert sent.admitted > BIG // 1500 and sent.dropped > sent.admitted * 0.02
    assert acks.dropped > 0


async def test_our_client_migrates_to_a_new_port_mid_transfer(versions: VersionsServer) -> None:
    """RFC 9000 §9: after the first body bytes our client sends from a new UDP port; the server
    validates the new path, follows the connection to it (its log says so) and the 16 MiB complete."""
    url = f"{versions.tls_url}/gallery/blob/{BIG}"
    result = await fetch(url, http="3", cafile=versions.ca, migrate_after=1, timeout_s=60)
    assert result.status == 200
    assert result.body_bytes == BIG and result.sha256 == hashlib.sha256(blob(BIG)).hexdigest()
    migration = result.migration
    assert migration is not None and migration.from_port != migration.to_port
    assert 0 < migration.at_bytes < BIG
    assert result.connection_stats[0].local_port == migration.to_port
    assert result.path_challenges >= 1
    moved = f"moved from 127.0.0.1:{migration.from_port} to 127.0.0.1:{migration.to_port}"
    assert moved in versions.process.log_path.read_text()  # logged when the move came, mid-transfer


def test_ngtcp2_migrates_to_a_new_address_mid_transfer(versions: VersionsServer, tmp_path: Path) -> None:
    """RFC 9000 §9 with another client's stack: ngtcp2 moves to a new local port 20 ms after the
    handshake (a 16 MiB body takes far longer over aioquic), validates the path, and the body arrives
    whole; the server logs the move to the port ngtcp2 reports."""
    path = f"/gallery/blob/{BIG}"
    done = gtlsclient(versions.tls_port, [path], download=tmp_path, options=["--change-local-addr=20ms"])
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    moved = re.search(r"Local address is now \[127\.0\.0\.1\]:(\d+)", done.stdout + done.stderr)
    assert moved is not None
    assert hashlib.sha256((tmp_path / str(BIG)).read_bytes()).digest() == hashlib.sha256(blob(BIG)).digest()
    assert f"to 127.0.0.1:{moved[1]}" in versions.process.log_path.read_text()


def test_alt_svc_on_the_tls_port_advertises_h3_on_the_same_port(versions: VersionsServer) -> None:
    """RFC 7838 §3 and RFC 9114 §3.1.1: the TCP answer names the UDP port where HTTP/3 listens."""
    context = ssl.create_default_context(cafile=versions.ca)
    response = httpx.get(versions.tls_url + "/healthz", verify=context)
    assert response.status_code == 200
    assert response.headers["alt-svc"] == f'h3=":{versions.tls_port}"; ma=3600'
