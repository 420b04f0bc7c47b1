"""The OpenAPI 3.1 description of the capacity API, served at ``/api/v1/openapi.json``: the
paths written here, the records' schemas generated from their models (collector/capacity/schema.py)."""

from __future__ import annotations

from typing import Any

from collector import __version__
from collector.capacity.schema import components

JSON = dict[str, Any]

_ERROR: JSON = {"description": "What is wrong.", "content": {"text/plain": {"schema": {"type": "string"}}}}
_UNAUTHORIZED: JSON = {"description": "`http.token` is set and the request has no matching bearer token.",
                       "content": {"text/plain": {"schema": {"type": "string"}}}}


def _query(name: str, description: str, schema: JSON) -> JSON:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def openapi(token: bool) -> JSON:
    """``token``: whether the collector requires a bearer token (``http.token`` set)."""
    security: JSON = {"security": [{"bearer": []}]} if token else {}
    list_op: JSON = {
        "operationId": "listCapacity",
        "summary": "Public machines with their state, free hours and forecast free windows",
        "description": ("Free now first. Filters combine with AND; a filter given twice must match twice. "
                        "`capability.<name>=<value>` matches a capability equal to the value (numbers compare "
                        "as numbers, a list matches when it holds the value), e.g. `capability.process=turning`."),
        "parameters": [
            _query("kind", "Machine type, e.g. lathe.", {"type": "string"}),
            _query("plant", "Plant.", {"type": "string"}),
            _query("line", "Line.", {"type": "string"}),
            _query("free_now", "Only machines idle now (true) or not idle now (false).",
                   {"type": "string", "enum": ["true", "false"]}),
        ],
        "responses": {
            "200": {"description": "The public machines that match.",
                    "content": {"application/json": {"schema": {"type": "array",
                                                                "items": {"$ref": "#/components/schemas/Machine"}}}}},
            "400": _ERROR,
            **({"401": _UNAUTHORIZED} if token else {}),
        },
        **security,
    }
    one_op: JSON = {
        "operationId": "getCapacity",
        "summary": "One public machine",
        "parameters": [{"name": "machine", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "Machine id."}],
        "responses": {
            "200": {"description": "The machine.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Machine"}}}},
            "404": {"description": "No public machine has this id.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **({"401": _UNAUTHORIZED} if token else {}),
        },
        **security,
    }
    doc: JSON = {
        "openapi": "3.1.0",
        "info": {"title": "Machine availability collector: capacity", "version": __version__,
                 "description": "Idle capacity of the machines this collector marks public, and when they are "
                                "usually free. Nothing of other machines appears here."},
        "paths": {"/api/v1/capacity": {"get": list_op}, "/api/v1/capacity/{machine}": {"get": one_op}},
        "components": {"schemas": components()},
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


def main() -> None:
    """``docs/capacity-openapi.json``: the document as a collector with ``http.token`` serves it."""
    import json

    print(json.dumps(openapi(token=True), indent=2))


if __name__ == "__main__":
    main()
