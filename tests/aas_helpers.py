"""Reading what the AAS routes serve, for the AAS tests: through the BaSyx SDK's strict decoder,
page by page, and through the AAS compliance tool's JSON checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from basyx.aas.adapter.json import AASToJsonEncoder, StrictAASFromJsonDecoder

# The AAS routes both OpenAPI documents list (the collector's and the exchange's).
AAS_PATHS = {"/description", "/shells", "/shells/{aasIdentifier}", "/shells/{aasIdentifier}/submodel-refs",
             "/shells/{aasIdentifier}/submodels/{submodelIdentifier}", "/submodels",
             "/submodels/{submodelIdentifier}"}


def objects(items: list[Any]) -> list[Any]:
    """AAS JSON objects read back by the SDK's strict decoder (it raises on anything non-standard)."""
    return [json.loads(json.dumps(i), cls=StrictAASFromJsonDecoder) for i in items]


def read_back(obj: object) -> Any:
    """An SDK object through the SDK: its encoder, then its strict decoder."""
    return json.loads(json.dumps(obj, cls=AASToJsonEncoder), cls=StrictAASFromJsonDecoder)


def next_query(body: dict[str, Any], limit: int, query: dict[str, str]) -> dict[str, Any] | None:
    """The query of the page after ``body``; None: it was the last."""
    cursor = body["paging_metadata"].get("cursor")
    return None if cursor is None else {**query, "limit": limit, "cursor": cursor}


def walk(http: Any, path: str, limit: int, **query: str) -> list[Any]:
    """Every page of a paged list (a synchronous client), following paging_metadata.cursor."""
    out: list[Any] = []
    params: dict[str, Any] | None = {**query, "limit": limit}
    while params is not None:
        page = http.get(path, params=params)
        assert page.status_code == 200, page.text
        out += page.json()["result"]
        params = next_query(page.json(), limit, query)
    return out


def compliance(environment: dict[str, Any], tmp: Path) -> list[str]:
    """The AAS compliance tool's JSON checks on an environment (the official AAS 3.0 JSON Schema,
    then reading it with the SDK): each step's name and status, e.g. ``SUCCESS: Validate ...``."""
    from aas_compliance_tool import compliance_check_json as check
    from aas_compliance_tool.state_manager import ComplianceToolStateManager

    path = tmp / "environment.json"
    path.write_text(json.dumps(environment), encoding="utf-8")
    steps = []
    for run in (check.check_schema, check.check_deserialization):
        manager = ComplianceToolStateManager()
        run(str(path), manager)
        steps += [f"{step.status.name}: {step.name}" for step in manager.steps]
    return steps
