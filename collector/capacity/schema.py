"""What the capacity feed shares, declared once as pydantic models: the machine record (the API's
items and the MQTT messages, built by ``records.record``) and the feed's status message. Every
description of them is generated from here:

- the JSON Schemas (draft 2020-12) ``MACHINE`` and ``FEED_STATUS`` (self-contained: the exchange
  validates offers against them with jsonschema-rs), and ``docs/capacity-feed.schema.json``
  (``python -m collector.capacity.schema``; a test fails when it is stale);
- the OpenAPI components of the capacity API (``components``, collector/capacity/openapi.py).

The published schema is a contract with every platform that reads the feed: a field may be
added as optional, never renamed, retyped or made required (``evidence`` came that way).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

JSON = dict[str, Any]
_SCALAR: JSON = {"type": ["string", "number", "boolean"]}

Time = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""A UTC (or, in the forecast, local with its offset) ISO 8601 time, e.g. 2026-03-02T07:00:00Z."""
Scalar = str | int | float | bool
Capability = Annotated[Scalar | list[Scalar],
                       WithJsonSchema({"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]})]
State = Literal["busy", "idle", "setup", "down", "offline"]
Silence = Literal["status_topic", "sparkplug_death", "opcua_session", "mtconnect_availability", "simulated",
                  "stale_after"]
Share = Annotated[float, Field(ge=0, le=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Window(_Record):
    start: Time = Field(description="First hour of the window (local time of the plant, with its offset).")
    end: Time = Field(description="End of the window's last hour.")
    expected_free_hours: float = Field(ge=0, description="Sum of the idle shares of the window's hours.")


class FreeHours(_Record):
    """Idle hours rolled up in the last 24 hours and 7 days (whole clock hours)."""

    last_24h: float = Field(ge=0)
    last_7d: float = Field(ge=0)


class Forecast(_Record):
    timezone: str
    threshold: Share
    start: Time = Field(description="Start of the current hour: idle_share[0] is this hour.")
    start_hour_of_week: int = Field(ge=0, le=167, description="Hour of the week of start; Monday 00:00 is 0.")
    idle_share: list[Share | None] = Field(min_length=168, max_length=168, description=(
        "Usual idle share of each of the next 168 hours; null: never seen."))
    windows: list[Window]


class Evidence(_Record):
    """What the state rests on. Optional: feeds before it did not send it, and a reader treats its
    absence as a source that cannot tell silence from idle."""

    last_heard: Time | None = Field(description=(
        "When the collector last got a reading of the machine; null: none since it started."))
    silence_detected_by: list[Silence] = Field(json_schema_extra={"uniqueItems": True}, description=(
        "How the collector tells a machine gone silent from an idle one (each takes it offline). Empty: it "
        "cannot: an idle machine that stops sending stays idle, so its free capacity is only as good as "
        "last_heard is recent."))


def _no_default(schema: JSON) -> None:
    schema.pop("default", None)  # absent, never null


class MachineRecord(_Record):
    """A public machine's capacity: the API's item, and the retained MQTT message on
    ``<prefix>/<plant>/<machine>``."""

    machine: str = Field(description="Machine id.")
    name: str
    plant: str
    line: str
    kind: str = Field(description="Machine type, e.g. lathe.")
    nameplate: dict[str, str] = Field(description=(
        "What the machine says it is (OPC UA DI Identification, or as configured): manufacturer, model, "
        "serial_number, product_instance_uri...; empty: unknown."))
    capabilities: dict[str, Capability] = Field(description="What the machine offers, as configured.")
    state: State
    since: Time = Field(description="When the current state began (UTC).")
    free_now: bool = Field(description="The state is idle: the machine could take work now.")
    idle_since: Time | None = Field(description="Same as since when idle, else null.")
    free_hours: FreeHours
    forecast: Forecast
    # Optional (never null): records made before it are still valid, see Evidence.
    evidence: Evidence | SkipJsonSchema[None] = Field(None, json_schema_extra=_no_default)
    updated: Time = Field(description="When this record was made.")
    simulated: Literal[True] | SkipJsonSchema[None] = Field(None, json_schema_extra=_no_default, description=(
        "Present only when the record's history (free hours, forecast) was generated, not measured: "
        "`collector demo`'s simulated plant. Never set by a collector reading real machines."))

    @field_validator("evidence", "simulated", mode="before")
    @classmethod
    def _absent_not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class FeedStatus(_Record):
    """The feed itself, retained on ``<prefix>/<plant>/_status`` (``online: false`` is also its will)."""

    plant: str
    online: bool
    updated: Time


def _inlined(model: type[BaseModel]) -> JSON:
    """``model``'s JSON Schema, self-contained: every ``$ref`` replaced by its definition, a
    model's docstring as its description, and no generated titles."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:  # the field's own keys (its description) win over its model's
            return walk(defs[node["$ref"].rsplit("/", 1)[1]] | {k: v for k, v in node.items() if k != "$ref"})
        return {key: {name: walk(v) for name, v in value.items()} if key == "properties"
                else " ".join(value.split()) if key == "description" else walk(value)
                for key, value in node.items() if key != "title"}

    return walk(schema)  # type: ignore[no-any-return]


MACHINE: JSON = _inlined(MachineRecord)
FEED_STATUS: JSON = _inlined(FeedStatus)


def components() -> JSON:
    """The OpenAPI components of the records (the exchange's way: ``$ref`` to each model)."""
    schema = MachineRecord.model_json_schema(ref_template="#/components/schemas/{model}")
    out: JSON = schema.pop("$defs", {})
    out["Machine"] = schema
    return out


def feed_schema() -> JSON:
    """The schema of every message under the feed's topic prefix."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Capacity feed message",
        "description": ("A retained message on <prefix>/<plant>/<machine> (a public machine's capacity) or on "
                        "<prefix>/<plant>/_status (the feed itself; `online: false` is also its last will)."),
        "oneOf": [{"$ref": "#/$defs/machine"}, {"$ref": "#/$defs/status"}],
        "$defs": {"machine": MACHINE, "status": FEED_STATUS},
    }


def main() -> None:
    print(json.dumps(feed_schema(), indent=2))


if __name__ == "__main__":
    main()
