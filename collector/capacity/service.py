"""The capacity feed of a running collector: the profile store fed from the engine's output,
and the public records read from the engine's trackers."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from collector.capacity.forecast import Forecast, forecast
from collector.capacity.profile import QUARTER_NS, ProfileStore
from collector.capacity.records import record, silence_detected_by
from collector.capacity_settings import CapacitySettings
from collector.config import Config
from collector.core.model import NS_PER_S, Interval, Output, StateChange
from collector.machines import ResolvedMachine
from collector.tracker import TrackerStatus

OutputCallback = Callable[[Sequence[Output]], None]


def compose(*callbacks: OutputCallback | None) -> OutputCallback | None:
    """One ``on_output`` that calls each given callback in turn."""
    present = [c for c in callbacks if c is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def both(out: Sequence[Output]) -> None:
        for callback in present:
            callback(out)
    return both


class Running(Protocol):
    """What the capacity feed reads of a running collector (the engine): its machines, their
    state now, and its config."""

    clock: Callable[[], int]

    @property
    def config(self) -> Config: ...

    @property
    def machines(self) -> Mapping[str, ResolvedMachine]: ...

    def snapshot(self) -> dict[str, TrackerStatus]: ...


class Capacity:
    """``on_output`` goes to the engine; ``bind(engine)`` once the engine exists."""

    def __init__(self, settings: CapacitySettings, path: Path | None) -> None:
        self.settings = settings
        self.store = ProfileStore(path, ZoneInfo(settings.timezone), settings.decay)
        self.engine: Running | None = None
        self.changed = asyncio.Event()  # a public machine changed state (the feed waits on it)
        self.changed_machines: set[str] = set()
        # Forecasts change only with the hour and the profile: kept per machine for the hour
        # (building one is most of a record's cost, bench/capacity.py), dropped on new roll-ups.
        self._forecasts: dict[str, tuple[int, Forecast]] = {}
        # The profile holds generated history (``collector demo``, collector/simulate/history.py):
        # every record says so (`simulated: true`), and the page with it.
        self.simulated = False

    def bind(self, engine: Running) -> None:
        self.engine = engine

    def close(self) -> None:
        self.store.close()

    def on_output(self, out: Sequence[Output]) -> None:
        intervals = [o for o in out if isinstance(o, Interval) and o.machine.public]
        if intervals:
            self.store.add(intervals)
            for iv in intervals:
                self._forecasts.pop(iv.machine.id, None)
        for o in out:
            if isinstance(o, StateChange) and o.machine.public:
                self.changed_machines.add(o.machine.id)
                self.changed.set()

    def public(self) -> list[ResolvedMachine]:
        if self.engine is None:
            return []
        return [m for m in self.engine.machines.values() if m.info.public]

    def plants(self) -> list[str]:
        return sorted({m.info.plant for m in self.public()})

    def records(self, only: set[str] | None = None) -> list[dict[str, Any]]:
        """Public machines, free now first (longest idle first), then by id."""
        if self.engine is None:
            return []
        snapshot, now = self.engine.snapshot(), self.engine.clock()
        sources = {s.id: s for s in self.engine.config.sources}
        recs = [record(m, snapshot[m.info.id], self.store, self.settings, now, self._forecast(m.info.id, now),
                       silence_detected_by(m, sources.get(m.source)), simulated=self.simulated)
                for m in self.public() if m.info.id in snapshot and (only is None or m.info.id in only)]
        return sorted(recs, key=lambda r: (not r["free_now"], r["idle_since"] or "", r["machine"]))

    def _forecast(self, machine: str, now_ns: int) -> Forecast:
        quarter = now_ns // QUARTER_NS  # a local hour starts at a quarter hour in every zone
        kept = self._forecasts.get(machine)
        if kept is None or kept[0] != quarter:
            fc = forecast(self.store.profile(machine), dt.datetime.fromtimestamp(now_ns / NS_PER_S, self.store.zone),
                          self.settings.threshold)
            kept = self._forecasts[machine] = (quarter, fc)
        return kept[1]

    def record(self, machine: str) -> dict[str, Any] | None:
        found = self.records({machine})
        return found[0] if found else None
