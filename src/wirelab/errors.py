"""The one exception root of Wirelab, and the table from errors to HTTP problem details.

    WirelabError
    ├── ProblemError              a request we refuse; carries its HTTP status (RFC 9457)
    │   ├── BadRequest            400: malformed syntax or parameters
    │   ├── Forbidden             403: never allowed on this resource
    │   ├── NotFound              404: no such resource
    │   ├── MethodNotAllowed      405: carries the Allow header
    │   ├── Conflict              409: the resource's state forbids it
    │   ├── Gone                  410: it existed, and has expired or been removed
    │   ├── PreconditionFailed    412: a precondition header (a protocol version) does not hold
    │   ├── PayloadTooLarge       413: a body over the configured limit
    │   ├── UnsupportedMediaType  415: a body of a type we do not take
    │   ├── RequestTimeout        408: the request did not arrive in time (a slow head)
    │   ├── Unprocessable         422: well-formed but meaningless
    │   ├── Locked                423: another request holds the resource right now
    │   ├── HeadersTooLarge       431: a request head over the configured limit
    │   └── ServiceUnavailable    503: over a capacity limit now; carries Retry-After
    ├── ProtocolError             a peer broke a protocol we parse (remote fault)
    └── ConfigError               bad configuration given to us (local misuse)

Local misuse and remote faults are kept apart so that a server never blames a client for its own
configuration, and never crashes on a client's bytes.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "HeadersTooLarge",
    "Locked",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ProblemError",
    "ProtocolError",
    "RequestTimeout",
    "ServiceUnavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "WirelabError",
    "path_instance",
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


class Forbidden(ProblemError):
    status = 403
    title = "Forbidden"


class NotFound(ProblemError):
    status = 404
    title = "Not Found"


class Conflict(ProblemError):
    status = 409
    title = "Conflict"


class Gone(ProblemError):
    status = 410
    title = "Gone"


class PreconditionFailed(ProblemError):
    status = 412
    title = "Precondition Failed"


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


class UnsupportedMediaType(ProblemError):
    status = 415
    title = "Unsupported Media Type"


class Locked(ProblemError):
    status = 423
    title = "Locked"


class RequestTimeout(ProblemError):
    status = 408
    title = "Request Timeout"


class HeadersTooLarge(ProblemError):
    status = 431
    title = "Request Header Fields Too Large"


class ServiceUnavailable(ProblemError):
    """503; pass `headers={"retry-after": seconds}` so clients know when to come back."""

    status = 503
    title = "Service Unavailable"


def path_instance(path: str) -> str:
    """The `instance` of a problem about the resource at a request's path. ASGI hands us the path
    percent-decoded, and RFC 9457 §3.1.5 wants a URI reference, so it is encoded again."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


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
