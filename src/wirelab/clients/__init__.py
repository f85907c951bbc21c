"""Python clients for each transport of the Job Status service; the CLI and the benches use them."""

from wirelab.clients.base import TERMINAL_EVENTS, Follower, Update
from wirelab.clients.jobs import JobsClient
from wirelab.clients.poll import GetFollower, LongPollFollower, ShortPollFollower
from wirelab.clients.sse import SSEFollower
from wirelab.clients.transports import TRANSPORTS, follower_for
from wirelab.clients.upload import Uploader, UploadError, UploadResult, UploadStatistics, VerificationError
from wirelab.clients.ws import WebSocketFollower

__all__ = [
    "TERMINAL_EVENTS",
    "TRANSPORTS",
    "Follower",
    "GetFollower",
    "JobsClient",
    "LongPollFollower",
    "SSEFollower",
    "ShortPollFollower",
    "Update",
    "UploadError",
    "UploadResult",
    "UploadStatistics",
    "Uploader",
    "VerificationError",
    "WebSocketFollower",
    "follower_for",
]
