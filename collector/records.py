"""The operators' machine record (``/api/v1/machines``, docs/HTTP.md), declared once as a
pydantic model: the API builds every answer through it, and its JSON Schema is the model's.

The public capacity record shared with other plants is another one, with its own contract
(collector/capacity/schema.py): this one is the plant's own view, reasons included.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from collector.core.figures import availability, idle_hours, utilization
from collector.core.model import NS_PER_S, State
from collector.tracker import TrackerStatus


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StateSeconds(_Record):
    """Time in each state since the collector started (or resumed) tracking the machine."""

    busy: float = Field(ge=0)
    idle: float = Field(ge=0)
    setup: float = Field(ge=0)
    down: float = Field(ge=0)
    offline: float = Field(ge=0)


class MachineStatus(_Record):
    machine: str = Field(description="Machine id.")
    plant: str
    line: str
    cell: str
    state: Literal["busy", "idle", "setup", "down", "offline"]
    since: float = Field(description="When the state began, Unix seconds (with debounce, when it really began).")
    reason: str = Field(description="Why the rules chose the state (the rule's reason), or why it is offline.")
    seconds: StateSeconds
    utilization: float | None = Field(ge=0, le=1, description="busy / known time; null: nothing known yet.")
    availability: float | None = Field(ge=0, le=1, description="(busy + idle) / known time; null: nothing known yet.")
    idle_hours: float = Field(ge=0, description="Idle time in hours, as in seconds.idle.")


def machine_status(machine: str, status: TrackerStatus) -> dict[str, Any]:
    """The record of ``machine`` now, as the API answers it."""
    return MachineStatus.model_validate({
        "machine": machine, "plant": status.machine.plant, "line": status.machine.line, "cell": status.machine.cell,
        "state": status.state.value, "since": status.since_ns / NS_PER_S, "reason": status.reason,
        "seconds": {s.value: status.totals_ns.get(s, 0) / NS_PER_S for s in State},
        "utilization": utilization(status.totals_ns), "availability": availability(status.totals_ns),
        "idle_hours": idle_hours(status.totals_ns),
    }).model_dump(mode="json")


__all__ = ["MachineStatus", "StateSeconds", "machine_status"]
