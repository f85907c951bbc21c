"""`wirelab fetch --http 3` against caddy (quic-go) serving the gallery, and QUIC connection migration
against aioquic's server: caddy announces disable_active_migration, so the client must stay put
there, while aioquic's server follows a client to its new address."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.clients.fetch_peers import BIG, Caddy, Gallery, make_gallery, run_caddy
from tests.clients.h3_server import h3_file_server
from wirelab.clients.fetch import FetchError, TraceEvent, fetch, fetch_page
from wirelab.testing import free_port

PAGE_REQUESTS = 103


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    return make_gallery(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="module")
def caddy(gallery: Gallery, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caddy]:
    yield from run_caddy(gallery, tmp_path_factory.mktemp("caddy"))


async def test_h3_page_is_one_quic_connection_and_one_handshake(caddy: Caddy, gallery: Gallery) -> None:
    events: list[TraceEvent] = []
    url = f"https://127.0.0.1:{caddy.port}/"
    page = await fetch_page(url, http="3", cafile=gallery.ca, tracer=events.append)
    assert page.statuses == (200,) * PAGE_REQUESTS
    assert page.connections == page.handshakes == 1
    assert page.connection_stats[0].protocol == "h3"
    for exchange in page.exchanges[1:]:
        assert exchange.sha256 == gallery.digest(exchange.path)
    heads = [e.text for e in events if e.direction == "send" and e.text.startswith("HTTP/3 HEADERS")]
    assert len(heads) == PAGE_REQUESTS
    assert sum(e.text.startswith("initial packet") for e in events if e.direction == "send") >= 1


async def test_h3_carries_16_mib_whole(caddy: Caddy, gallery: Gallery) -> None:
    result = await fetch(f"https://127.0.0.1:{caddy.port}/big.bin", http="3", cafile=gallery.ca)
    assert result.status == 200
    assert result.body_bytes == result.content_length == BIG
    assert result.sha256 == gallery.digest("/big.bin")
    assert result.handshakes == 1 and result.handshake_ms is not None
    assert BIG < result.bytes_on_wire < BIG * 1.05


async def test_the_client_does_not_migrate_when_the_server_forbids_it(
    caddy: Caddy, gallery: Gallery
) -> None:
    """RFC 9000 §9 and §18.2: with disable_active_migration (quic-go's), the client keeps its address;
    the transfer completes."""
    url = f"https://127.0.0.1:{caddy.port}/big.bin"
    result = await fetch(url, http="3", cafile=gallery.ca, migrate_after=1)
    assert result.migration_disabled and result.migration is None
    assert result.sha256 == gallery.digest("/big.bin")


async def test_migration_to_a_new_port_mid_transfer(gallery: Gallery) -> None:
    """RFC 9000 §9: after the first body bytes the client sends from a new UDP port with a new
    connection ID; the server validates the path (PATH_CHALLENGE, PATH_RESPONSE) and the 16 MiB
    complete on it. (Against aioquic's server: caddy forbids migration, see above.)"""
    events: list[TraceEvent] = []
    async with h3_file_server(gallery.root, gallery.cert, gallery.key, free_port()) as port:
        url = f"https://127.0.0.1:{port}/big.bin"
        result = await fetch(url, http="3", cafile=gallery.ca, migrate_after=1, tracer=events.append)
    assert result.migration is not None
    assert result.migration.from_port != result.migration.to_port
    assert result.connection_stats[0].local_port == result.migration.to_port
    assert result.path_challenges >= 1
    assert result.body_bytes == BIG and result.sha256 == gallery.digest("/big.bin")
    sent = [e.text for e in events if e.direction == "send"]
    assert any("path_response" in text for text in sent)
    assert any("retire_connection_id" in text for text in sent)


async def test_nothing_on_the_udp_port_is_a_handshake_timeout(gallery: Gallery) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(
            FetchError, match=r"QUIC handshake with 127\.0\.0\.1:\d+ did not complete within 0\.5s"
        ):
            await fetch(f"https://127.0.0.1:{port}/", http="3", cafile=gallery.ca, timeout_s=0.5)


async def test_an_untrusted_certificate_fails_the_quic_handshake(caddy: Caddy) -> None:
    with pytest.raises(FetchError, match=r"QUIC handshake .* failed \(trusting the system's CAs\)"):
        await fetch(f"https://127.0.0.1:{caddy.port}/", http="3")


async def test_a_response_without_a_body_ends_with_its_head(caddy: Caddy, gallery: Gallery) -> None:
    """HTTP/3: the HEADERS frame of a 404 without content ends the stream (FIN) by itself."""
    result = await fetch(f"https://127.0.0.1:{caddy.port}/missing", http="3", cafile=gallery.ca)
    assert (result.status, result.body_bytes) == (404, 0)
