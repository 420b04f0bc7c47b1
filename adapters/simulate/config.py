"""``type: simulate``: a simulated plant, for the demo and for tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adapters.base import SourceConfig
from collector.core.durations import Duration
from collector.core.zones import TimeZoneName


class SimulateSource(SourceConfig):
    type: Literal["simulate"] = Field(description="A simulated plant: machines with work cycles, setups and alarms.")
    seed: int | None = Field(None, description="Random seed; the same seed gives the same plant.")
    publish_every: Duration = Field(1.0, gt=0, description="How often each machine publishes its signals.")
    speed: float = Field(1.0, gt=0, description="Time-lapse factor for the simulated behaviour (10: ten times faster cycles).")
    shifts: bool = Field(False, description="Machines follow a plant's week: shifts Monday to Friday 06-22 and Saturday 06-14 with more or fewer orders per shift, switched off, idle or unmanned outside them (per machine, seeded). `collector demo` turns it on.")
    timezone: TimeZoneName = Field("UTC", description="IANA time zone of the shifts (`collector demo` uses `capacity.timezone`).", examples=["Europe/Berlin"])

    def stamps_at_source(self) -> bool:
        return False  # samples are made at the moment they are handed over

    def silence_detected_by(self) -> tuple[str, ...]:
        return ("simulated",)  # in-process: it never goes silent
