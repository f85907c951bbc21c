"""Submit and cancel jobs over plain HTTP; errors arrive as problem+json and are raised with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from wirelab.errors import WirelabError

__all__ = ["JobsClient", "ServiceError", "checked"]


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

    async def upload_image(self, path: Path) -> dict[str, Any]:
        """POST /images with the file streamed as the raw body."""

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as file:
                while chunk := file.read(1 << 16):
                    yield chunk

        return checked(await self._http.post("/images", content=chunks()))

    async def get(self, job_id: str) -> dict[str, Any]:
        return checked(await self._http.get(f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return checked(await self._http.delete(f"/jobs/{job_id}"))

    async def login(self, user: str) -> dict[str, Any]:
        return checked(await self._http.post("/logins", json={"user": user}))

    async def aclose(self) -> None:
        await self._http.aclose()


def checked(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text}
        raise ServiceError(response.status_code, problem)
    body: dict[str, Any] = response.json()
    return body
