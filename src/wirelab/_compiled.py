"""Which of Wirelab's modules are compiled, and the switch that runs them as plain Python instead.

The sans-I/O protocol modules below are ordinary typed Python that `setup.py` also compiles with mypyc
into C extensions, when the machine has a C compiler: the layer 7 balancer spends most of its time in
them, and compiled they take about half the time (`wirelab bench lb` shows both). Nothing else
changes: the same source, the same tests.

Python prefers an extension module to the source beside it, so after an edit the old build would
shadow the new source until the next install. `prefer_source` puts a finder first that loads all of
them from source instead when any source is newer than its build, or when WIRELAB_PURE_PYTHON is set
(how the bench runs the pure-Python row). All or none: compiled modules call each other natively and
share their classes, so a mix would hold two different `Request` classes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "PURE_PYTHON_ENV", "compiled", "prefer_source"]

COMPILED = (
    "wirelab.proto.http1",
    "wirelab.proto.forwarding",
    "wirelab.proto.balance",
    "wirelab.proto.breaker",
    "wirelab.proto.routing",
    "wirelab.http.llhttp",
)
PURE_PYTHON_ENV = "WIRELAB_PURE_PYTHON"

_PACKAGE_ROOT = Path(__file__).parent.parent


def compiled() -> bool:
    """Whether the compiled modules are the ones imported (a build exists, is current, and no one
    asked for pure Python)."""
    return not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path) and _built()


def prefer_source() -> None:
    """Import the modules of COMPILED from source if their build is missing a piece, is older than
    the source, or WIRELAB_PURE_PYTHON is set."""
    if _built() and not os.environ.get(PURE_PYTHON_ENV) and not _stale():
        return
    sys.meta_path.insert(0, _SourceFirst())


def _source(name: str) -> Path:
    return _PACKAGE_ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _builds(name: str) -> list[Path]:
    source = _source(name)
    return [
        source.with_suffix(suffix)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if source.with_suffix(suffix).exists()
    ]


def _built() -> bool:
    return all(_builds(name) for name in COMPILED)


def _stale() -> bool:
    return any(
        build.stat().st_mtime < _source(name).stat().st_mtime
        for name in COMPILED
        for build in _builds(name)
    )


class _SourceFirst(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))
