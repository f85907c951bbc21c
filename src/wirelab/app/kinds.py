"""Kinds of job: how a job's parameters are checked and how its work runs.

A kind is small: `parse` turns a request's spec into parameters (or says what is wrong, as a 422),
and `run` does the work, reporting progress through the context. Work must be resumable from the
progress it last reported, since a restart resumes unfinished jobs from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from wirelab.errors import Unprocessable
from wirelab.proto.pipeline import REQUESTED, JobRequest
from wirelab.pubsub import Broker

__all__ = ["DemoKind", "DispatchedKind", "Kind", "Progress"]

Progress = Callable[[float], Awaitable[None]]


class Kind(Protocol):
    name: str
    detached: bool
    """True for work finished elsewhere (the pipeline): `run` only starts it, and the job stays
    running until `Jobs.apply` hears that it ended."""

    def parse(self, spec: Mapping[str, Any]) -> dict[str, Any]: ...

    async def run(
        self, params: Mapping[str, Any], progress: float, report: Progress, *, job_id: str
    ) -> None: ...


class DemoKind:
    """Simulated work: `steps` steps of `step_ms` milliseconds each (the course's video upload)."""

    name = "demo"
    detached = False
    MAX_STEPS = 100_000
    MAX_STEP_MS = 60_000

    def parse(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"kind", "steps", "step_ms"}
        if unknown:
            raise Unprocessable(f"demo jobs take steps and step_ms, not {sorted(unknown)}")
        steps = _bounded_int(spec, "steps", 10, 1, self.MAX_STEPS)
        step_ms = _bounded_int(spec, "step_ms", 200, 0, self.MAX_STEP_MS)
        return {"steps": steps, "step_ms": step_ms}

    async def run(
        self, params: Mapping[str, Any], progress: float, report: Progress, *, job_id: str
    ) -> None:
        steps, step_ms = params["steps"], params["step_ms"]
        for step in range(round(progress * steps), steps):
            await asyncio.sleep(step_ms / 1000)
            await report((step + 1) / steps)


class DispatchedKind:
    """A kind whose work runs in `wirelab worker` processes: `run` publishes a job.requested
    message, and the job finishes when the worker's job.progress says so (detached). This is how
    `wirelab serve` stays stateless: no job's work lives in an API process."""

    detached = True

    def __init__(self, kind: Kind, broker: Broker) -> None:
        self.name = kind.name
        self._kind = kind
        self._broker = broker

    def parse(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._kind.parse(spec)

    async def run(
        self, params: Mapping[str, Any], progress: float, report: Progress, *, job_id: str
    ) -> None:
        request = JobRequest(job_id, self.name, dict(params), progress)
        await self._broker.publish(REQUESTED, request.encode())


def _bounded_int(spec: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = spec.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise Unprocessable(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return value
