"""The OpenAPI document of `wirelab up` against the routes it describes, and as the server serves it.

A route without its operation, or an operation without its route, fails here with both lists named,
so the document cannot drift from the router. (How the running service answers is schemathesis's
part: tests/app/test_schemathesis.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from wirelab.app import Config, WirelabApp
from wirelab.app.openapi import build_document
from wirelab.testing import ServerProcess

# OpenAPI 3.1 §4.8.9: the fixed fields of a Path Item that are operations.
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _document() -> dict[str, Any]:
    return build_document(max_image_bytes=Config().max_image_bytes)


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_an_operation_and_every_operation_a_route(tmp_path: Path) -> None:
    """HEAD, which the router answers for every GET, is implied on both sides; a HEAD with a
    handler of its own (tus) is a route and an operation."""
    app = WirelabApp(Config(data_dir=tmp_path))
    served = set(app.router.routes())
    documented = _operations(_document())
    assert served == documented, (
        f"served but not documented: {sorted(served - documented)}; "
        f"documented but not served: {sorted(documented - served)}"
    )
    assert ("HEAD", "/uploads/{upload_id}") in served and ("HEAD", "/jobs/{job_id}") not in served


def test_the_document_is_valid_openapi_3_1() -> None:
    document = _document()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_operation_has_an_id_and_every_refusal_is_a_problem() -> None:
    """RFC 9457: errors are application/problem+json, all of them one schema."""
    document = _document()
    operations = [item[m] for item in document["paths"].values() for m in item if m in METHODS]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids)), ids
    for operation in operations:
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (
                    operation["operationId"],
                    status,
                )


def test_websockets_are_described_but_are_no_operations() -> None:
    document = _document()
    assert set(document["x-websockets"]) == {"/ws", "/ws/echo"}
    assert not {"/ws", "/ws/echo"} & set(document["paths"])


def test_the_server_serves_the_document(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == _document()
