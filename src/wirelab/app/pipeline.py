"""The image pipeline: stages that talk only through the broker.

    image.uploaded ──compress──▶ image.compressed (one per target) ──format──▶ image.formatted
           │                          │                                         │
           └──── the job's API ◀── job.progress ◀──────────notify───────────────┘

Theory of operation: each stage is a service (one queue) with any number of consumers, in this
process or in `wirelab worker` processes. A stage acknowledges a message only after its output is
written and its next messages are published, so a worker killed half-way loses nothing: the broker
redelivers. Outputs live at `outputs/JOB/NAME.jpg` and are written by rename, so a redelivered
message overwrites its output instead of duplicating it. `notify` keeps no state of its own: it
looks at which outputs exist. The API's `feed` service applies job.progress to the job's feed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from wirelab.app.imaging import compress, output_info, resize
from wirelab.app.kinds import DemoKind
from wirelab.errors import NotFound, ProtocolError, Unprocessable
from wirelab.proto.pipeline import (
    COMPRESSED,
    FORMATTED,
    PROGRESS,
    REQUESTED,
    TARGETS,
    UPLOADED,
    JobProgress,
    StageMessage,
    decode_request,
    decode_stage,
)
from wirelab.pubsub import Broker, Message
from wirelab.upload import ImageStore

__all__ = ["SERVICES", "ImageKind", "Stages", "declare_pipeline", "serve"]

log = logging.getLogger("wirelab.pipeline")

SERVICES: dict[str, tuple[str, ...]] = {
    "compress": (UPLOADED,),
    "format": (COMPRESSED,),
    "notify": (COMPRESSED, FORMATTED),
    "demo": (REQUESTED,),
}
"""Each worker service and the topics it consumes (demo: the jobs `wirelab serve` dispatches)."""

Handler = Callable[[Message], Awaitable[None]]


async def declare_pipeline(broker: Broker) -> None:
    """Every stage's queue exists before the first image is published, workers started or not."""
    for service, topics in SERVICES.items():
        await broker.declare(service, topics)


async def serve(
    broker: Broker,
    service: str,
    topics: tuple[str, ...],
    handle: Handler,
    *,
    prefetch: int = 4,
    max_attempts: int = 5,
) -> None:
    """Consume `service`'s queue until cancelled: ack what `handle` finished, nack what it failed
    (dead-lettering at once what is malformed)."""
    subscription = await broker.subscribe(service, topics, prefetch=prefetch, max_attempts=max_attempts)
    try:
        async for delivery in subscription:
            try:
                await handle(delivery.message)
            except ProtocolError as exc:  # malformed: no attempt can ever succeed
                log.warning("%s: message %s is malformed: %s", service, delivery.message.id, exc)
                await delivery.nack(f"malformed: {exc}", retry=False)
            except Exception as exc:
                log.warning(
                    "%s: message %s failed (attempt %d): %s",
                    service,
                    delivery.message.id,
                    delivery.message.attempts,
                    exc,
                )
                await delivery.nack(f"{type(exc).__name__}: {exc}")
            else:
                await delivery.ack()
    finally:
        await subscription.close()


class Stages:
    """The worker services' handlers over one data directory."""

    def __init__(self, broker: Broker, data_dir: Path) -> None:
        self._broker = broker
        self._images = ImageStore(data_dir / "images")
        self._outputs = data_dir / "outputs"

    def handlers(self) -> dict[str, Handler]:
        return {"compress": self.compress, "format": self.format, "notify": self.notify, "demo": self.demo}

    async def demo(self, message: Message) -> None:
        """Run a dispatched demo job from the progress it had, reporting each step."""
        request = decode_request(message.body)
        if request.kind != DemoKind.name:
            raise ProtocolError(f"the demo service runs demo jobs, not {request.kind!r}")

        async def report(progress: float) -> None:
            await self._broker.publish(PROGRESS, JobProgress(request.job, "demo", progress).encode())

        kind = DemoKind()
        await kind.run(kind.parse(request.params), request.progress, report, job_id=request.job)
        await self._broker.publish(PROGRESS, JobProgress(request.job, "demo", 1.0, "done").encode())

    async def compress(self, message: Message) -> None:
        stage = decode_stage(message.body, with_target=False)
        await compress(self._images.path(stage.image), self._job_dir(stage) / "compressed.jpg")
        for target in stage.targets:
            next_stage = StageMessage(stage.job, stage.image, stage.targets, target)
            await self._broker.publish(COMPRESSED, next_stage.encode())

    async def format(self, message: Message) -> None:
        stage = decode_stage(message.body, with_target=True)
        assert stage.target is not None
        job_dir = self._job_dir(stage)
        await resize(job_dir / "compressed.jpg", job_dir / f"{stage.target}.jpg", TARGETS[stage.target])
        await self._broker.publish(FORMATTED, message.body)

    async def notify(self, message: Message) -> None:
        stage = decode_stage(message.body, with_target=True)
        job_dir = self._job_dir(stage)
        done = [t for t in stage.targets if (job_dir / f"{t}.jpg").exists()]
        if message.topic == FORMATTED and len(done) == len(stage.targets):
            outputs = [output_info(job_dir / f"{t}.jpg").to_json(stage.job) for t in stage.targets]
            update = JobProgress(stage.job, "format", 1.0, "done", outputs)
        else:
            name = "format" if message.topic == FORMATTED else "compress"
            update = JobProgress(stage.job, name, (1 + len(done)) / (2 + len(stage.targets)))
        await self._broker.publish(PROGRESS, update.encode())

    def _job_dir(self, stage: StageMessage) -> Path:
        return self._outputs / stage.job


class ImageKind:
    """Jobs of kind `image`: publish the upload and let the pipeline finish the job (detached)."""

    name = "image"
    detached = True

    def __init__(self, broker: Broker, images: ImageStore) -> None:
        self._broker = broker
        self._images = images

    def parse(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"kind", "image", "targets"}
        if unknown:
            raise Unprocessable(f"image jobs take image and targets, not {sorted(unknown)}")
        image, targets = spec.get("image"), spec.get("targets", list(TARGETS))
        try:
            self._images.path(image if isinstance(image, str) else "")
        except NotFound:
            raise Unprocessable(
                f"image must be the id of an uploaded image (POST /images), not {image!r}"
            ) from None
        if not isinstance(targets, list) or not targets or not all(_is_target(t) for t in targets):
            raise Unprocessable(f"targets must be a non-empty list of {sorted(TARGETS)}")
        return {"image": image, "targets": list(dict.fromkeys(targets))}

    async def run(
        self,
        params: Mapping[str, Any],
        progress: float,
        report: Callable[[float], Awaitable[None]],
        *,
        job_id: str,
    ) -> None:
        message = StageMessage(job_id, params["image"], tuple(params["targets"]))
        await self._broker.publish(UPLOADED, message.encode())


def _is_target(value: Any) -> bool:
    """A target's name; anything else in a client's list (a number, a list) is not one."""
    return isinstance(value, str) and value in TARGETS


async def run_services(broker: Broker, data_dir: Path, services: list[str], *, consumers: int) -> None:
    """Run `consumers` consumers of each named service until cancelled."""
    handlers = Stages(broker, data_dir).handlers()
    tasks = [
        asyncio.create_task(serve(broker, s, SERVICES[s], handlers[s]))
        for s in services
        for _ in range(consumers)
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
