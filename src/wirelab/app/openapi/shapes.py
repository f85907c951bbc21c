"""The shapes that repeat across the document, each written once: a problem, a JSON answer, a header.

Response headers and parameters are named by reference to `components` (`headers("Location")`), so
what a header means is said in one place however many operations send it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Json",
    "binary",
    "empty",
    "events",
    "header",
    "integer",
    "json_body",
    "json_response",
    "links",
    "nullable",
    "obj",
    "op",
    "param",
    "params",
    "path_param",
    "problems",
    "record",
    "ref",
    "response",
    "string",
]

Json = dict[str, Any]

PROBLEMS = {
    400: "The request is malformed: a parameter, a header or the body's syntax.",
    401: "No valid credentials; WWW-Authenticate says which.",
    403: "Never allowed on this resource.",
    404: "No such resource.",
    405: "This method is not served here; Allow lists the methods that are.",
    409: "The resource's state forbids it (or a request with the same Idempotency-Key is running).",
    410: "The resource expired and was removed.",
    412: "Tus-Resumable is missing or names a version other than this server's.",
    413: "The body is over the limit.",
    415: "The body is of a type this operation does not take.",
    422: "Well-formed, but meaningless (or an Idempotency-Key reused with another request).",
    423: "Another request is writing this upload right now.",
    460: "tus checksum mismatch: the chunk did not match Upload-Checksum and was discarded.",
}
"""What each problem status means, the same for every operation that answers it."""
PROBLEM_HEADERS = {401: "WWW-Authenticate", 405: "Allow", 409: "Retry-After"}


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def obj(required: str, properties: Json, **extra: Any) -> Json:
    """An object schema; `required` names its required properties, space-separated."""
    return {"type": "object", "required": required.split(), "properties": properties, **extra}


def record(properties: Json) -> Json:
    """An object schema whose every property is always there."""
    return obj(" ".join(properties), properties)


def string(**extra: Any) -> Json:
    return {"type": "string", **extra}


def integer(minimum: int = 0, **extra: Any) -> Json:
    return {"type": "integer", "minimum": minimum, **extra}


def binary(media_type: str) -> Json:
    """Raw bytes of `media_type` (`format: binary` is how OpenAPI 3.0 said it; tools still read it)."""
    return {"type": "string", "format": "binary", "contentMediaType": media_type}


def nullable(schema: Json) -> Json:
    return {"oneOf": [schema, {"type": "null"}]}


def header(description: str, schema: Json | None = None, *, required: bool = False) -> Json:
    return {"description": description, "required": required, "schema": schema or string()}


def response(description: str, content: Json | None = None, headers: str = "") -> Json:
    """A response; `headers` names its headers in components, space-separated."""
    answer: Json = {"description": description}
    if content is not None:
        answer["content"] = content
    if headers:
        answer["headers"] = {name: ref("headers", name) for name in headers.split()}
    return answer


def json_response(description: str, schema: Json, headers: str = "", follow: Json | None = None) -> Json:
    """A JSON response; `follow` are its links to the operations that take what it returns."""
    answer = response(description, {"application/json": {"schema": schema}}, headers)
    return {**answer, "links": follow} if follow else answer


def empty(description: str, headers: str = "") -> Json:
    return response(description, None, headers)


def events(description: str, event: str) -> Json:
    """A stream of Server-Sent Events, each one a `components/schemas/{event}`."""
    return response(description, {"text/event-stream": {"schema": ref("schemas", event)}}, "Cache-Control")


def links(parameter: str, field: str, *operation_ids: str) -> Json:
    """Links to the operations whose `parameter` is the response's `field`."""
    return {
        f"{op_id[0].upper()}{op_id[1:]}": {
            "operationId": op_id,
            "parameters": {parameter: f"$response.body#/{field}"},
        }
        for op_id in operation_ids
    }


def problems(*statuses: int, tus: bool = False) -> Json:
    """Problem responses; a tus operation's carry Tus-Resumable (and a 412 Tus-Version) too."""
    answers = {}
    for status in statuses:
        names = [PROBLEM_HEADERS.get(status, "")]
        if tus:
            names += ["Tus-Resumable", "Tus-Version" if status == 412 else ""]
        content = {"application/problem+json": {"schema": ref("schemas", "Problem")}}
        answers[str(status)] = response(PROBLEMS[status], content, " ".join(filter(None, names)))
    return answers


def param(where: str, name: str, schema: Json, description: str, *, required: bool = False) -> Json:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


def path_param(name: str, schema: Json, description: str) -> Json:
    return param("path", name, schema, description, required=True)


def params(*names: str) -> list[Json]:
    """Parameters defined in components, by name."""
    return [ref("parameters", name) for name in names]


def json_body(schema_name: str) -> Json:
    """A JSON request body (one sent without a Content-Type is taken as JSON too)."""
    return {"required": True, "content": {"application/json": {"schema": ref("schemas", schema_name)}}}


def op(operation_id: str, tag: str, summary: str, responses: Json, **fields: Any) -> Json:
    """An operation: its id, its tag, what it does, what it answers, and any other fields."""
    return {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "responses": responses,
        **fields,
    }
