"""npm `amqplib`, an AMQP 0-9-1 client that shares no code with aio-pika, on the pipeline's RabbitMQ.

The wire format is plain AMQP and the JSON of proto/pipeline.py, nothing more: another client reads
the message `wirelab up` publishes for an image job, takes it off the compress queue, and publishes
its own, hand-written one in its place (no message id, no headers, keys in another order); the
workers then carry that one to `done`, and the same client watches job.progress arrive. Names come
from amqp.py: the topic exchange is the namespace, a service's queue `NAMESPACE.SERVICE`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import unavailable
from tests.interop.interop_peers import NODE_MODULES, JsonLinesPeer, Record
from tests.pipeline.lab import AMQP_URL, Lab, jpeg
from wirelab.proto.pipeline import PROGRESS, UPLOADED

pytestmark = pytest.mark.interop

Start = Callable[..., JsonLinesPeer]
TARGETS = ["480p", "1080p"]


@pytest.fixture
def amqplib(node_peer: Start) -> Start:
    if not (NODE_MODULES / "amqplib" / "package.json").exists():
        unavailable("npm package amqplib is missing: npm ci --prefix tests/interop")
    return node_peer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(AMQP_URL, tmp_path) as lab:
        yield lab


def take(peer: JsonLinesPeer, queue: str, *, timeout: float = 10) -> Record:
    """The first message to arrive in `queue`, read (and acknowledged) by the Node client."""
    deadline = time.monotonic() + timeout
    while True:
        peer.send({"op": "get", "queue": queue})
        record = peer.next()
        if record["type"] != "empty":
            assert record["type"] == "got", record
            return record
        assert time.monotonic() < deadline, f"nothing arrived in {queue} within {timeout}s"
        time.sleep(0.05)


def is_done(job_id: str) -> Callable[[Record], bool]:
    def done(record: Record) -> bool:
        assert record["type"] == "message", record
        update = json.loads(record["body"])
        return bool(update["job"] == job_id and update["state"] == "done")

    return done


def test_a_message_from_amqplib_drives_an_image_job_to_done(amqplib: Start, lab: Lab) -> None:
    """AMQP 0-9-1 basic.publish to a topic exchange, basic.get and basic.consume: the pipeline's
    messages are persistent (delivery-mode 2) JSON under plain routing keys, in both directions."""
    exchange, compress_queue = lab.namespace, f"{lab.namespace}.compress"
    peer = amqplib("amqp_publish.mjs", AMQP_URL)
    peer.send({"op": "watch", "exchange": exchange, "routingKey": PROGRESS})
    assert peer.next()["type"] == "watching"
    image_id = lab.upload(jpeg(1600, 1200))
    job_id = lab.submit(image_id, targets=TARGETS)

    ours = take(peer, compress_queue)  # no worker runs yet, so the job's message waits here
    assert (ours["exchange"], ours["routingKey"]) == (exchange, UPLOADED)
    assert ours["properties"]["deliveryMode"] == 2  # persistent
    assert json.loads(ours["body"]) == {"v": 1, "job": job_id, "image": image_id, "targets": TARGETS}
    peer.send({"op": "get", "queue": compress_queue})
    assert peer.next() == {"type": "empty"}, "only the job's one message was queued"

    body = f'{{"targets": {json.dumps(TARGETS)}, "image": "{image_id}", "job": "{job_id}", "v": 1}}'
    peer.send(
        {
            "op": "publish",
            "exchange": exchange,
            "routingKey": UPLOADED,
            "body": body,
            "contentType": "application/json",
        }
    )
    assert peer.next() == {"type": "published"}
    lab.worker("all")

    done = lab.wait_done(job_id, timeout=30)
    assert sorted(o["name"] for o in done["outputs"]) == sorted(TARGETS)
    assert lab.job_files(job_id) == sorted(["compressed.jpg", *(f"{t}.jpg" for t in TARGETS)])
    seen = peer.until(is_done(job_id), timeout=10)
    assert {record["routingKey"] for record in seen} == {PROGRESS}
    assert json.loads(seen[-1]["body"])["outputs"] == done["outputs"]
    assert lab.dead_letters() == ""
