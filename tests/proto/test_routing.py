"""The layer 7 routing table: host ranks, path prefixes at segment boundaries, route validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirelab.errors import ConfigError
from wirelab.proto.routing import Route, RouteTable

TABLE = RouteTable(
    (
        Route(None, "/", "web"),
        Route(None, "/api", "api"),
        Route(None, "/api/v2/", "api2"),
        Route("Shop.Example.com", "/", "shop"),
        Route("shop.example.com", "/static", "cdn"),
        Route("*.example.com", "/", "tenants"),
        Route("*.eu.example.com", "/", "eu"),
        Route("[::1]", "/", "local6"),
        Route("192.0.2.1", "/", "local4"),
    )
)


@pytest.mark.parametrize(
    ("path", "pool"),
    [
        ("/", "web"),
        ("/apix", "web"),  # not at a segment boundary
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/x", "api"),
        ("/api?q=1", "api"),
        ("/api/v2", "api"),  # the /api/v2/ prefix requires its slash
        ("/api/v2/", "api2"),
        ("/api/v2/users?id=3", "api2"),
        ("/x?/api", "web"),  # the query is not part of the path
        ("*", "web"),  # OPTIONS * : only / covers it
        ("http://other.test/api", "web"),
    ],
)
def test_the_longest_prefix_at_a_segment_boundary_wins(path: str, pool: str) -> None:
    """RFC 3986 §3.3: a path is segments separated by /; the query (§3.4) follows ?."""
    assert TABLE.match("other.test", path) == pool


@pytest.mark.parametrize(
    ("host", "path", "pool"),
    [
        ("shop.example.com", "/", "shop"),
        ("SHOP.EXAMPLE.COM:8443", "/static/a.css", "cdn"),  # case and port do not matter
        ("shop.example.com.", "/", "shop"),  # nor the root's trailing dot
        ("a.example.com", "/", "tenants"),
        ("a.b.example.com", "/api", "tenants"),  # a wildcard host beats a host-less longer prefix
        ("x.eu.example.com", "/", "eu"),  # the longest wildcard suffix first
        ("eu.example.com", "/", "tenants"),
        ("example.com", "/", "web"),  # *.example.com is not example.com itself
        ("[::1]:8080", "/", "local6"),
        ("192.0.2.1:80", "/", "local4"),
        ("", "/api", "api"),  # no Host (HTTP/1.0): the host-less routes
    ],
)
def test_exact_host_beats_wildcard_beats_no_host(host: str, path: str, pool: str) -> None:
    """RFC 9110 §4.2.3: the host compares case-insensitively; §7.2: the port is not the host's."""
    assert TABLE.match(host, path) == pool


def test_a_host_whose_routes_miss_falls_through_to_the_next_rank() -> None:
    table = RouteTable((Route("api.example.com", "/api", "api"), Route(None, "/", "web")))
    assert table.match("api.example.com", "/api/x") == "api"
    assert table.match("api.example.com", "/other") == "web"


def test_no_matching_route_is_none_and_bytes_work_like_str() -> None:
    table = RouteTable((Route("a.test", "/api", "api"),))
    assert table.match(b"a.test", b"/api/x?y") == "api"
    assert table.match(b"a.test", b"/") is None
    assert table.match(b"b.test", b"/api") is None
    assert RouteTable(()).match("a.test", "/") is None


def test_pools_lists_what_the_routes_reach_and_tables_compare_by_routes() -> None:
    assert TABLE.pools == {"web", "api", "api2", "shop", "cdn", "tenants", "eu", "local6", "local4"}
    assert RouteTable((Route(None, "/", "web"),)) == RouteTable((Route(None, "/", "web"),))
    assert RouteTable((Route(None, "/", "web"),)) != RouteTable((Route(None, "/", "api"),))


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (("h.test", "api", "p"), "path_prefix: 'api' must start with /"),
        (("h.test", "", "p"), "path_prefix: '' must start with /"),
        (("h.test", "/a?b", "p"), "path_prefix: '/a\\?b'"),
        (("h.test", "/a b", "p"), "path_prefix: '/a b'"),
        (("h.test:80", "/", "p"), "host: 'h.test:80' is not"),
        (("*", "/", "p"), "host: '\\*'"),
        (("a.*.test", "/", "p"), "host: 'a.\\*.test'"),
        (("-a.test", "/", "p"), "host: '-a.test'"),
        (("a..test", "/", "p"), "host: 'a..test'"),
        (("[::g]", "/", "p"), "host: '\\[::g\\]'"),
        (("", "/", "p"), "host: ''"),
        ((None, "/", ""), "pool: must name a pool"),
    ],
)
def test_invalid_routes_name_the_field(route: tuple[str | None, str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        Route(*route)


def test_two_routes_for_the_same_host_and_prefix_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"routes\[2\]: the same host and path_prefix as routes\[0\]"):
        RouteTable((Route("A.test", "/x", "a"), Route(None, "/x", "b"), Route("a.test", "/x", "c")))


SEGMENT = st.text("abc/", max_size=6)


@given(st.lists(SEGMENT, min_size=1, max_size=6, unique=True), st.text("abc/?", max_size=12))
def test_matching_agrees_with_the_definition(prefixes: list[str], path: str) -> None:
    """Against the plain reading: of the prefixes p with path == p, or starting with p where p
    ends with / or the next character is /, the longest; the query cut off first."""
    table = RouteTable(tuple(Route(None, "/" + p, "/" + p) for p in prefixes))
    target = "/" + path
    bare = target.partition("?")[0]
    matching = [
        r.path_prefix
        for r in table.routes
        if bare == r.path_prefix
        or (
            bare.startswith(r.path_prefix)
            and (r.path_prefix.endswith("/") or bare[len(r.path_prefix)] == "/")
        )
    ]
    assert table.match("h", target) == max(matching, key=len, default=None)
