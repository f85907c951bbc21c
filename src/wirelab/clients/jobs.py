"""Submit and cancel jobs over plain HTTP; errors arrive as problem+json and are raised with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from wirelab.clients.files import read_range
from wirelab.errors import WirelabError

__all__ = ["JobsClient", "ServiceError", "checked", "post_image", "problem_of", "raise_for_problem"]


class ServiceError(WirelabError):
    """The service refused a request; `problem` is its RFC 9457 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem


class JobsClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return checked(await self._http.post("/jobs", json=spec))

    async def upload_image(self, path: Path, *, targets: Sequence[str] | None = None) -> dict[str, Any]:
        return await post_image(self._http, path, targets=targets)

    async def get(self, job_id: str) -> dict[str, Any]:
        return checked(await self._http.get(f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return checked(await self._http.delete(f"/jobs/{job_id}"))

    async def login(self, user: str) -> dict[str, Any]:
        return checked(await self._http.post("/logins", json={"user": user}))

    async def aclose(self) -> None:
        await self._http.aclose()


async def post_image(
    http: httpx.AsyncClient,
    path: Path,
    *,
    targets: Sequence[str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """POST /images with the file streamed as the raw body: the stored image and its `job` (or None).

    `targets` None asks for every output, empty for none (store only). The Content-Length is sent, so
    a server that finds the image too large can say 413 before reading it.
    """
    size = (await asyncio.to_thread(path.stat)).st_size
    params = {} if targets is None else {"targets": ",".join(targets)}
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    body = read_range(path, 0, size, on_bytes=on_bytes)
    return checked(await http.post("/images", params=params, headers=headers, content=body))


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a success; a refusal raises ServiceError with its problem document."""
    raise_for_problem(response)
    body: dict[str, Any] = response.json()
    return body


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_error:
        raise ServiceError(response.status_code, problem_of(response))


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The RFC 9457 document of a refusal, or its text as the detail when it is not JSON."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    return problem if isinstance(problem, dict) else {"detail": response.text}
