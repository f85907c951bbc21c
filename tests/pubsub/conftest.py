"""The `broker` fixture: every broker implementation, each over a real connection where it has one.

RabbitMQ and Redis run on the test machines. Where one is absent, its tests skip with the reason,
except under CI=true, where they fail. Each test gets its own namespace, removed afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.helpers import unavailable
from wirelab.pubsub import Broker, open_broker

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
URLS = {"memory": "memory", "amqp": AMQP_URL, "redis": REDIS_URL}


@pytest.fixture(params=list(URLS))
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    namespace = f"wltest-{secrets.token_hex(4)}"
    broker = open_broker(URLS[request.param], namespace=namespace)
    try:
        await broker.connect()
    except Exception as exc:  # an engine that is not running
        unavailable(f"{request.param} broker at {URLS[request.param]} unavailable: {exc!r}")
    try:
        yield broker
    finally:
        await broker.destroy()  # runs must not pile up queues and streams on the engines
        await broker.close()
