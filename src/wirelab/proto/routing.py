"""Request routing for the layer 7 balancer: which named pool of backends serves a host and a path.

Theory of operation: a `Route` names a host (exact, a `*.example.com` wildcard, or none for any host),
a path prefix and a pool. A request matches a route when both match; of the routes it matches, the
one with the most specific host wins (exact, then the longest wildcard suffix, then no host), and
within the same host the longest path prefix. So a request for a host whose own routes cover none of
its path falls through to the wildcard and host-less routes, as it would if those were the only ones.

Hosts compare case-insensitively and without the Host field's port (the listener already chose the
port) or a trailing dot. A wildcard stands for one or more labels: `*.example.com` matches
`a.example.com` and `a.b.example.com`, not `example.com`. A prefix matches at segment boundaries
only: `/api` matches `/api`, `/api/`, `/api/x` and `/api?q`, never `/apix`; `/api/` requires the
slash; `/` matches every target, including `*` and the absolute form. The query is not part of the
path, and the path is compared as sent (no percent-decoding or dot-segment removal: routing picks
where a request goes, it is no access control).

Matching runs per request, so `RouteTable` precomputes a dictionary of prefixes per host: a match
costs one dictionary lookup per host rank per segment boundary of the path (bounded by the longest
prefix configured), whatever the number of routes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from wirelab.errors import ConfigError

__all__ = ["Route", "RouteTable"]

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_PREFIX = re.compile(r"/[\x21-\x22\x24-\x3e\x40-\x7e]*")  # origin-form path characters, no ? or #


@dataclass(frozen=True, slots=True)
class Route:
    """Requests for `host` (None: any host) whose path starts with `path_prefix` go to `pool`.

    An invalid route raises ConfigError naming the field (`path_prefix: ...`), so that a loader can
    put the route's own key in front of it (`routes[2].path_prefix: ...`).
    """

    host: str | None
    path_prefix: str
    pool: str

    def __post_init__(self) -> None:
        if self.host is not None and not _valid_host(self.host):
            raise ConfigError(
                f"host: {self.host!r} is not a host name, *.suffix, IPv4 or [IPv6] address (no port)"
            )
        if not _PREFIX.fullmatch(self.path_prefix):
            raise ConfigError(f"path_prefix: {self.path_prefix!r} must start with / and hold no ? or #")
        if not self.pool:
            raise ConfigError("pool: must name a pool")


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The routes, precomputed for matching; two tables are equal when their routes are."""

    routes: tuple[Route, ...]
    _exact: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False)
    _wildcard: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False)
    _any: dict[str, str] = field(init=False, repr=False, compare=False)
    _longest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse two routes with the same host and prefix: one of them could never be reached."""
        exact: dict[str, dict[str, str]] = {}
        wildcard: dict[str, dict[str, str]] = {}
        anyhost: dict[str, str] = {}
        seen: dict[tuple[str | None, str], int] = {}
        for index, route in enumerate(self.routes):
            host = None if route.host is None else route.host.lower()
            earlier = seen.setdefault((host, route.path_prefix), index)
            if earlier != index:
                raise ConfigError(f"routes[{index}]: the same host and path_prefix as routes[{earlier}]")
            if host is None:
                prefixes = anyhost
            elif host.startswith("*."):
                prefixes = wildcard.setdefault(host[2:], {})
            else:
                prefixes = exact.setdefault(host, {})
            prefixes[route.path_prefix] = route.pool
        longest = max((len(route.path_prefix) for route in self.routes), default=0)
        derived = {"_exact": exact, "_wildcard": wildcard, "_any": anyhost, "_longest": longest}
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # derived once, here; the table stays frozen

    @property
    def pools(self) -> frozenset[str]:
        """The pools some request can reach."""
        return frozenset(route.pool for route in self.routes)

    def match(self, host: bytes | str, path: bytes | str) -> str | None:
        """The pool for a request's Host (b"" if it has none) and target, or None if no route matches."""
        if isinstance(host, bytes):
            host = host.decode("latin-1")
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        candidates = list(_boundaries(path.partition("?")[0], self._longest))
        for prefixes in self._ranked(_request_host(host)):
            for candidate in candidates:
                pool = prefixes.get(candidate)
                if pool is not None:
                    return pool
        return None

    def _ranked(self, host: str) -> Iterator[dict[str, str]]:
        """The prefix tables that apply to `host`, most specific first."""
        if host in self._exact:
            yield self._exact[host]
        suffix = host
        while "." in suffix:
            suffix = suffix.partition(".")[2]
            if suffix in self._wildcard:
                yield self._wildcard[suffix]
        yield self._any


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _NAME.fullmatch(host.removeprefix("*.")) is not None


def _request_host(host: str) -> str:
    """The Host field's host, lowercased, without its port or a trailing dot; "" for none."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0].removesuffix(".")


def _boundaries(path: str, longest: int) -> Iterator[str]:
    """The prefixes of `path` ending at a segment boundary, longest first, none longer than `longest`."""
    if not path.startswith("/"):  # "*" (OPTIONS) or the absolute form: only "/" covers it
        yield "/"
        return
    if len(path) <= longest:
        yield path
    slash = path.rfind("/", 0, longest + 1)
    while slash >= 0:
        if slash + 1 < len(path):
            yield path[: slash + 1]
        if slash:
            yield path[:slash]
        slash = path.rfind("/", 0, slash)
