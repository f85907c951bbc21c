"""The compiled protocol modules (`wirelab._compiled`): used when built and current, never when stale
or when WIRELAB_PURE_PYTHON asks for the source, and all or none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import unavailable
from wirelab._compiled import COMPILED, PURE_PYTHON_ENV, compiled

WHERE = (
    "import importlib, json, wirelab._compiled as c; "
    f"print(json.dumps([[n, importlib.import_module(n).__file__] for n in {list(COMPILED)!r}] "
    "+ [c.compiled()]))"
)


def _loaded(env: dict[str, str] | None = None, *, cwd: Path | None = None) -> tuple[dict[str, str], bool]:
    """Where each compiled module was imported from in a fresh interpreter, and `compiled()` there."""
    out = subprocess.run(
        [sys.executable, "-c", WHERE], capture_output=True, text=True, check=True, env=env, cwd=cwd
    ).stdout
    *files, flag = json.loads(out)
    return dict(files), flag


def test_the_build_runs_when_it_is_current() -> None:
    """After `make` (a C compiler at hand, as in CI) every module comes from its extension."""
    if not compiled():
        unavailable("the protocol modules are not compiled here (no C compiler, or `make native` is due)")
    files, flag = _loaded()
    assert flag
    assert all(not path.endswith(".py") for path in files.values()), files


def test_pure_python_on_request() -> None:
    files, flag = _loaded({**os.environ, PURE_PYTHON_ENV: "1"})
    assert not flag
    assert all(path.endswith(".py") for path in files.values()), files


@pytest.mark.skipif(not compiled(), reason="no build to go stale")
def test_a_stale_build_gives_way_to_the_source_for_every_module(tmp_path: Path) -> None:
    """One source edited after the build: all of them load from source (a mix would hold two of each
    shared class)."""
    package = Path(__import__("wirelab").__file__).parent
    copy = tmp_path / "wirelab"
    subprocess.run(["cp", "-a", str(package), str(copy)], check=True)
    for shared in package.parent.glob("*__mypyc*"):
        subprocess.run(["cp", "-a", str(shared), str(tmp_path)], check=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert all(not path.endswith(".py") for path in _loaded(env, cwd=tmp_path)[0].values())
    (copy / "proto" / "routing.py").touch()
    files, flag = _loaded(env, cwd=tmp_path)
    assert not flag
    assert all(path.startswith(str(copy)) and path.endswith(".py") for path in files.values()), files
