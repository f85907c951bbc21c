"""Our CA and TLS contexts, over loopback with real peers: Python's ssl, curl and openssl."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from wirelab.cli import main
from wirelab.errors import ConfigError
from wirelab.net.tls import CertificateAuthority, client_context, server_context

NAMES = ["localhost", "127.0.0.1"]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca")


@pytest.fixture
async def port(ca: CertificateAuthority) -> AsyncIterator[int]:
    """A TLS server for NAMES that answers one HTTP/1.1 request, then closes."""
    server = await asyncio.start_server(_answer, "127.0.0.1", 0, ssl=server_context(*ca.issue(NAMES)))
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, OSError):
        pass  # a client that only shook hands, or refused our certificate
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _handshake(port: int, context: ssl.SSLContext, name: str) -> tuple[str | None, str | None]:
    """(ALPN protocol, TLS version) of a connection to 127.0.0.1 that checks the certificate for `name`."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name)
    tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
    negotiated = tls.selected_alpn_protocol(), tls.version()
    await _close(writer)
    return negotiated


def _sans(cert: Path) -> list[str]:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_the_ca_is_made_once_then_reused_with_private_keys(ca: CertificateAuthority) -> None:
    again = CertificateAuthority.load_or_create(ca.directory)
    assert again.fingerprint == ca.fingerprint
    assert ca.cert_path == ca.directory / "ca.pem"
    assert (ca.directory.stat().st_mode & 0o777) == 0o700
    cert, key = ca.issue(NAMES)
    assert (ca.key_path.stat().st_mode & 0o777) == 0o600
    assert (key.stat().st_mode & 0o777) == 0o600
    assert _sans(cert) == NAMES
    authority = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert authority.critical and authority.value.ca


_RACE = """
import sys, time
from pathlib import Path
from wirelab.net.tls import CertificateAuthority
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
print(CertificateAuthority.load_or_create(Path(sys.argv[1])).fingerprint)
"""


def test_processes_starting_at_once_end_up_with_one_ca(tmp_path: Path) -> None:
    go = tmp_path / "go"
    command = [sys.executable, "-c", _RACE, str(tmp_path / "ca"), str(go)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for process in processes:  # all imported, so they reach load_or_create within a millisecond
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        go.touch()
        fingerprints = {process.communicate(timeout=60)[0].strip() for process in processes}
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert fingerprints == {CertificateAuthority.load_or_create(tmp_path / "ca").fingerprint}


async def test_clients_trusting_the_ca_connect_by_name_and_by_address(
    ca: CertificateAuthority, port: int
) -> None:
    """RFC 9110 §4.3.4: the name checked is the one the client asked for; RFC 7301: ALPN picks h2."""
    context = client_context(ca.cert_path)
    assert await _handshake(port, context, "localhost") == ("h2", "TLSv1.3")
    assert await _handshake(port, context, "127.0.0.1") == ("h2", "TLSv1.3")
    http1 = client_context(ca.cert_path, alpn=["http/1.1"])
    assert await _handshake(port, http1, "localhost") == ("http/1.1", "TLSv1.3")


async def test_tls_1_2_still_negotiates_h2(ca: CertificateAuthority, port: int) -> None:
    context = client_context(ca.cert_path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _handshake(port, context, "localhost") == ("h2", "TLSv1.2")


async def test_other_names_and_clients_without_the_ca_are_refused(
    ca: CertificateAuthority, port: int
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await _handshake(port, client_context(ca.cert_path), "example.com")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        await _handshake(port, client_context(), "localhost")


async def _curl(*args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_curl_trusts_the_ca_for_http1_and_negotiates_h2(ca: CertificateAuthority, port: int) -> None:
    url = f"https://localhost:{port}/"
    resolve = f"localhost:{port}:127.0.0.1"
    common = ("--resolve", resolve, "--cacert", str(ca.cert_path))
    status, out, _ = await _curl(*common, "--http1.1", "-w", "%{http_version}", url)
    assert (status, out) == (0, "ok\n1.1")
    _, _, err = await _curl(*common, "--http2", "-v", url)
    assert "ALPN: server accepted h2" in err
    status, _, err = await _curl("--resolve", resolve, url)
    assert status == 60, err  # not trusted without --cacert


def test_openssl_verifies_a_leaf_against_the_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, _ = ca.issue(NAMES)
    verify = ["openssl", "verify", "-CAfile", str(ca.cert_path), str(cert)]
    result = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == f"{cert}: OK"
    stranger = CertificateAuthority.load_or_create(tmp_path / "other")
    verify[3] = str(stranger.cert_path)
    assert subprocess.run(verify, capture_output=True, timeout=30).returncode != 0


def test_a_leaf_is_reused_while_it_covers_the_names_and_reissued_when_they_change(
    ca: CertificateAuthority,
) -> None:
    cert, key = ca.issue(NAMES)
    issued = cert.read_bytes(), key.read_bytes()
    assert ca.issue(["LOCALHOST"]) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == issued
    assert ca.issue(["localhost", "::1"]) == (cert, key)
    assert _sans(cert) == ["localhost", "::1"]
    assert key.read_bytes() != issued[1]


def test_a_leaf_from_another_ca_is_reissued(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue(NAMES)
    ca.cert_path.unlink()  # a new CA in the same directory: the old leaves no longer chain to it
    renewed = CertificateAuthority.load_or_create(ca.directory)
    assert renewed.fingerprint != ca.fingerprint
    assert renewed.issue(NAMES)[0] == cert
    issuer = x509.load_pem_x509_certificate(renewed.cert_path.read_bytes())
    x509.load_pem_x509_certificate(cert.read_bytes()).verify_directly_issued_by(issuer)


@pytest.mark.parametrize(("days", "reused"), [(30, True), (1, False)])
def test_a_leaf_is_renewed_a_day_before_it_expires(
    ca: CertificateAuthority, days: int, reused: bool
) -> None:
    cert, key = ca.issue(["localhost"])
    openssl = ["openssl", "req", "-x509", "-CA", str(ca.cert_path), "-CAkey", str(ca.key_path)]
    openssl += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost"]
    openssl += ["-addext", "subjectAltName=DNS:localhost", "-days", str(days)]
    subprocess.run([*openssl, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    made = cert.read_bytes()
    ca.issue(["localhost"])
    assert (cert.read_bytes() == made) is reused


def test_bad_names_and_files_are_config_errors_naming_them(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        ca.issue([])
    with pytest.raises(TypeError, match="not the string 'localhost'"):
        ca.issue("localhost")
    with pytest.raises(ConfigError, match="'bad name'"):
        ca.issue(["bad name"])
    cert, key = ca.issue(NAMES)
    with pytest.raises(ConfigError, match=str(tmp_path / "missing.pem")):
        server_context(cert, tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=f"{ca.cert_path}: .* private key"):
        server_context(cert, ca.cert_path)  # a certificate where the key should be
    with pytest.raises(ConfigError, match=f"{key}: .* certificate"):
        server_context(key, key)
    with pytest.raises(ConfigError, match="must be the certificate's"):
        server_context(cert, ca.key_path)
    with pytest.raises(ConfigError, match=str(key)):
        client_context(key)
    ca.key_path.write_bytes(b"damaged")
    with pytest.raises(ConfigError, match=f"{ca.key_path}.*remove {ca.directory}"):
        CertificateAuthority.load_or_create(ca.directory)


def test_the_command_shows_the_ca_and_issues_certificates(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["ca", "--data-dir", str(tmp_path), "show"])
    assert result.exit_code == 0, result.output
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert f"sha256       {ca.fingerprint}\n" in result.output
    assert f"curl --cacert {ca.cert_path} " in result.output
    result = runner.invoke(
        main, ["ca", "issue", "localhost", "127.0.0.1"], env={"WIRELAB_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"certificate  {ca.issue(NAMES)[0]}",
        f"key          {ca.issue(NAMES)[1]}",
    ]
    result = runner.invoke(main, ["ca", "--data-dir", str(tmp_path), "issue", "a b"])
    assert result.exit_code == 2 and "'a b' is neither" in result.output
    ca.cert_path.write_bytes(b"damaged")
    result = runner.invoke(main, ["ca", "--data-dir", str(tmp_path), "show"])
    assert result.exit_code == 1 and f"{ca.cert_path}: unusable" in result.output
