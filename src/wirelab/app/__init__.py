"""The Job Status service: jobs, their workers, and the HTTP API that wires every transport to them."""

from wirelab.app.config import Config
from wirelab.app.server import WirelabApp

__all__ = ["Config", "WirelabApp"]
