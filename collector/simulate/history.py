"""Weeks of a simulated plant's history in seconds, for ``collector demo``: the first look shows
free hours, usual free windows and the heatmap at once instead of after weeks of running.

Each public machine of a ``simulate`` source runs its very behaviour (``SimMachine``, seeded as
the live adapter seeds it, with its week of shifts) in virtual time from ``end - weeks`` to
``end``. Its messages go through a ``Tracker`` made as the engine makes one (the machine's rules,
debounce, staleness, the config's roll-up interval), and the roll-ups into the capacity
``ProfileStore`` through ``Capacity.on_output``: the same arithmetic as live data, none of its
own. Nothing is written to an output. The capacity records then carry ``simulated: true``.

Messages: each phase change, then a heartbeat of half the machine's ``stale_after`` (60 s
without one). The live simulator publishes every ``publish_every`` (2 s in the example plant);
both keep a machine fresh between changes, so the states and roll-ups are the same, and a
heartbeat of 5 s instead of 2 s makes four weeks of seven machines 2.4 M samples fewer. A
switched-off machine sends nothing and goes offline by staleness, as it does live.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.simulate.adapter import SimMachine, sim_machines
from adapters.simulate.config import SimulateSource
from collector.core.model import NS_PER_S, Interval, Sample
from collector.machines import ResolvedMachine
from collector.tracker import Tracker

if TYPE_CHECKING:
    from collector.capacity.service import Capacity
    from collector.configfile import LoadedConfig

log = logging.getLogger(__name__)
WEEK_S = 7 * 86_400
HEARTBEAT_WITHOUT_STALE_S = 60.0
HEARTBEAT_SHARE = 0.9  # of stale_after: a machine never goes stale between two messages
CHUNK = 20_000  # roll-ups handed to the profile store per transaction


@dataclass(frozen=True, slots=True)
class HistoryStats:
    machines: int
    samples: int
    intervals: int
    seconds: float  # wall time it took


def tracker_for(loaded: LoadedConfig, machine: ResolvedMachine, start_ns: int) -> Tracker:
    """A tracker as ``Engine._tracker`` makes one (the same config fields)."""
    cfg = loaded.config.tracker
    return Tracker(machine.info, machine.rules, start_ns=start_ns, interval_ns=int(cfg.interval * NS_PER_S),
                   debounce_ns=int(machine.debounce_s * NS_PER_S),
                   stale_after_ns=None if machine.stale_after_s is None else int(machine.stale_after_s * NS_PER_S),
                   max_gap_ns=int(cfg.max_gap * NS_PER_S))


def heartbeat_s(machine: ResolvedMachine, source: SimulateSource) -> float:
    if machine.stale_after_s is None:
        return max(source.publish_every, HEARTBEAT_WITHOUT_STALE_S)
    return max(source.publish_every, machine.stale_after_s * HEARTBEAT_SHARE)


def _one(loaded: LoadedConfig, machine: ResolvedMachine, sim: SimMachine, source: SimulateSource,
         start_s: float, end_s: float, capacity: Capacity) -> tuple[int, int]:
    """One machine from ``start_s`` to ``end_s``; returns (samples, roll-ups)."""
    speed, beat = source.speed, heartbeat_s(machine, source)
    tracker = tracker_for(loaded, machine, int(start_s * NS_PER_S))
    sim.rng.random()  # as the adapter starts a machine (adapters/simulate/adapter.py, _events)
    sim.next_phase(start_s - sim.rng.uniform(0, 30) / speed, speed)
    samples = intervals = 0
    pending: list[Interval] = []
    beat_at = start_s
    last: Sample | None = None
    while True:  # a message at each phase change, and the last one again after `beat` without one
        if sim.phase_ends <= beat_at:
            t = max(sim.phase_ends, start_s)
            if t >= end_s:
                break
            sim.next_phase(sim.phase_ends, speed)
            sample = last = sim.sample(int(t * NS_PER_S))
        else:
            t = beat_at
            if t >= end_s:
                break
            sample = None if last is None else Sample(last.machine, last.values, int(t * NS_PER_S))
        beat_at = t + beat
        if sample is None:  # switched off: silent
            continue
        samples += 1
        for o in tracker.sample(sample):
            if isinstance(o, Interval):
                pending.append(o)
        if len(pending) >= CHUNK:
            capacity.on_output(pending)
            intervals += len(pending)
            pending = []
    pending += [o for o in tracker.tick(int(end_s * NS_PER_S)) if isinstance(o, Interval)]
    capacity.on_output(pending)
    return samples, intervals + len(pending)


def simulate_history(loaded: LoadedConfig, capacity: Capacity, *, end_ns: int, weeks: float) -> HistoryStats:
    """``weeks`` of history up to ``end_ns`` for every public machine of every ``simulate`` source,
    into ``capacity``'s profile store. Complete roll-ups only: the engine that starts at ``end_ns``
    writes the interval holding it whole, and the store counts it (it ends after the last one here)."""
    began = time.perf_counter()
    end_s = end_ns / NS_PER_S
    start_s = end_s - weeks * WEEK_S
    machines = samples = intervals = 0
    for source in loaded.config.sources:
        if not isinstance(source, SimulateSource):
            continue
        public = [m for m in loaded.machines if m.source == source.id and m.info.public]
        for machine, sim in zip(public, sim_machines(source, [m.bound for m in public]), strict=True):
            s, i = _one(loaded, machine, sim, source, start_s, end_s, capacity)
            machines, samples, intervals = machines + 1, samples + s, intervals + i
    capacity.simulated = True
    stats = HistoryStats(machines, samples, intervals, time.perf_counter() - began)
    log.info("simulated %.3g weeks of history for %d public machine(s): %d samples, %d roll-ups in %.1f s",
             weeks, stats.machines, stats.samples, stats.intervals, stats.seconds)
    return stats
