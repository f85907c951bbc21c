"""asyncio plumbing shared by the families: opening TCP connections and moving bytes between sockets
(splice or copy)."""

from wirelab.net.connect import open_tcp
from wirelab.net.relay import SPLICE_AVAILABLE, Outcome, RelayResult, copy_pump, relay
from wirelab.net.splice import splice_pump, wait_ready

__all__ = [
    "SPLICE_AVAILABLE",
    "Outcome",
    "RelayResult",
    "copy_pump",
    "open_tcp",
    "relay",
    "splice_pump",
    "wait_ready",
]
