"""InfluxDB line protocol for ``machine_state`` and ``machine_availability`` (docs/DESIGN.md schema).

Escaping follows the line protocol reference: measurement names escape commas and spaces; tag
keys and values escape commas, equals signs and spaces; string field values escape double
quotes and backslashes.
"""

from __future__ import annotations

import functools

from collector.core.model import NS_PER_S, Interval, MachineInfo, Output, State, StateChange

MEASUREMENT_STATE = "machine_state"
MEASUREMENT_AVAILABILITY = "machine_availability"


def escape_tag(text: str) -> str:
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ ").replace("\n", "\\n"))


def escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_field(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return quote_string(str(value))


def encode(measurement: str, tags: dict[str, str], fields: dict[str, object], ts_ns: int) -> str:
    head = escape_measurement(measurement)
    for key in sorted(tags):  # sorted tags: InfluxDB's recommended order, and stable output
        if tags[key]:
            head += f",{escape_tag(key)}={escape_tag(tags[key])}"
    body = ",".join(f"{escape_tag(k)}={format_field(v)}" for k, v in fields.items())
    return f"{head} {body} {ts_ns}"


def seconds(ns: int) -> float:
    return ns / NS_PER_S


@functools.lru_cache(maxsize=16384)
def _head(measurement: str, machine: MachineInfo) -> str:
    """Measurement and tags of a machine: the same for every point, so encoded once (the
    escaping of tags was most of the encoding time)."""
    return encode(measurement, machine.tags(), {}, 0).rsplit(" ", 2)[0]


def state_change(change: StateChange) -> str:
    # The schema's field names need no escaping; only the values are formatted.
    return (f"{_head(MEASUREMENT_STATE, change.machine)} state=\"{change.state.value}\","
            f"state_code={change.state.code}i,previous=\"{change.previous.value}\","
            f"previous_s={seconds(change.previous_ns)!r},reason={quote_string(change.reason)} {change.ts_ns}")


def interval(roll_up: Interval) -> str:
    secs = roll_up.seconds_ns
    fields = ",".join(f"{s.value}_s={seconds(secs.get(s, 0))!r}" for s in State)
    return (f"{_head(MEASUREMENT_AVAILABILITY, roll_up.machine)} {fields},state=\"{roll_up.state.value}\" "
            f"{roll_up.start_ns}")


def to_line(output: Output) -> str:
    if isinstance(output, StateChange):
        return state_change(output)
    return interval(output)
