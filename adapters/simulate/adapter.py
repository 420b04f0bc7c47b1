"""A simulated plant: each machine runs work cycles with short gaps, waits for work, gets set
up for new batches, has occasional alarms, and is now and then switched off (it then stops
publishing, so staleness takes it offline).

Signals a machine can bind (``signals: {name: quantity}``; unbound machines publish the first
four under their own names):
``execution`` (MTConnect: ACTIVE, READY, STOPPED), ``spindle_rpm``, ``alarm`` (bool),
``mode`` (AUTO, SETUP), ``packml_state`` (ISA-TR88 number), ``item_state`` and
``operation_mode`` (OPC 40001 state ids).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Self
from zoneinfo import ZoneInfo

from adapters.base import AdapterContext, Batch, BoundMachine, SourceConfig
from adapters.simulate.config import SimulateSource
from adapters.simulate.week import Week, make_week
from collector.core.model import NS_PER_S, Sample, now_ns

BATCH_S = 450.0  # a batch's mean work: 7.5 cycles of 20-90 s with short gaps
WEEK_SALT = 0x5EED  # the week's dice apart from the cycles' (adding a week leaves the cycles' seed)
DEFAULT_SIGNALS = {"execution": "execution", "spindle_rpm": "spindle_rpm", "alarm": "alarm", "mode": "mode"}

# phase -> the value of each simulated quantity
_QUANTITIES: dict[str, dict[str, Any]] = {
    "work": {"execution": "ACTIVE", "alarm": False, "mode": "AUTO", "packml_state": 6,
             "item_state": 5006, "operation_mode": 5026},
    "gap": {"execution": "READY", "alarm": False, "mode": "AUTO", "packml_state": 4,
            "item_state": 5007, "operation_mode": 5026},
    "wait": {"execution": "READY", "alarm": False, "mode": "AUTO", "packml_state": 2,
             "item_state": 5007, "operation_mode": 5026},
    "setup": {"execution": "STOPPED", "alarm": False, "mode": "SETUP", "packml_state": 2,
              "item_state": 5007, "operation_mode": 5027},
    "alarm": {"execution": "STOPPED", "alarm": True, "mode": "AUTO", "packml_state": 11,
              "item_state": 5004, "operation_mode": 5026},
}


@dataclass
class SimMachine:
    """One simulated machine's behaviour, driven by ``next_phase`` at the times it names
    (``phase_ends``): the adapter on the wall clock, ``collector demo``'s history in virtual time."""

    bound: BoundMachine
    signals: dict[str, str]
    rng: random.Random
    phase: str = "wait"
    phase_ends: float = 0.0
    cycles_left: int = 0
    rpm: float = 0.0
    week: Week | None = None  # shifts: true (adapters/simulate/week.py)

    def next_phase(self, now: float, speed: float) -> None:
        r = self.rng
        if self.phase == "work":
            self.cycles_left -= 1
            roll = r.random()
            if roll < 0.04:
                self._enter("alarm", now, r.uniform(20, 120), speed)
            elif self.cycles_left > 0:
                self._enter("gap", now, r.uniform(1, 6), speed)
            else:
                self._wait(now, speed)
        elif self.phase in ("gap", "setup", "alarm"):
            self._enter("work", now, r.uniform(20, 90), speed)
        elif self._switched_off(now, speed):
            return
        elif self.phase == "off":
            self._enter("wait", now, r.uniform(10, 60), speed)
        else:  # waiting for work: a new batch (maybe after a setup), or switched off for a while
            roll = r.random()
            self.cycles_left = r.randint(3, 12)
            if roll < 0.03:
                self._enter("off", now, r.uniform(120, 600), speed)
            elif roll < 0.25:
                self._enter("setup", now, r.uniform(60, 240), speed)
            else:
                self._enter("work", now, r.uniform(20, 90), speed)

    def _wait(self, now: float, speed: float) -> None:
        """Waiting for the next batch: as long as the hour's orders say (with a week), at most to
        the end of the hour (the next hour may have other orders)."""
        if self.week is None:
            self._enter("wait", now, self.rng.uniform(30, 300), speed)
            return
        if self._switched_off(now, speed):  # the batch ran past the shift: switched off at its end
            return
        share, hour_end = self.week.hour(now)
        assert share is not None
        seconds = self.rng.uniform(0.5, 1.5) * BATCH_S * share / (1 - share)
        self._enter("wait", now, seconds, speed, until=hour_end)

    def _switched_off(self, now: float, speed: float) -> bool:
        """Outside the shifts, a machine whose week says so is switched off until the next hour."""
        if self.week is None:
            return False
        share, hour_end = self.week.hour(now)
        if share is not None:
            return False
        self.phase, self.phase_ends, self.rpm = "off", max(hour_end, now + 1e-3), 0.0
        return True

    def _enter(self, phase: str, now: float, seconds: float, speed: float, until: float | None = None) -> None:
        self.phase = phase
        self.phase_ends = now + seconds / speed
        if until is not None and until > now:
            self.phase_ends = min(self.phase_ends, until)
        self.rpm = self.rng.uniform(800, 4000) if phase == "work" else 0.0

    def sample(self, ts_ns: int) -> Sample | None:
        """All signals at once, as a machine's gateway publishes them (one message, one step)."""
        if self.phase == "off":
            return None  # switched off: silence
        values = dict(_QUANTITIES[self.phase])
        values["spindle_rpm"] = round(self.rpm + (self.rng.uniform(-20, 20) if self.rpm else 0.0), 1)
        return Sample(self.bound.id, {name: values.get(quantity) for name, quantity in self.signals.items()}, ts_ns)


def sim_machines(config: SimulateSource, machines: Sequence[BoundMachine]) -> list[SimMachine]:
    """The source's machines, each seeded from the source's seed and its id (and its week, with
    ``shifts``, from both too), so the same config gives the same plant wherever it runs."""
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    zone = ZoneInfo(config.timezone)
    out = []
    for m in machines:
        mixed = seed ^ zlib.crc32(m.id.encode())
        week = make_week(random.Random(mixed ^ WEEK_SALT), zone) if config.shifts else None
        out.append(SimMachine(m, m.signals or DEFAULT_SIGNALS, random.Random(mixed), week=week))
    return out


class SimulateAdapter:
    def __init__(self, config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> None:
        assert isinstance(config, SimulateSource)
        self.config = config
        self._machines = sim_machines(config, machines)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._events()

    def horizon_ns(self) -> int | None:
        return None  # samples are made when handed over: nothing waits

    def catching_up(self) -> bool:
        return False

    async def _events(self) -> AsyncIterator[Batch]:
        every = self.config.publish_every
        now = now_ns() / NS_PER_S  # the collector's clock (collector/core/clock.py)
        # (when, kind, index): kind 0 = phase change, 1 = periodic publish
        heap: list[tuple[float, int, int]] = []
        for i, m in enumerate(self._machines):
            m.rng.random()
            m.next_phase(now - m.rng.uniform(0, 30) / self.config.speed, self.config.speed)
            heapq.heappush(heap, (m.phase_ends, 0, i))
            heapq.heappush(heap, (now + every * i / max(len(self._machines), 1), 1, i))
        while heap:
            when, kind, i = heapq.heappop(heap)
            delay = when - now_ns() / NS_PER_S
            if delay > 0:
                await asyncio.sleep(delay)
            m = self._machines[i]
            ts = int(when * NS_PER_S)
            if kind == 0:
                m.next_phase(when, self.config.speed)
                heapq.heappush(heap, (m.phase_ends, 0, i))
            else:
                heapq.heappush(heap, (when + every, 1, i))
            sample = m.sample(ts)
            if sample is not None:
                yield Batch([sample])
