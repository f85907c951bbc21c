"""Shared fixtures: real server processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wirelab.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, with a short heartbeat so idle streams show it quickly."""
    data_dir: Path = tmp_path_factory.mktemp("server")
    with ServerProcess(data_dir, "--heartbeat", "0.5") as process:
        yield process
