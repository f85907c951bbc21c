"""The layer 7 balancer's configuration: the TOML file, the flags over it, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from wirelab.errors import ConfigError
from wirelab.http.llhttp import PARSERS
from wirelab.proto.balance import Backend, HealthPolicy
from wirelab.proto.breaker import BreakerPolicy
from wirelab.proto.http1 import Limits
from wirelab.proto.routing import Route, RouteTable
from wirelab.proxy.commands import l7
from wirelab.proxy.l7config import (
    L7Config,
    PoolConfig,
    TLSSettings,
    l7_overrides,
    load_l7_config,
    parse_l7_config,
)

FULL = """
listen = "127.0.0.1:8443"
connect_timeout = 1
idle_timeout = 60.0
header_timeout = 5.0
max_connections = 50
drain_timeout = 0
metrics_path = "/metrics"

[tls]
names = ["localhost", "127.0.0.1"]
ca_dir = "ca"

[limits]
max_request_line = 4096
max_header_bytes = 16384
max_headers = 50
max_body_bytes = 1048576

[health]
interval = 0.5
path = "/healthz"
rise = 1
fall = 2
eject = 3.5

[breaker]
failures = 3
open = 2.5
half_open_requests = 2

[pools.api]
algorithm = "hash-header:X-User"
[[pools.api.backends]]
address = "127.0.0.1:9001"
weight = 2
[[pools.api.backends]]
address = "[::1]:9002"

[pools.web]
[[pools.web.backends]]
address = "web.internal:80"

[[routes]]
host = "api.example.com"
path_prefix = "/api"
pool = "api"

[[routes]]
pool = "web"
"""

ONE_POOL: dict[str, Any] = {"listen": "h:1", "pools": {"p": {"backends": [{"address": "h:2"}]}}}


def test_a_full_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "l7.toml"
    path.write_text(FULL)
    assert load_l7_config(path, {}) == L7Config(
        listen=("127.0.0.1", 8443),
        pools=(
            PoolConfig("api", (Backend("127.0.0.1", 9001, 2), Backend("::1", 9002)), "hash-header:X-User"),
            PoolConfig("web", (Backend("web.internal", 80),)),
        ),
        routes=RouteTable((Route("api.example.com", "/api", "api"), Route(None, "/", "web"))),
        tls=TLSSettings(names=("localhost", "127.0.0.1"), ca_dir=Path("ca")),
        connect_timeout_s=1,
        idle_timeout_s=60.0,
        header_timeout_s=5.0,
        max_connections=50,
        drain_timeout_s=0,
        check_interval_s=0.5,
        check_path="/healthz",
        metrics_path="/metrics",
        health=HealthPolicy(rise=1, fall=2, eject_s=3.5),
        breaker=BreakerPolicy(failures=3, open_s=2.5, half_open_requests=2),
        limits=Limits(
            max_request_line=4096, max_header_bytes=16384, max_headers=50, max_body_bytes=1048576
        ),
    )


def test_defaults_need_only_listen_and_a_pool_which_takes_every_request() -> None:
    config = parse_l7_config(ONE_POOL)
    assert config == L7Config(
        listen=("h", 1),
        pools=(PoolConfig("p", (Backend("h", 2),)),),
        routes=RouteTable((Route(None, "/", "p"),)),
    )
    assert config.routes.match("any.host", "/any/path") == "p"
    assert config.limits.max_body_bytes is None  # 0 in the file, the default: unlimited


def test_pool_policy_and_hash_on_translate_the_algorithm() -> None:
    assert PoolConfig("p", (), "least-outstanding").policy == "least-connections"
    assert PoolConfig("p", ()).policy == "round-robin"
    sticky = PoolConfig("p", (), "hash-cookie:Session")
    assert (sticky.policy, sticky.hash_on) == ("source-hash", ("cookie", b"session"))
    assert PoolConfig("p", ()).hash_on is None


def test_an_empty_metrics_path_turns_metrics_off_and_tls_may_bring_its_own_files() -> None:
    raw = {**ONE_POOL, "metrics_path": "", "tls": {"cert": "s.pem", "key": "k.pem"}}
    config = parse_l7_config(raw)
    assert config.metrics_path is None
    assert config.tls == TLSSettings(cert=Path("s.pem"), key=Path("k.pem"))


def test_flags_fill_the_default_pool_and_override_the_files_keys_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "l7.toml"
    path.write_text(FULL.replace("web", "default"))  # the file's own default pool: algorithm unset
    flags = {
        "listen": "127.0.0.1:0",
        "backends": ("127.0.0.1:7001", "127.0.0.1:7002,weight=3"),
        "algorithm": "least-outstanding",
        "check_interval": 0,
        "rise": 4,
        "connect_timeout": None,  # not given: the file's value stays
    }
    config = load_l7_config(path, l7_overrides(flags))
    assert config.listen == ("127.0.0.1", 0)
    assert config.pools[1] == PoolConfig(
        "default", (Backend("127.0.0.1", 7001), Backend("127.0.0.1", 7002, 3)), "least-outstanding"
    )
    assert config.pools[0].name == "api"  # the file's other pools stay
    assert (config.check_interval_s, config.health.rise, config.health.fall) == (None, 4, 2)
    assert config.connect_timeout_s == 1


def test_the_parser_is_llhttp_unless_the_file_or_the_flag_says_python(tmp_path: Path) -> None:
    assert parse_l7_config(ONE_POOL).parser == "llhttp"
    path = tmp_path / "l7.toml"
    path.write_text('listen = "127.0.0.1:0"\nparser = "python"\n[[pools.p.backends]]\naddress = "h:2"\n')
    assert load_l7_config(path, {}).parser == "python"
    assert load_l7_config(path, l7_overrides({"parser": "llhttp"})).parser == "llhttp"


def test_the_parser_flag_offers_every_parser() -> None:
    """The command names the parsers itself (it imports only click, for a fast --help): kept equal."""
    option = next(param for param in l7.params if param.name == "parser")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == PARSERS


def test_flags_alone_make_a_balancer_of_the_default_pool() -> None:
    raw = l7_overrides({"listen": "127.0.0.1:0", "backends": ("127.0.0.1:7001",), "check_path": "/up"})
    config = parse_l7_config(raw)
    assert [pool.name for pool in config.pools] == ["default"]
    assert config.routes.match("h", "/") == "default"
    assert config.check_path == "/up"


def test_no_backend_flags_leave_the_files_pools_alone() -> None:
    assert l7_overrides({"backends": (), "listen": None}) == {}


BAD_ROUTES: dict[str, Any] = {
    "listen": "h:1",
    "pools": {"api": {"backends": [{"address": "h:2"}]}, "web": {"backends": [{"address": "h:3"}]}},
}


def with_(**keys: Any) -> dict[str, Any]:
    return {**ONE_POOL, **keys}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pools": ONE_POOL["pools"]}, "listen: required"),
        ({"listen": "h:1"}, "pools: at least one"),
        (with_(lisen="x"), "lisen: unknown setting \\(known: listen, connect_timeout"),
        (with_(listen="h"), "listen: 'h' is not HOST:PORT"),
        (with_(idle_timeout=0), "idle_timeout: must be greater than 0"),
        (with_(drain_timeout=-1), "drain_timeout: must be 0 \\(off\\) or more"),
        (with_(max_connections=1.5), "max_connections: expected an integer"),
        (with_(metrics_path="metrics"), "metrics_path: 'metrics' must start with /"),
        (with_(parser="h11"), "parser: 'h11' is not llhttp or python"),
        (with_(routes={}), "routes: expected an array"),
        (with_(pools={"p": {"backends": []}}), "pools.p.backends: at least one backend"),
        (with_(pools={"p": []}), "pools.p: expected a table"),
        (with_(pools={"a.b": {"backends": [{"address": "h:2"}]}}), "pools.a.b: a pool's name"),
        (
            with_(pools={"p": {"backend": []}}),
            "pools.p.backend: unknown setting \\(known: algorithm, backends",
        ),
        (
            with_(pools={"api": {"backends": [{"address": "h:2"}, {"address": "h:3", "weight": 0}]}}),
            "pools.api.backends\\[1\\].weight: must be greater than 0",
        ),
        (
            with_(pools={"api": {"backends": [{"address": "h:2"}, {"address": "h:2"}]}}),
            "pools.api.backends\\[1\\].address: h:2 is backends\\[0\\]",
        ),
        (
            with_(pools={"api": {"backends": [{"address": "h:2"}], "algorithm": "random"}}),
            "pools.api.algorithm: 'random' is not round-robin",
        ),
        (
            with_(pools={"api": {"backends": [{"address": "h:2"}], "algorithm": "hash-header:"}}),
            "pools.api.algorithm: 'hash-header:'",
        ),
        (
            with_(pools={"api": {"backends": [{"address": "h:2"}], "algorithm": "hash-cookie:a b"}}),
            "pools.api.algorithm: 'hash-cookie:a b'",
        ),
        (BAD_ROUTES, "routes: required with several pools \\(api, web\\)"),
        ({**BAD_ROUTES, "routes": [{"pool": "api"}]}, "pools.web: no route leads to it"),
        (
            {**BAD_ROUTES, "routes": [{"pool": "api"}, {"pool": "ap"}]},
            "routes\\[1\\].pool: 'ap' is not a pool",
        ),
        (
            {**BAD_ROUTES, "routes": [{"path_prefix": "/"}]},
            "routes\\[0\\].pool: required \\(one of api, web\\)",
        ),
        ({**BAD_ROUTES, "routes": ["api"]}, "routes\\[0\\]: expected a table"),
        (
            {**BAD_ROUTES, "routes": [{"pool": "api", "prefix": "/"}]},
            "routes\\[0\\].prefix: unknown setting",
        ),
        (
            {**BAD_ROUTES, "routes": [{"pool": "web"}, {"pool": "api", "path_prefix": "api"}]},
            "routes\\[1\\].path_prefix: 'api' must start with /",
        ),
        (
            {**BAD_ROUTES, "routes": [{"pool": "web"}, {"pool": "api", "host": "a.test:80"}]},
            "routes\\[1\\].host: 'a.test:80' is not",
        ),
        (
            {**BAD_ROUTES, "routes": [{"pool": "web"}, {"pool": "api", "path_prefix": "/"}]},
            "routes\\[1\\]: the same host and path_prefix as routes\\[0\\]",
        ),
        (with_(limits={"max_header_bytes": 0}), "limits.max_header_bytes: must be greater than 0"),
        (with_(limits={"max_body_bytes": -1}), "limits.max_body_bytes: must be 0 \\(off\\) or more"),
        (with_(limits={"max_body": 1}), "limits.max_body: unknown setting"),
        (with_(health={"path": "healthz"}), "health.path: 'healthz' must start with /"),
        (with_(health={"interval": "2s"}), "health.interval: expected a number"),
        (with_(breaker={"failures": 0}), "breaker.failures: must be greater than 0"),
        (with_(breaker={"open_s": 1}), "breaker.open_s: unknown setting \\(known: failures, open,"),
        (with_(tls={"cert": "s.pem"}), "tls.key: required with tls.cert"),
        (with_(tls={"key": "k.pem"}), "tls.cert: required with tls.key"),
        (with_(tls={"cert": "", "key": "k.pem"}), "tls.cert: must name a file"),
        (with_(tls={"cert": "s.pem", "key": "k.pem", "names": ["a"]}), "tls.names: not with tls.cert"),
        (with_(tls={}), "tls: give names"),
        (with_(tls={"names": ["a", 1]}), "tls.names\\[1\\]: expected a host name"),
        (with_(tls={"names": "localhost"}), "tls.names: expected an array"),
    ],
)
def test_errors_name_the_bad_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse_l7_config(raw)


def test_tls_files_are_not_read_at_load(tmp_path: Path) -> None:
    config = parse_l7_config(with_(tls={"cert": str(tmp_path / "none.pem"), "key": "none-key.pem"}))
    assert config.tls is not None and config.tls.cert == tmp_path / "none.pem"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_l7_config(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[pools.api\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_l7_config(broken, {})


def test_a_bad_backend_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--backend"):
        l7_overrides({"backends": ("127.0.0.1:80,weigth=2",)})
