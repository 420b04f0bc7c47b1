"""The figures of docs/DESIGN.md, over any totals: known = total - offline;
utilization = busy / known; availability = (busy + idle) / known; free capacity = idle hours."""

from __future__ import annotations

from collections.abc import Mapping

from collector.core.model import NS_PER_S, State


def known_ns(totals: Mapping[State, int]) -> int:
    return sum(totals.values()) - totals.get(State.OFFLINE, 0)


def utilization(totals: Mapping[State, int]) -> float | None:
    known = known_ns(totals)
    return totals.get(State.BUSY, 0) / known if known else None


def availability(totals: Mapping[State, int]) -> float | None:
    known = known_ns(totals)
    return (totals.get(State.BUSY, 0) + totals.get(State.IDLE, 0)) / known if known else None


def idle_hours(totals: Mapping[State, int]) -> float:
    return totals.get(State.IDLE, 0) / NS_PER_S / 3600
