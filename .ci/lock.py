"""Keep requirements.lock and pyproject.toml in agreement, offline and with the standard library only.

The lock records a digest of what it was resolved from: the build requirements, the Python range, the
dependencies and the extras of pyproject.toml. `stamp` writes that digest after `make lock` resolves;
`check` recomputes it before every install and test, so a dependency added to pyproject.toml without a
new lock stops the run with the command that fixes it, instead of an ImportError deep in the tests.
Other edits to pyproject.toml (tool settings, the version) need no new lock.

Usage: python3 .ci/lock.py stamp|check [LOCK] [PYPROJECT]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

MARK = "# inputs-sha256: "


def inputs_digest(pyproject: Path) -> str:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data.get("project", {})
    inputs = {
        "build-system": data.get("build-system", {}).get("requires", []),
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(MARK):
            return line.removeprefix(MARK).strip()
    return None


def stamp(lock: Path, pyproject: Path) -> None:
    lines = [line for line in lock.read_text(encoding="utf-8").splitlines() if not line.startswith(MARK)]
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines.insert(header, MARK + inputs_digest(pyproject))
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")


def check(lock: Path, pyproject: Path) -> int:
    if not lock.exists():
        print(f"lock: {lock} is missing: run `make lock` and commit it", file=sys.stderr)
        return 1
    if recorded_digest(lock) != inputs_digest(pyproject):
        print(
            f"lock: {lock} was resolved from other dependencies than {pyproject} lists now;"
            " run `make lock` and commit both files together",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("stamp", "check"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    pyproject = Path(argv[2] if len(argv) > 2 else "pyproject.toml")
    if argv[0] == "stamp":
        stamp(lock, pyproject)
        return 0
    return check(lock, pyproject)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
