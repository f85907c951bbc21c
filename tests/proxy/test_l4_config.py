"""The layer 4 balancer's configuration: the TOML file, the flags over it, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wirelab.errors import ConfigError
from wirelab.proto.balance import Backend, HealthPolicy
from wirelab.proxy.config import L4Config, load_config, parse_address, parse_backend_flag, parse_config

FULL = """
listen = "0.0.0.0:8080"
algorithm = "source-hash"
mode = "copy"
proxy_protocol = "v2"
connect_timeout = 1
idle_timeout = 0
max_connections = 50
drain_timeout = 0

[health]
interval = 0.5
rise = 1
fall = 2
eject = 3.5

[[backends]]
address = "[::1]:9001"
weight = 3

[[backends]]
address = "backend.internal:9002"
"""


def test_a_full_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "l4.toml"
    path.write_text(FULL)
    assert load_config(path, {}) == L4Config(
        listen=("0.0.0.0", 8080),
        backends=(Backend("::1", 9001, 3), Backend("backend.internal", 9002)),
        algorithm="source-hash",
        splice=False,
        proxy_protocol="v2",
        connect_timeout_s=1,
        idle_timeout_s=None,
        max_connections=50,
        drain_timeout_s=0,
        check_interval_s=0.5,
        health=HealthPolicy(rise=1, fall=2, eject_s=3.5),
    )


def test_flags_override_the_files_keys_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "l4.toml"
    path.write_text(FULL)
    overrides = {
        "backends": [parse_backend_flag("127.0.0.1:1,weight=2")],
        "health": {"rise": 5},
        "mode": "splice",
    }
    config = load_config(path, overrides)
    assert config.backends == (Backend("127.0.0.1", 1, 2),)
    assert (config.health.rise, config.health.fall, config.splice) == (5, 2, True)


def test_defaults_need_only_listen_and_a_backend() -> None:
    config = parse_config({"listen": "127.0.0.1:0", "backends": [{"address": "127.0.0.1:1"}]})
    assert config == L4Config(listen=("127.0.0.1", 0), backends=(Backend("127.0.0.1", 1),))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"backends": [{"address": "h:1"}]}, "listen: required"),
        ({"listen": "h:1"}, "backends: at least one"),
        ({"listen": "h:1", "backends": [{"address": "h:1"}], "lisen": "x"}, "lisen: unknown setting"),
        ({"listen": "h:1", "backends": [{"address": "h:1"}, {"address": "h"}]}, "backends\\[1\\].address"),
        (
            {"listen": "h:1", "backends": [{"address": "h:1", "wieght": 2}]},
            "backends\\[0\\].wieght: unknown",
        ),
        ({"listen": "h:1", "backends": ["h:1"]}, "backends\\[0\\]: expected a table"),
        ({"listen": "h:1", "backends": [{"weight": 1}]}, "backends\\[0\\].address: required"),
        ({"listen": "h:99999", "backends": [{"address": "h:1"}]}, "listen: 'h:99999'"),
        ({"listen": "h:1", "backends": [{"address": "h:0"}]}, "backends\\[0\\].address: 'h:0'"),
        ({"listen": "h:1", "backends": [{"address": "h:1"}], "algorithm": "random"}, "algorithm: 'random'"),
        ({"listen": "h:1", "backends": [{"address": "h:1"}], "connect_timeout": "2s"}, "expected a number"),
        (
            {"listen": "h:1", "backends": [{"address": "h:1"}], "max_connections": 1.5},
            "expected an integer",
        ),
        (
            {"listen": "h:1", "backends": [{"address": "h:1"}], "max_connections": True},
            "expected an integer",
        ),
        ({"listen": "h:1", "backends": [{"address": "h:1"}], "idle_timeout": -1}, "0 \\(off\\) or more"),
        (
            {"listen": "h:1", "backends": [{"address": "h:1"}], "health": {"rise": 0}},
            "health.rise: must be",
        ),
        (
            {"listen": "h:1", "backends": [{"address": "h:1"}], "health": {"every": 1}},
            "health.every: unknown",
        ),
    ],
)
def test_errors_name_the_bad_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_config(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("listen = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config(broken, {})


def test_addresses_and_backend_flags() -> None:
    assert parse_address("[2001:db8::1]:443", "listen") == ("2001:db8::1", 443)
    assert parse_backend_flag("127.0.0.1:80") == {"address": "127.0.0.1:80"}
    with pytest.raises(ConfigError, match="--backend"):
        parse_backend_flag("127.0.0.1:80,weigth=2")
