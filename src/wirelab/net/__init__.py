"""asyncio plumbing shared by the families: moving bytes between sockets (splice or copy)."""

from wirelab.net.relay import SPLICE_AVAILABLE, Outcome, RelayResult, copy_pump, relay
from wirelab.net.splice import splice_pump, wait_ready

__all__ = [
    "SPLICE_AVAILABLE",
    "Outcome",
    "RelayResult",
    "copy_pump",
    "relay",
    "splice_pump",
    "wait_ready",
]
