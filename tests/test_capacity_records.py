"""The capacity records declared once (collector/capacity/schema.py): the published documents are
generated from the models and current, the published schema keeps its contract with the
platforms that read it, and the models accept exactly what the schema accepts."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from collector.capacity.openapi import openapi
from collector.capacity.schema import FEED_STATUS, MACHINE, FeedStatus, MachineRecord, components
from tests.exchange_helpers import offer

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "exchange"
NOW = dt.datetime(2026, 3, 2, 7, 30, tzinfo=dt.UTC)


def test_the_openapi_document_is_up_to_date() -> None:
    """Test that docs/capacity-openapi.json is what `python -m collector.capacity.openapi` prints."""
    assert json.loads((ROOT / "docs" / "capacity-openapi.json").read_text()) == openapi(token=True), \
        "stale: .venv/bin/python -m collector.capacity.openapi > docs/capacity-openapi.json"


def test_the_served_description_takes_the_records_from_the_models() -> None:
    """Test that the OpenAPI components are the models' own schemas, and that the API answers
    with the machine record."""
    doc = openapi(token=False)
    assert doc["components"]["schemas"] == components()
    assert doc["components"]["schemas"]["Machine"]["properties"].keys() == MachineRecord.model_fields.keys()
    ok = doc["paths"]["/api/v1/capacity/{machine}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Machine"}


def test_the_published_schema_keeps_its_contract() -> None:
    """Test that the schema platforms validate against lists the same fields, required alike, as
    published before the models (a field may only be added as optional), and stays self-contained."""
    assert MACHINE["additionalProperties"] is False and FEED_STATUS["additionalProperties"] is False
    assert set(MACHINE["required"]) == {"machine", "name", "plant", "line", "kind", "nameplate", "capabilities",
                                        "state", "since", "free_now", "idle_since", "free_hours", "forecast",
                                        "updated"}
    assert set(MACHINE["properties"]) == set(MACHINE["required"]) | {"evidence", "simulated"}  # both added optional
    assert MACHINE["properties"]["state"]["enum"] == ["busy", "idle", "setup", "down", "offline"]
    assert set(FEED_STATUS["required"]) == set(FEED_STATUS["properties"]) == {"plant", "online", "updated"}
    assert "$ref" not in json.dumps(MACHINE) and "$ref" not in json.dumps(FEED_STATUS)


def _golden() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*.json"))]


@pytest.mark.parametrize("mutate", [
    lambda r: None,
    lambda r: r.pop("evidence"),  # a feed from before the evidence
    lambda r: r.update(evidence=None),
    lambda r: r.update(simulated=True),  # the demo's records
    lambda r: r.update(simulated=None),
    lambda r: r.update(simulated=False),
    lambda r: r.update(reason="alarm 17"),
    lambda r: r.update(state="sleeping"),
    lambda r: r["forecast"]["idle_share"].pop(),
    lambda r: r["forecast"].update(threshold=1.5),
    lambda r: r["forecast"]["idle_share"].__setitem__(3, None),
    lambda r: r["free_hours"].update(last_7d=-1),
    lambda r: r.update(idle_since=None),
    lambda r: r.update(since=7),
    lambda r: r["capabilities"].update(sizes=[1, "a", True], flag=False, depth=2.5),
    lambda r: r["capabilities"].update(nested={"a": 1}),
    lambda r: r["nameplate"].update(year=2019),
    lambda r: r["evidence"].update(silence_detected_by=["telepathy"]),
    lambda r: r.pop("updated"),
])
def test_the_model_accepts_exactly_what_the_published_schema_accepts(mutate: Any) -> None:
    """Test, with the pure-Python jsonschema (software we did not write), that a record and its
    mutations are valid against the published schema exactly when the model takes them."""
    validator = jsonschema.Draft202012Validator(MACHINE)
    for base in [offer("plant-a", "mill-1", NOW)] + [r for r in _golden() if "machine" in r]:
        rec = copy.deepcopy(base)
        mutate(rec)
        try:
            MachineRecord.model_validate_json(json.dumps(rec))
            taken = True
        except ValidationError:
            taken = False
        assert taken is validator.is_valid(rec), rec


def test_the_status_message_is_the_model() -> None:
    """Test that the golden status message is valid for both, and a status with more is refused by both."""
    status = next(r for r in _golden() if "online" in r)
    assert jsonschema.Draft202012Validator(FEED_STATUS).is_valid(status)
    assert FeedStatus.model_validate(status).model_dump() == status
    with pytest.raises(ValidationError):
        FeedStatus.model_validate({**status, "reason": "x"})
    assert not jsonschema.Draft202012Validator(FEED_STATUS).is_valid({**status, "reason": "x"})
