"""asyncio plumbing shared by the families: opening TCP connections, moving bytes between sockets
(splice or copy), and impairing the network (a delaying proxy; lossy, delayed network namespaces)."""

from wirelab.net.connect import open_tcp
from wirelab.net.impair import ImpairedTcp, ImpairedUdp, impair_tcp, impair_udp
from wirelab.net.netns import Namespace, NamespaceError, NamespaceUnavailable, lossy_namespace
from wirelab.net.nfqueue import delay_packets
from wirelab.net.relay import SPLICE_AVAILABLE, Outcome, RelayResult, copy_pump, relay
from wirelab.net.splice import splice_pump, wait_ready

__all__ = [
    "SPLICE_AVAILABLE",
    "ImpairedTcp",
    "ImpairedUdp",
    "Namespace",
    "NamespaceError",
    "NamespaceUnavailable",
    "Outcome",
    "RelayResult",
    "copy_pump",
    "delay_packets",
    "impair_tcp",
    "impair_udp",
    "lossy_namespace",
    "open_tcp",
    "relay",
    "splice_pump",
    "wait_ready",
]
