"""The exchange's API responses as pydantic models, and its OpenAPI 3.1 document generated from
them (the offer itself is the published record's JSON Schema, plus what the exchange adds)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from collector import __version__
from collector.capacity.schema import MACHINE

JSON = dict[str, Any]
Capability = str | int | float | bool | list[str | int | float | bool]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExchangeInfo(_Model):
    """What the exchange adds to a plant's record."""

    plant_online: bool | None = Field(description="The plant feed's last status; null: no status seen.")
    evidence_age_s: float | None = Field(description=(
        "Seconds since the plant made the record (`updated`); when its source cannot tell silence from idle, "
        "since the machine's last reading (`evidence.last_heard`) if that is older. Null: never heard."))
    stale: bool = Field(description="The evidence is older than the exchange's bound (or unknown): never free now.")
    silence_detected: bool = Field(description=(
        "The plant's source tells a silent machine from an idle one (`evidence.silence_detected_by` not empty)."))
    received: str = Field(description="When this exchange received the record (UTC).")
    free_hours_next_24h: float = Field(description="Expected free hours in the next 24 hours, from the forecast.")
    free_hours_next_7d: float = Field(description="Expected free hours in the next 7 days, from the forecast.")


class Window(_Model):
    start: str
    end: str
    expected_free_hours: float


class SearchMachine(_Model):
    plant: str
    machine: str
    name: str
    kind: str
    line: str
    capabilities: dict[str, Capability]
    state: str
    free_now: bool
    free_hours: float = Field(description="Expected free hours in the search window.")
    cumulative_free_hours: float = Field(description="Free hours of this machine and every one ranked above it.")
    windows: list[Window] = Field(description="Runs of hours at or above the plant's threshold, in the window.")
    evidence_age_s: float | None


class SearchResult(_Model):
    hours: float
    within_days: float
    from_: str = Field(alias="from", description="Start of the search window (now, UTC).")
    to: str
    free_hours_total: float = Field(description="Expected free hours of every matching machine.")
    enough: bool = Field(description="free_hours_total reaches hours.")
    machines_needed: int | None = Field(
        description="How many machines from the top cover hours; null: not within the list.")
    matching_machines: int
    machines: list[SearchMachine]


class Plant(_Model):
    plant: str
    online: bool | None
    updated: str | None
    offers: int
    free_now: int


class Health(_Model):
    ok: bool = Field(description="Subscribed to the broker: the index follows the retained offers.")
    offers: int
    plants: int


def offer_schema() -> JSON:
    schema = copy.deepcopy(MACHINE)
    schema["required"] = [*schema["required"], "exchange"]
    schema["properties"]["exchange"] = {"$ref": "#/components/schemas/ExchangeInfo"}
    return schema


def _query(name: str, description: str, schema: JSON | None = None, required: bool = False) -> JSON:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_FILTERS = [
    _query("plant", "Plant (repeatable: all must match)."),
    _query("kind", "Machine type, e.g. lathe."),
    _query("line", "Line."),
]
_CAPS = ("Capability filters are written raw in the query string: `capability.<name><op><value>` with op `=`, "
         "`>=`, `<=`, `>`, `<`, e.g. `capability.process=milling&capability.max_diameter_mm>=300` "
         "(see docs/EXCHANGE.md).")


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


_ERROR: JSON = {"description": "What is wrong with the query.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}


def openapi() -> JSON:
    components: JSON = {"Offer": offer_schema()}
    for model in (SearchResult, Plant, Health, ExchangeInfo):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Capacity exchange", "version": __version__,
                 "description": "Every plant's public machines from their retained capacity offers, checked against "
                                "the published schema, searchable by capability and forecast free hours."},
        "paths": {
            "/api/v1/offers": {"get": {
                "operationId": "listOffers", "summary": "Offers of every plant, free now first",
                "description": _CAPS + " Paged: `limit` offers from `offset`; `X-Total-Count` says how many "
                                       "match, and `Link: <…>; rel=\"next\"` gives the next page while there is one.",
                "parameters": [*_FILTERS, _query(
                    "free_now", "Only offers free now (true) or not (false).", {"type": "string",
                                                                                 "enum": ["true", "false"]}),
                    _query("limit", "At most this many offers (default 100).",
                           {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _query("offset", "Skip this many matching offers (default 0).",
                           {"type": "integer", "minimum": 0, "maximum": 2**31})],
                "responses": {"200": _json({"type": "array", "items": _ref("Offer")}, "A page of the matching offers.")
                              | {"headers": {
                                  "X-Total-Count": {"description": "Matching offers in all.",
                                                    "schema": {"type": "integer", "minimum": 0}},
                                  "Link": {"description": "The next page (RFC 8288, rel=\"next\"), while there is one.",
                                           "schema": {"type": "string"}}}},
                              "400": _ERROR}}},
            "/api/v1/offers/{plant}/{machine}": {"get": {
                "operationId": "getOffer", "summary": "One offer, by the topic levels of its plant and machine",
                "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                               for n in ("plant", "machine")],
                "responses": {"200": _json(_ref("Offer"), "The offer."),
                              "404": {"description": "No such offer.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/v1/search": {"get": {
                "operationId": "search", "summary": "Machines ranked by expected free hours in a window",
                "description": _CAPS, "parameters": [
                    *_FILTERS,
                    _query("hours", "Machine-hours wanted.", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e9},
                           True),
                    _query("within_days", "Window from now, in days (default 7, at most 7).",
                           {"type": "number", "exclusiveMinimum": 0, "maximum": 7}),
                    _query("limit", "At most this many machines (default 50).",
                           {"type": "integer", "minimum": 1, "maximum": 10000})],
                "responses": {"200": _json(_ref("SearchResult"), "The ranked machines."), "400": _ERROR}}},
            "/api/v1/plants": {"get": {
                "operationId": "listPlants", "summary": "Plants with their status and offer counts",
                "responses": {"200": _json({"type": "array", "items": _ref("Plant")}, "Every plant seen.")}}},
            "/healthz": {"get": {
                "operationId": "health", "summary": "Subscribed to the broker?",
                "responses": {"200": _json(_ref("Health"), "Subscribed."),
                              "503": _json(_ref("Health"), "Not (yet) subscribed.")}}},
        },
        "components": {"schemas": components},
    }
