"""The image pipeline's messages: what each stage publishes, versioned and checked on the way in.

    image.uploaded    {"v": 1, "job": ID, "image": ID, "targets": ["480p", ...]}
    image.compressed  ... plus "target": one of targets (one message per target: format workers
                      share the load)
    image.formatted   ... plus "target"
    job.progress      {"v": 1, "job": ID, "stage": "compress"|"format"|"demo", "progress": 0..1,
                       "state": "running"|"done", "outputs": [...]}
    job.requested     {"v": 1, "job": ID, "kind": "demo", "params": {...}, "progress": 0..1}
                      (jobs run by `wirelab worker demo` rather than by the API's own process)

Bodies are UTF-8 JSON, so any AMQP or Redis client can publish them (the wire format is documented
here and in docs/pubsub.md). A message that is not one of these is a ProtocolError: it goes to the
dead-letter queue and never crashes a worker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from wirelab.errors import ProtocolError, Unprocessable

__all__ = [
    "COMPRESSED",
    "FORMATTED",
    "PROGRESS",
    "REQUESTED",
    "SCHEMA_VERSION",
    "TARGETS",
    "UPLOADED",
    "JobProgress",
    "JobRequest",
    "StageMessage",
    "decode_progress",
    "decode_request",
    "decode_stage",
    "parse_targets",
]

SCHEMA_VERSION = 1
UPLOADED, COMPRESSED, FORMATTED, PROGRESS = (
    "image.uploaded",
    "image.compressed",
    "image.formatted",
    "job.progress",
)
REQUESTED = "job.requested"
TARGETS = {"480p": 480, "1080p": 1080, "4k": 2160}
"""Output formats by name: the height in pixels each resize aims for."""

_ID = re.compile(r"^[0-9a-f]{16,32}$")


@dataclass(frozen=True, slots=True)
class StageMessage:
    job: str
    image: str
    targets: tuple[str, ...]
    target: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "job": self.job,
            "image": self.image,
            "targets": list(self.targets),
        }
        if self.target is not None:
            body["target"] = self.target
        return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class JobProgress:
    job: str
    stage: str
    progress: float
    state: str = "running"
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": SCHEMA_VERSION,
                "job": self.job,
                "stage": self.stage,
                "progress": self.progress,
                "state": self.state,
                "outputs": self.outputs,
            }
        ).encode()


def parse_targets(raw: str | None) -> tuple[str, ...]:
    """Targets as an upload names them (`480p,1080p`): absent means all of them, empty means none
    (store the image, start no job). Checked when the upload starts, not after its last byte."""
    if raw is None:
        return tuple(TARGETS)
    names = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise Unprocessable(f"targets are a comma-separated subset of {', '.join(TARGETS)}, not {unknown}")
    return names


def decode_stage(body: bytes, *, with_target: bool) -> StageMessage:
    message = _object(body)
    targets = message.get("targets")
    if not isinstance(targets, list) or not targets or not all(t in TARGETS for t in targets):
        raise ProtocolError(f"targets must be a non-empty list of {sorted(TARGETS)}")
    target = message.get("target")
    if with_target and target not in targets:
        raise ProtocolError("target must be one of the message's targets")
    return StageMessage(
        _id(message, "job"), _id(message, "image"), tuple(targets), target if with_target else None
    )


@dataclass(frozen=True, slots=True)
class JobRequest:
    job: str
    kind: str
    params: dict[str, Any]
    progress: float = 0.0

    def encode(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "job": self.job, "kind": self.kind, "params": self.params}
        return json.dumps({**body, "progress": self.progress}).encode()


def decode_request(body: bytes) -> JobRequest:
    message = _object(body)
    kind, params, progress = message.get("kind"), message.get("params"), message.get("progress")
    if not isinstance(kind, str) or not isinstance(params, dict):
        raise ProtocolError("a job request has a kind (string) and params (object)")
    if not isinstance(progress, int | float) or not 0 <= progress <= 1:
        raise ProtocolError("progress must be a number from 0 to 1")
    return JobRequest(_id(message, "job"), kind, params, float(progress))


def decode_progress(body: bytes) -> JobProgress:
    message = _object(body)
    progress, state, outputs = message.get("progress"), message.get("state"), message.get("outputs")
    if not isinstance(progress, int | float) or not 0 <= progress <= 1:
        raise ProtocolError("progress must be a number from 0 to 1")
    if state not in ("running", "done") or not isinstance(outputs, list):
        raise ProtocolError("state must be running or done, and outputs a list")
    stage = message.get("stage")
    if not isinstance(stage, str):
        raise ProtocolError("stage must be a string")
    return JobProgress(_id(message, "job"), stage, float(progress), state, outputs)


def _object(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a pipeline message is a JSON object")
    if message.get("v") != SCHEMA_VERSION:
        raise ProtocolError(f"unknown schema version {message.get('v')!r}; this worker speaks 1")
    return message


def _id(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not _ID.match(value):
        raise ProtocolError(f"{name} must be a hexadecimal id")
    return value
