"""Shared fixtures: real server processes on loopback, and the rule for tests needing services."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from wirelab.testing import ServerProcess

IN_CI = os.environ.get("CI") == "true"


def need_tool(name: str) -> str:
    """The path of a third-party peer; in CI a missing one fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, with a short heartbeat so idle streams show it quickly."""
    data_dir: Path = tmp_path_factory.mktemp("server")
    with ServerProcess(data_dir, "--heartbeat", "0.5") as process:
        yield process
