"""The `broker` fixture: every broker implementation, each over a real connection where it has one.

RabbitMQ and Redis run on the test machines. Where one is absent, its tests skip with the reason,
except under CI=true, where they fail. Each test gets its own namespace, removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.helpers import unavailable
from wirelab.pubsub import Broker, open_broker

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
URLS = {"memory": "memory", "amqp": AMQP_URL, "redis": REDIS_URL}


@contextlib.asynccontextmanager
async def _connected(engine: str, namespace: str, *, destroy: bool) -> AsyncIterator[Broker]:
    broker = open_broker(URLS[engine], namespace=namespace)
    try:
        await broker.connect()
    except Exception as exc:  # an engine that is not running
        unavailable(f"{engine} broker at {URLS[engine]} unavailable: {exc!r}")
    try:
        yield broker
    finally:
        if destroy:  # runs must not pile up queues and streams on the engines
            await broker.destroy()
        await broker.close()


@pytest.fixture(params=list(URLS))
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    async with _connected(request.param, f"wltest-{secrets.token_hex(4)}", destroy=True) as broker:
        yield broker


@pytest.fixture(params=list(URLS))
async def twins(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Broker]]:
    """Two brokers on one namespace, as two API instances would hold: two connections on the real
    engines; the embedded broker is one process's alone, so there it is one object twice. Only the
    first destroys the namespace, so that a test may close the second."""
    namespace = f"wltest-{secrets.token_hex(4)}"
    async with _connected(request.param, namespace, destroy=True) as first:
        if request.param == "memory":
            yield first, first
        else:
            async with _connected(request.param, namespace, destroy=False) as second:
                yield first, second
