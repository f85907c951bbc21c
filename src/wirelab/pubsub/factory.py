"""Pick a broker by URL: `memory` (embedded), `amqp://...` (RabbitMQ), `redis://...` (Redis Streams)."""

from __future__ import annotations

import importlib

from wirelab.errors import ConfigError
from wirelab.pubsub.broker import Broker
from wirelab.pubsub.memory import MemoryBroker

__all__ = ["open_broker", "remove_namespace"]

# Imported only when chosen, so the embedded default needs neither aio-pika nor redis installed.
_ENGINES = {
    "amqp": "wirelab.pubsub.amqp:AmqpBroker",
    "amqps": "wirelab.pubsub.amqp:AmqpBroker",
    "redis": "wirelab.pubsub.redis_streams:RedisBroker",
    "rediss": "wirelab.pubsub.redis_streams:RedisBroker",
}


def open_broker(url: str, *, namespace: str = "wirelab") -> Broker:
    """A broker for `url`, not yet connected; `namespace` prefixes every exchange, queue and stream."""
    scheme = url.partition(":")[0]
    if url == "memory":
        return MemoryBroker()
    engine = _ENGINES.get(scheme)
    if engine is not None:
        module, _, name = engine.partition(":")
        broker: Broker = getattr(importlib.import_module(module), name)(url, namespace=namespace)
        return broker
    raise ConfigError(f"broker: unsupported URL {url!r}; use memory, amqp://... or redis://...")


async def remove_namespace(url: str, namespace: str) -> None:
    """Delete everything a broker made under `namespace`."""
    broker = open_broker(url, namespace=namespace)
    await broker.connect()
    try:
        await broker.destroy()
    finally:
        await broker.close()
