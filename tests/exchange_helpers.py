"""Offers as a plant's feed publishes them (valid against docs/capacity-feed.schema.json), for
the exchange's tests: built here so each test states only what it varies."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

PREFIX = "capacity"
HOUR = dt.timedelta(hours=1)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def offer(plant: str, machine: str, now: dt.datetime, *, state: str = "idle", kind: str = "mill",
          capabilities: dict[str, Any] | None = None, share: float | None = 0.5,
          shares: list[float | None] | None = None, updated: dt.datetime | None = None,
          threshold: float = 0.5) -> dict[str, Any]:
    start = now.replace(minute=0, second=0, microsecond=0)
    idle = state == "idle"
    since = iso(now - HOUR)
    return {
        "machine": machine, "name": machine.title(), "plant": plant, "line": "line-1", "kind": kind,
        "nameplate": {}, "capabilities": capabilities if capabilities is not None else {"process": "milling"},
        "state": state, "since": since, "free_now": idle, "idle_since": since if idle else None,
        "free_hours": {"last_24h": 3.0, "last_7d": 20.0},
        "forecast": {"timezone": "UTC", "threshold": threshold, "start": start.isoformat(),
                     "start_hour_of_week": start.weekday() * 24 + start.hour,
                     "idle_share": shares if shares is not None else [share] * 168, "windows": []},
        "updated": iso(updated or now),
    }


def payload(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def status(plant: str, online: bool, now: dt.datetime) -> bytes:
    return json.dumps({"plant": plant, "online": online, "updated": iso(now)}).encode()
