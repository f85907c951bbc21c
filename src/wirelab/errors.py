"""The one exception root of Wirelab, and the table from errors to HTTP problem details.

    WirelabError
    ├── ProblemError              a request we refuse; carries its HTTP status (RFC 9457)
    │   ├── BadRequest            400: malformed syntax or parameters
    │   ├── NotFound              404: no such resource
    │   ├── MethodNotAllowed      405: carries the Allow header
    │   ├── Conflict              409: the resource's state forbids it
    │   ├── PayloadTooLarge       413: a body over the configured limit
    │   └── Unprocessable         422: well-formed but meaningless
    ├── ProtocolError             a peer broke a protocol we parse (remote fault)
    └── ConfigError               bad configuration given to us (local misuse)

Local misuse and remote faults are kept apart so that a server never blames a client for its own
configuration, and never crashes on a client's bytes.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ProtocolError",
    "Unprocessable",
    "WirelabError",
    "problem_body",
]


class WirelabError(Exception):
    """Root of every error Wirelab raises on purpose."""


class ConfigError(WirelabError):
    """A setting we were given is invalid; the message names the setting."""


class ProtocolError(WirelabError):
    """A peer sent bytes that break the protocol being parsed."""


class ProblemError(WirelabError):
    """A refusal that maps to one HTTP status and an RFC 9457 problem document."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ProblemError):
    status = 400
    title = "Bad Request"


class NotFound(ProblemError):
    status = 404
    title = "Not Found"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ProblemError):
    status = 413
    title = "Content Too Large"


class MethodNotAllowed(ProblemError):
    """405; pass the allowed methods as `headers={"allow": ...}` (RFC 9110 §15.5.6 requires it)."""

    status = 405
    title = "Method Not Allowed"


class Unprocessable(ProblemError):
    status = 422
    title = "Unprocessable Content"


def problem_body(error: ProblemError, *, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 document for `error`; `type` stays about:blank since the status says it all."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(error.extra)
    return body
