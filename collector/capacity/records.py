"""The public record of a machine (what the API, the page and the feed share) and the API's
filters. The record is a ``MachineRecord`` (collector/capacity/schema.py, where it is declared
once): only what it lists goes out, no reasons, signals or values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import SourceConfig
from collector.capacity.forecast import Forecast, forecast
from collector.capacity.profile import ProfileStore
from collector.capacity.schema import MachineRecord
from collector.capacity_settings import Capability, CapacitySettings
from collector.core.errors import BadInputError
from collector.core.model import NS_PER_S, State
from collector.machines import ResolvedMachine
from collector.tracker import TrackerStatus

DAY_NS = 86_400 * NS_PER_S


def iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS_PER_S, dt.UTC).isoformat().replace("+00:00", "Z")


def silence_detected_by(machine: ResolvedMachine, source: SourceConfig | None) -> list[str]:
    """How the collector tells this machine gone silent from idle (the record's evidence); empty:
    it cannot, and the machine's ``idle`` may be a machine that stopped sending long ago."""
    found = list(source.silence_detected_by()) if source is not None else []
    if machine.stale_after_s is not None:
        found.append("stale_after")
    return found


def record(machine: ResolvedMachine, status: TrackerStatus, store: ProfileStore, settings: CapacitySettings,
           now_ns: int, fc: Forecast | None = None, silence: Sequence[str] = (), *,
           simulated: bool = False) -> dict[str, Any]:
    """``fc``: the machine's forecast if the caller keeps one (it changes only with the hour and
    the profile); computed here otherwise. ``silence``: ``silence_detected_by`` of the machine.
    ``simulated``: the history behind it was generated (`collector demo`), said in the record."""
    info = machine.info
    if not info.public:  # the one gate every channel goes through
        raise ValueError(f"machine {info.id} is not public")
    idle = status.state is State.IDLE
    if fc is None:
        fc = forecast(store.profile(info.id), dt.datetime.fromtimestamp(now_ns / NS_PER_S, store.zone),
                      settings.threshold)
    return MachineRecord.model_validate({
        "machine": info.id, "name": info.name or info.id, "plant": info.plant, "line": info.line, "kind": info.kind,
        "nameplate": dict(info.nameplate),
        "capabilities": machine.capabilities, "state": status.state.value, "since": iso(status.since_ns),
        "free_now": idle, "idle_since": iso(status.since_ns) if idle else None,
        "free_hours": {"last_24h": round(store.idle_hours_since(info.id, now_ns - DAY_NS), 3),
                       "last_7d": round(store.idle_hours_since(info.id, now_ns - 7 * DAY_NS), 3)},
        "forecast": {
            "timezone": settings.timezone, "threshold": settings.threshold, "start": fc.start.isoformat(),
            "start_hour_of_week": fc.start_hour_of_week,
            "idle_share": [None if s is None else round(s, 4) for s in fc.shares],
            "windows": [{"start": w.start.isoformat(), "end": w.end.isoformat(),
                         "expected_free_hours": round(w.expected_free_hours, 3)} for w in fc.windows],
        },
        "evidence": {"last_heard": None if status.last_reading_ns is None else iso(status.last_reading_ns),
                     "silence_detected_by": list(silence)},
        "updated": iso(now_ns),
        **({"simulated": True} if simulated else {}),
    }).model_dump(mode="json", exclude=None if simulated else {"simulated"})  # absent, never null


class FilterError(BadInputError):
    """A query parameter the API cannot use; the message names it."""


_FIELDS = ("kind", "plant", "line")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _same(have: Capability, want: str) -> bool:
    if isinstance(have, list):
        return any(_same(v, want) for v in have)
    if isinstance(have, bool):
        return _BOOL.get(want.lower()) is have
    if isinstance(have, int | float):
        try:
            return float(want) == float(have)
        except ValueError:
            return False
    return have == want


def matcher(query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Check the filters once; returns them parsed. Repeated parameters must all match."""
    parsed: dict[str, Any] = {"fields": {}, "capabilities": {}, "free_now": None}
    for key, values in query.items():
        if key in _FIELDS:
            parsed["fields"][key] = list(values)
        elif key == "free_now":
            if len(values) != 1 or values[0].lower() not in _BOOL:
                raise FilterError("free_now: expected true or false")
            parsed["free_now"] = _BOOL[values[0].lower()]
        elif key.startswith("capability.") and len(key) > len("capability."):
            parsed["capabilities"][key[len("capability."):]] = list(values)
        else:
            raise FilterError(f"unknown filter {key!r}; use kind, plant, line, free_now, capability.<name>")
    return parsed


def matches(rec: Mapping[str, Any], parsed: Mapping[str, Any]) -> bool:
    if parsed["free_now"] is not None and rec["free_now"] is not parsed["free_now"]:
        return False
    if any(rec[k] != v for k, values in parsed["fields"].items() for v in values):
        return False
    caps = rec["capabilities"]
    return all(name in caps and _same(caps[name], v) for name, values in parsed["capabilities"].items() for v in values)
