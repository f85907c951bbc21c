"""TLS for Wirelab's servers and clients, with certificates from a certificate authority of our own.

Theory of operation: the first server that needs TLS creates a CA in the data directory (`ca.pem`,
what clients trust, and `ca-key.pem`, mode 0600) and issues itself a leaf certificate for the names it
serves. Nothing is installed system-wide: a client trusts the lab by pointing at `ca.pem`
(`curl --cacert .wirelab/ca/ca.pem ...`, or `client_context(ca.cert_path)`).

Several processes (a balancer, its backends, a sidecar) may start at once on one data directory, so
every change to it happens under an exclusive flock on `directory/.lock`, and every file is written
to a temporary name and renamed into place: a process sees either no file or a whole one, and all of
them end up with the same CA. A leaf is kept under `directory/leaf/`, named after its first name, and
reused while it still covers the names asked for, was signed by this CA and has more than a day left.

Keys are ECDSA P-256: small, fast to make, accepted by every client we test against. The contexts
allow TLS 1.2 and 1.3 with ECDHE and AEAD ciphers only, which is also what HTTP/2 requires of TLS 1.2
(RFC 9113 §9.2.2), and advertise ALPN so one listener can serve h2 and http/1.1.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wirelab.errors import ConfigError

__all__ = ["CIPHERS", "CertificateAuthority", "client_context", "server_context"]

_CA_LIFETIME = datetime.timedelta(days=3650)
_LEAF_LIFETIME = datetime.timedelta(days=90)
_RENEW_BEFORE = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(hours=1)  # tolerate a peer whose clock is a little behind ours
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 only; TLS 1.3 suites are all AEAD

T = TypeVar("T")
GeneralName = x509.DNSName | x509.IPAddress


class CertificateAuthority:
    """The lab's CA: `cert_path` is what clients trust; `issue` makes server certificates."""

    def __init__(
        self, directory: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca-key.pem"
        self.certificate = certificate
        self._key = key

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA in `directory`, made there first if it has none (ca.pem being there means it is whole)."""
        with _locked(directory):
            if not (directory / "ca.pem").exists():
                _create_ca(directory)
            return cls._load(directory)

    @classmethod
    def _load(cls, directory: Path) -> CertificateAuthority:
        fix = f"remove {directory} to have a new CA made (clients must then trust its new ca.pem)"
        certificate = _read(directory / "ca.pem", x509.load_pem_x509_certificate, fix)
        key = _read(directory / "ca-key.pem", _private_key, fix)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != certificate.public_key():
            raise ConfigError(f"{directory / 'ca-key.pem'}: not the key of {directory / 'ca.pem'}; {fix}")
        return cls(directory, certificate, key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as browsers and `openssl x509 -fingerprint -sha256` show it."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    def issue(self, names: Sequence[str]) -> tuple[Path, Path]:
        """(cert, key) paths of a server certificate for DNS names and IP addresses, made if need be."""
        if isinstance(names, str):  # a str is a Sequence[str] too: one letter per name
            raise TypeError(f"issue() takes a list of names, not the string {names!r}")
        wanted = [_general_name(name) for name in dict.fromkeys(names)]
        if not wanted:
            raise ConfigError("a certificate needs at least one DNS name or IP address")
        leaves = self.directory / "leaf"
        stem = re.sub(r"[^A-Za-z0-9.-]", "_", str(wanted[0].value))
        cert_path, key_path = leaves / f"{stem}.pem", leaves / f"{stem}-key.pem"
        with _locked(leaves):
            if not self._covers(cert_path, key_path, wanted):
                key = ec.generate_private_key(ec.SECP256R1())
                _write(key_path, _key_pem(key), 0o600)
                _write(cert_path, self._sign_leaf(key.public_key(), wanted), 0o644)
        return cert_path, key_path

    def _covers(self, cert_path: Path, key_path: Path, wanted: list[GeneralName]) -> bool:
        """Whether the leaf on disk can serve `wanted`; a missing or damaged one simply cannot."""
        try:
            leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = _private_key(key_path.read_bytes())
            leaf.verify_directly_issued_by(self.certificate)
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
            return False
        fresh = leaf.not_valid_after_utc - _now() > _RENEW_BEFORE
        return fresh and key.public_key() == leaf.public_key() and all(name in names for name in wanted)

    def _sign_leaf(self, public_key: ec.EllipticCurvePublicKey, names: list[GeneralName]) -> bytes:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(names[0].value)[:64])])
        builder = (
            _builder(subject, self.certificate.subject, public_key, _LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def server_context(cert: Path, key: Path, *, alpn: Sequence[str] = ("h2", "http/1.1")) -> ssl.SSLContext:
    """A context for listeners serving `cert` (its PEM may hold the chain after it) with `key`."""
    # ssl's own errors do not say which file is wrong ("PEM lib"), so each one is read here first.
    _read(cert, x509.load_pem_x509_certificates, "give a PEM certificate")
    _read(key, _private_key, "give an unencrypted PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _blame(f"{cert} and {key}", "the key must be the certificate's"):
        context.load_cert_chain(cert, key)
    return _configure(context, alpn)


def client_context(
    cafile: Path | None = None, *, alpn: Sequence[str] = ("h2", "http/1.1")
) -> ssl.SSLContext:
    """A context that checks the server's certificate and name against `cafile` (else the system's CAs)."""
    if cafile is None:
        return _configure(ssl.create_default_context(), alpn)
    with _blame(str(cafile), "give the CA's certificate (PEM), such as .wirelab/ca/ca.pem"):
        return _configure(ssl.create_default_context(cafile=cafile), alpn)


def _configure(context: ssl.SSLContext, alpn: Sequence[str]) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION  # RFC 9113 §9.2.1
    context.set_alpn_protocols(list(alpn))
    return context


def _create_ca(directory: Path) -> None:
    """Key first, certificate last: the certificate's presence is what says the CA is complete."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wirelab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Wirelab local CA"),
        ]
    )
    builder = (
        _builder(name, name, key.public_key(), _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    )
    certificate = builder.sign(key, hashes.SHA256())
    _write(directory / "ca-key.pem", _key_pem(key), 0o600)
    _write(directory / "ca.pem", certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> GeneralName:
    """An IP address where `name` parses as one (clients match IPs only against IPAddress entries)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not re.fullmatch(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", name):
        raise ConfigError(f"{name!r} is neither a DNS name (ASCII; punycode for others) nor an IP address")
    return x509.DNSName(name.lower())


def _private_key(data: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(data, password=None)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read(path: Path, parse: Callable[[bytes], T], fix: str) -> T:
    with _blame(str(path), fix):
        return parse(path.read_bytes())


@contextlib.contextmanager
def _blame(what: str, fix: str) -> Iterator[None]:
    """Turn a failure to read or parse into a ConfigError that names the file and what to do."""
    try:
        yield
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file; {fix}") from None
    except (OSError, ValueError, TypeError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"{what}: unusable ({exc}); {fix}") from None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold `directory/.lock` exclusively, making the directory (mode 0700: it holds keys) if need be."""
    with _blame(str(directory), "the CA needs a directory it can write"):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
