"""JSON Schemas (draft 2020-12) of what the capacity feed shares: the machine record (the API's
items and the MQTT messages) and the feed's status message. ``docs/capacity-feed.schema.json``
is generated from here (``python -m collector.capacity.schema``; a test fails when it is stale)."""

from __future__ import annotations

import json
from typing import Any

JSON = dict[str, Any]
_TIME: JSON = {"type": "string", "format": "date-time"}
_SCALAR: JSON = {"type": ["string", "number", "boolean"]}

WINDOW: JSON = {
    "type": "object", "additionalProperties": False,
    "required": ["start", "end", "expected_free_hours"],
    "properties": {
        "start": _TIME | {"description": "First hour of the window (local time of the plant, with its offset)."},
        "end": _TIME | {"description": "End of the window's last hour."},
        "expected_free_hours": {"type": "number", "minimum": 0,
                                "description": "Sum of the idle shares of the window's hours."},
    },
}

MACHINE: JSON = {
    "type": "object", "additionalProperties": False,
    "required": ["machine", "name", "plant", "line", "kind", "nameplate", "capabilities", "state", "since",
                 "free_now", "idle_since", "free_hours", "forecast", "updated"],
    "properties": {
        "machine": {"type": "string", "description": "Machine id."},
        "name": {"type": "string"},
        "plant": {"type": "string"},
        "line": {"type": "string"},
        "kind": {"type": "string", "description": "Machine type, e.g. lathe."},
        "nameplate": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": ("What the machine says it is (OPC UA DI Identification, or as configured): "
                                      "manufacturer, model, serial_number, product_instance_uri...; empty: unknown.")},
        "capabilities": {"type": "object", "description": "What the machine offers, as configured.",
                         "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}},
        "state": {"enum": ["busy", "idle", "setup", "down", "offline"]},
        "since": _TIME | {"description": "When the current state began (UTC)."},
        "free_now": {"type": "boolean", "description": "The state is idle: the machine could take work now."},
        "idle_since": {"anyOf": [_TIME, {"type": "null"}], "description": "Same as since when idle, else null."},
        "free_hours": {
            "type": "object", "additionalProperties": False, "required": ["last_24h", "last_7d"],
            "description": "Idle hours rolled up in the last 24 hours and 7 days (whole clock hours).",
            "properties": {"last_24h": {"type": "number", "minimum": 0}, "last_7d": {"type": "number", "minimum": 0}},
        },
        "forecast": {
            "type": "object", "additionalProperties": False,
            "required": ["timezone", "threshold", "start", "start_hour_of_week", "idle_share", "windows"],
            "properties": {
                "timezone": {"type": "string"},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                "start": _TIME | {"description": "Start of the current hour: idle_share[0] is this hour."},
                "start_hour_of_week": {"type": "integer", "minimum": 0, "maximum": 167,
                                       "description": "Hour of the week of start; Monday 00:00 is 0."},
                "idle_share": {"type": "array", "minItems": 168, "maxItems": 168,
                               "items": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}]},
                               "description": "Usual idle share of each of the next 168 hours; null: never seen."},
                "windows": {"type": "array", "items": WINDOW},
            },
        },
        "evidence": {
            "type": "object", "additionalProperties": False, "required": ["last_heard", "silence_detected_by"],
            "description": ("What the state rests on. Optional: feeds before it did not send it, and a reader "
                            "treats its absence as a source that cannot tell silence from idle."),
            "properties": {
                "last_heard": {"anyOf": [_TIME, {"type": "null"}],
                               "description": "When the collector last got a reading of the machine; null: none "
                                              "since it started."},
                "silence_detected_by": {
                    "type": "array", "uniqueItems": True,
                    "items": {"enum": ["status_topic", "sparkplug_death", "opcua_session", "mtconnect_availability",
                                       "simulated", "stale_after"]},
                    "description": ("How the collector tells a machine gone silent from an idle one (each takes it "
                                    "offline). Empty: it cannot: an idle machine that stops sending stays idle, so "
                                    "its free capacity is only as good as last_heard is recent."),
                },
            },
        },
        "updated": _TIME | {"description": "When this record was made."},
        "simulated": {"const": True, "description": (
            "Present only when the record's history (free hours, forecast) was generated, not measured: "
            "`collector demo`'s simulated plant. Never set by a collector reading real machines.")},
    },
}

FEED_STATUS: JSON = {
    "type": "object", "additionalProperties": False, "required": ["plant", "online", "updated"],
    "properties": {"plant": {"type": "string"}, "online": {"type": "boolean"}, "updated": _TIME},
}


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
