"""Settings of `wirelab up`, from flags or WIRELAB_* environment variables, checked at load."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wirelab.errors import ConfigError
from wirelab.http.guard import ConnectionLimits

__all__ = ["Config"]


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path(".wirelab"))
    store: str = "sqlite:"
    broker: str = "memory"
    namespace: str = "wirelab"
    pipeline: bool = True
    dispatch: bool = False
    """Send demo jobs to `wirelab worker demo` over the broker (`wirelab serve`), not run them here."""
    """Run the image pipeline's stages in this process (else `wirelab worker` processes do)."""
    workers: int = 4
    heartbeat_s: float = 15.0
    retry_ms: int = 2000
    ws_max_size: int = 1 << 20
    retention: int = 256
    max_lag: int = 1024
    max_image_bytes: int = 64 << 20
    """Largest image, sent in one request or by tus (Tus-Max-Size)."""
    upload_expiry_s: float = 86400.0
    """An unfinished tus upload untouched this long expires, and its bytes are removed."""
    idempotency_ttl_s: float = 86400.0
    """How long an Idempotency-Key and its stored answer are kept."""
    idempotency_stale_s: float = 60.0
    """A key claimed this long ago without an answer is taken over: its request died (kill -9)."""
    log_level: str = "info"
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    """Deadlines and caps of every HTTP connection (slow heads, stalled bodies, too many open)."""
    jwt_secret: str | None = field(
        default_factory=lambda: os.environ.get("WIRELAB_JWT_SECRET") or None, repr=False
    )
    """HS256 key of tokens (WIRELAB_JWT_SECRET); None: a random one, so tokens work here only."""

    @property
    def shared_broker(self) -> bool:
        """Whether other processes (instances, workers) can reach the broker; the embedded one
        lives and dies inside this process."""
        return self.broker != "memory"

    def __post_init__(self) -> None:
        checks = [
            ("port", 0 <= self.port <= 65535, "a TCP port, 0 to 65535"),
            ("workers", 1 <= self.workers <= 1024, "1 to 1024"),
            ("heartbeat_s", 0 < self.heartbeat_s <= 3600, "more than 0 and at most 3600"),
            ("retry_ms", 0 <= self.retry_ms <= 3_600_000, "0 to 3600000"),
            ("ws_max_size", 125 <= self.ws_max_size <= 1 << 30, "125 bytes to 1 GiB"),
            ("retention", self.retention >= 1, "at least 1"),
            ("max_lag", self.max_lag >= 1, "at least 1"),
            ("idempotency_stale_s", 0 < self.idempotency_stale_s <= 86400, "more than 0, at most 1 day"),
            ("idempotency_ttl_s", 1 <= self.idempotency_ttl_s <= 30 * 86400, "1 s to 30 days"),
            ("upload_expiry_s", 1 <= self.upload_expiry_s <= 365 * 86400, "1 s to 365 days"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected {expected}")
