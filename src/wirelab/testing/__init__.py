"""Helpers for tests and benches: a real server process to talk to over real sockets."""

from wirelab.testing.server import ServerProcess, free_port, free_tcp_and_udp_port

__all__ = ["ServerProcess", "free_port", "free_tcp_and_udp_port"]
