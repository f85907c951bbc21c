"""The event loop Wirelab's servers and bench clients run on: uvloop where it is installed.

One place decides, so a balancer and the load that measures it never run on different loops by
accident; without uvloop the standard loop is used.
"""

from __future__ import annotations

import asyncio

__all__ = ["runner"]


def runner() -> asyncio.Runner:
    """An `asyncio.Runner` on uvloop if it imports, else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
