"""The HTTP API of `wirelab up` and `wirelab serve` as an OpenAPI 3.1 document, kept as data.

Why data beside the routes rather than prose in docs/: a document written apart from the code drifts
from it without anyone noticing. This one is built from the constants the handlers check (limits,
targets, the tus version), served at `GET /openapi.json`, and held to the service twice over: a test
compares its operations with `Router.routes()` in both directions, and schemathesis fuzzes a running
server against it (status codes, response bodies and headers, content types, no 5xx).

Conventions: every refusal is an RFC 9457 problem (`components/schemas/Problem`); HEAD, which the
router answers for every GET, is implied rather than listed, except the tus HEAD that has a handler
of its own. Server-Sent Events are described one event at a time, as OpenAPI 3.1 reads a schema of
`text/event-stream`: an object with the `event` name, the `id` (the feed version) and the `data`.
"""

from wirelab.app.openapi.document import build_document

__all__ = ["build_document"]
