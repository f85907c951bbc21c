"""Store URLs: the part a driver understands, the part that is ours, and the part safe to print."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from wirelab.errors import ConfigError

__all__ = ["redacted", "split_schema"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def redacted(url: str) -> str:
    """`url` without its password, so that it can go into logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}{at}{hostport}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def split_schema(url: str, *, default: str = "public") -> tuple[str, str]:
    """The URL for the driver, and the schema named by `?schema=NAME` (ours: a driver would pass it on
    to the server as a setting, which the server refuses)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else default
    if not _IDENTIFIER.fullmatch(schema):
        raise ConfigError(f"store: schema {schema!r} in {redacted(url)} is not a plain SQL identifier")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema
