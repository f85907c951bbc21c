"""Load one page again and again, one JSON line per load: the client side of `wirelab bench multiplex`.

It runs as a child process inside the bench's network namespace (`python -m wirelab.bench.page_loads
URL --http 2 --repeat 10 ...`), so its packets take the namespace's delay and loss; the bench reads
its lines. It waits for the server to answer first, so the bench need not look into the namespace.
Each load is a fresh start, as a browser's first visit: new connections, full handshakes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from wirelab.clients.fetch import fetch, fetch_page
from wirelab.errors import WirelabError

__all__ = ["main"]


async def _wait_ready(url: str, cafile: Path, within_s: float) -> None:
    """The server writes its CA as it starts; until then, and until it listens, try again."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await fetch(url, http="1.1", cafile=cafile, timeout_s=2)
            return
        except (OSError, WirelabError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def _loads(arguments: argparse.Namespace) -> None:
    await _wait_ready(arguments.url, arguments.cafile, arguments.ready_within)
    for _ in range(arguments.repeat):
        try:
            page = await fetch_page(
                arguments.url,
                http=arguments.http,
                connections=arguments.connections,
                pipeline=arguments.pipeline,
                cafile=arguments.cafile,
                timeout_s=arguments.timeout,
            )
        except (OSError, WirelabError, TimeoutError) as error:
            line: dict[str, object] = {"error": f"{type(error).__name__}: {error}"}
        else:
            line = {
                "page_ms": page.page_ms,
                "requests": page.requests,
                "bytes_on_wire": page.bytes_on_wire,
                "handshakes": page.handshakes,
                "connections": page.connections,
                "ok": all(status == 200 for status in page.statuses),
            }
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--http", required=True, choices=["1.1", "2", "3"])
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cafile", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--ready-within", type=float, default=30.0)
    asyncio.run(_loads(parser.parse_args()))


if __name__ == "__main__":
    main()
