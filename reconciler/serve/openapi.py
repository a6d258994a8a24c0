"""The OpenAPI 3.1 document, rendered from the same endpoint table that builds the routes."""

from __future__ import annotations

from typing import Any

from reconciler import __version__
from reconciler.serve.api import ENDPOINTS, Endpoint
from reconciler.serve.wire import Param

ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "hint": {"type": "string"},
    },
}


def _param(p: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": p.type.value}
    if p.default is not None:
        schema["default"] = p.default
    if p.minimum is not None:
        schema["minimum"] = p.minimum
    if p.maximum is not None:
        schema["maximum"] = p.maximum
    if p.choices:
        schema["enum"] = list(p.choices)
    return {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": schema}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(e: Endpoint, secured: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "array", "items": {"type": "object"}} if e.returns == "array" else {"type": "object"}
    if e.media_type != "application/json":
        body = {"type": "string"}
    ok: dict[str, Any] = {"description": "OK", "content": {e.media_type: {"schema": body}}}
    if e.returns == "array":
        ok["headers"] = {"X-Total-Count": {"description": "Rows matching the filters, over all pages.", "schema": {"type": "integer"}}}
    parameters = [{"name": n, "in": "path", "required": True, "description": d, "schema": {"type": "string"}} for n, d in e.path_params.items()] + [
        _param(p) for p in e.params
    ]
    responses: dict[str, Any] = {"200": ok}
    if e.params:
        responses["400"] = _error("A query parameter is out of its type or range.")
    if e.path_params:
        responses["404"] = _error("No such resource.")
    if e.tag == "experiments":
        responses["501"] = _error("Experiments are not part of this build.")
    if secured:
        responses["401"] = _error("The token is missing or wrong.")
    responses["405"] = _error("Only GET (and HEAD) are allowed: changes come through git.")
    return {
        "operationId": e.name,
        "summary": e.summary.strip().splitlines()[0],
        "tags": [e.tag],
        "parameters": parameters,
        "responses": responses,
    }


def openapi_document(secured: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "reconciler",
            "version": __version__,
            "description": "Read-only state of the reconciler database: what is live, from which commit, what drifted, how runs scored.",
        },
        "paths": {e.url: {"get": _operation(e, secured)} for e in ENDPOINTS},
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
