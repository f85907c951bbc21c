"""Push transports: Server-Sent Events and WebSocket, both thin adapters over the feed."""

from wirelab.push.sse import serve_sse
from wirelab.push.websocket import TopicCheck, serve_echo, serve_push

__all__ = ["TopicCheck", "serve_echo", "serve_push", "serve_sse"]
