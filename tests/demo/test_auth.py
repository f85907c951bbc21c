"""`wirelab demo auth` end to end: the session is known on its instance only, the token everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from wirelab.demo.auth import run_auth


def test_the_session_dies_with_its_instance_and_the_token_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WIRELAB_JWT_SECRET", "s" * 48)  # what the demo would set, undone after
    report = tmp_path / "auth.json"
    assert run_auth(console=Console(width=140, record=True), json_path=report) == 0
    rows = {row["credential"]: row for row in json.loads(report.read_text())["rows"]}
    assert (rows["session"]["A"], rows["session"]["B"], rows["session"]["A restarted"]) == (200, 401, 401)
    assert (rows["jwt"]["A"], rows["jwt"]["B"], rows["jwt"]["A restarted"]) == (200, 200, 200)
    assert rows["session"]["median_ms"] > 0 and rows["jwt"]["median_ms"] > 0
