"""Publish/subscribe: one broker contract, an embedded broker, RabbitMQ and Redis Streams adapters."""

from wirelab.pubsub.broker import Broker, BrokerError, DeadLetter, Delivery, Listener, Message, Subscription
from wirelab.pubsub.factory import open_broker
from wirelab.pubsub.memory import MemoryBroker

__all__ = [
    "Broker",
    "BrokerError",
    "DeadLetter",
    "Delivery",
    "Listener",
    "MemoryBroker",
    "Message",
    "Subscription",
    "open_broker",
]
