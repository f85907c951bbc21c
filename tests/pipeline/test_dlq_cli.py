"""`wirelab dlq list|replay` on RabbitMQ: a malformed message is dead-lettered at once and shown with
its reason, the worker goes on serving good work, and replay puts the message back to be tried again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.lab import AMQP_URL, Lab, jpeg
from wirelab.proto.pipeline import UPLOADED
from wirelab.pubsub import open_broker


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(AMQP_URL, tmp_path) as lab:
        yield lab


def _publish(lab: Lab, body: bytes) -> None:
    async def publish() -> None:
        broker = open_broker(AMQP_URL, namespace=lab.namespace)
        await broker.connect()
        try:
            await broker.publish(UPLOADED, body)
        finally:
            await broker.close()

    asyncio.run(publish())


def _dlq(lab: Lab, action: str) -> str:
    command = [sys.executable, "-m", "wirelab", "dlq", action, "--broker", AMQP_URL]
    command += ["--namespace", lab.namespace, "--service", "compress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_poison_message_is_listed_with_its_reason_and_can_be_replayed(lab: Lab) -> None:
    lab.worker("all")
    _publish(lab, b'{"v": 7, "job": "nonsense"}')
    deadline = time.monotonic() + 30
    while not (listed := _dlq(lab, "list")):
        assert time.monotonic() < deadline, f"nothing was dead-lettered{lab}"
        time.sleep(0.2)
    service, _, topic, attempts, reason, body = listed.strip().split("\t")
    assert (service, topic, attempts) == ("compress", UPLOADED, "attempts=1")  # malformed: no retry
    assert "unknown schema version 7" in reason and '"v": 7' in body
    lab.wait_done(lab.submit(lab.upload(jpeg(64, 48))), timeout=30)  # the worker still serves
    assert _dlq(lab, "replay").strip() == "compress: replayed 1"
    deadline = time.monotonic() + 30
    while not _dlq(lab, "list"):  # malformed still, and dead again
        assert time.monotonic() < deadline, f"the replayed message did not come back{lab}"
        time.sleep(0.2)
