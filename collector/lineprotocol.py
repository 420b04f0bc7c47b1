"""InfluxDB line protocol for ``machine_state`` and ``machine_availability`` (DESIGN.md schema).

Escaping follows the line protocol reference: measurement names escape commas and spaces; tag
keys and values escape commas, equals signs and spaces; string field values escape double
quotes and backslashes.
"""

from __future__ import annotations

from collector.model import NS_PER_S, Interval, Output, State, StateChange

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


def state_change(change: StateChange) -> str:
    return encode(MEASUREMENT_STATE, change.machine.tags(), {
        "state": change.state.value,
        "state_code": change.state.code,
        "previous": change.previous.value,
        "previous_s": seconds(change.previous_ns),
        "reason": change.reason,
    }, change.ts_ns)


def interval(roll_up: Interval) -> str:
    fields: dict[str, object] = {f"{s.value}_s": seconds(roll_up.seconds_ns.get(s, 0)) for s in State}
    fields["state"] = roll_up.state.value
    return encode(MEASUREMENT_AVAILABILITY, roll_up.machine.tags(), fields, roll_up.start_ns)


def to_line(output: Output) -> str:
    if isinstance(output, StateChange):
        return state_change(output)
    return interval(output)
