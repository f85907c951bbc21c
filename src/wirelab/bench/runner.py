"""Run a scenario's coroutine so that Ctrl-C always ends in KeyboardInterrupt, after its cleanup ran.

Theory of operation: Ctrl-C in a terminal signals the whole process group, so the servers under test
may die at the same moment the bench is told to stop. `asyncio.run` cancels the main task, but a
library awaiting a socket to a server that just died may report that as its own error (a refused
connection) instead of the cancellation, and the run would end in a misleading traceback. Here the
first SIGINT cancels the main task and is remembered; whatever the coroutine then ends with (after its
`finally` blocks and `async with` exits have stopped its children) becomes KeyboardInterrupt. A second
SIGINT is ignored, so cleanup, which is bounded by timeouts, is not cut short.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(_interruptible(main))


async def _interruptible(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await main
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
