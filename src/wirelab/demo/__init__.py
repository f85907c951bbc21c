"""`wirelab demo`: experiments that narrate a pattern step by step and show what they measured.

Theory of operation: like the benches, every actor is a real child process on loopback, driven and
observed from outside. This package imports nothing at import time, so `wirelab demo --help` stays
instant; each command loads its experiment only when it runs.
"""

__all__: list[str] = []
