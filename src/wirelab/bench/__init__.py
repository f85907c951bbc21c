"""`wirelab bench`: each scenario runs a pattern beside its peer, prints a table and writes `--json`.

Theory of operation: servers under test run as real child processes and are measured from outside
(psutil on their pid, bytes counted on the wire by a relay), so a figure is what a user would get.
This package imports nothing at import time: `wirelab bench --help` must stay instant, and each
command loads its scenario module only when it runs.
"""

__all__: list[str] = []
