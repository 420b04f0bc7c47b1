"""The machines the engine tracks, one tracker each, and what an event does to them.

Machines come from the config, or from a source's discovery (collector/discovery.py) within
the source's ``max_machines``; a shard tracks only the machines it owns. A new tracker carries
on from its machine's checkpoint when there is one (collector/checkpoints.py). The fleet keeps
which trackers changed since the last commit (``dirty``): the engine commits their state in the
same transaction as the points they emitted.

Where an event lands in time is settled before it gets here (the engine: our clock's steps,
then the time bounds), but for two things only a machine's tracker can tell: the first reading
of a machine whose source's clock is behind ours (it is tracked from there), and a reading far
before the state it would change (its source's clock stepped back: taken at arrival time).
Synchronous: nothing else runs between an event and its effect.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import BoundMachine, SourceConfig
from collector.checkpoints import Checkpoints
from collector.config import Config, Shard
from collector.configfile import LoadedConfig
from collector.core.badinput import BadInput
from collector.core.clock import Step
from collector.core.correction import Correction
from collector.core.model import NS_PER_S, Connectivity, MachineFound, Output, Reading, Sample
from collector.discovery import admitted, identified
from collector.machines import ResolvedMachine
from collector.reorder import Reorder, windows
from collector.stepback import StepBacks
from collector.timebounds import TimeBounds, stepped_back
from collector.timelines import TimeLines
from collector.tracker import Tracker, TrackerStatus

NEVER = 2**63  # later than any time in ns


class Fleet:
    def __init__(self, loaded: LoadedConfig, start_ns: int, *, clock: Callable[[], int], lines: TimeLines,
                 bad_input: BadInput, checkpoints: Checkpoints) -> None:
        self.clock = clock
        self.lines = lines
        self.bad_input = bad_input
        self.checkpoints = checkpoints
        self.shard: Shard | None = loaded.config.shard  # a running setting: a reload does not change it
        self.machines: dict[str, ResolvedMachine] = {}
        self.trackers: dict[str, Tracker] = {}
        self.per_source: dict[str, int] = {}  # [robust] machines tracked, by source
        self.dirty: set[str] = set()  # trackers changed since the last commit
        self.carry: list[Output] = []  # outputs made outside a batch (resuming), for the next commit
        self.reorder = Reorder(self.owns)  # readings that may come out of order wait here (collector/reorder.py)
        self.configure(loaded)
        for machine in loaded.machines:
            if self.owns(machine.info.id):
                self.add(machine, start_ns)

    def configure(self, loaded: LoadedConfig) -> None:
        """[robust] From the config, at start and on reload: the sources, bounds on source
        timestamps (collector/timebounds.py) and machines per source, and the compiled rules of
        each profile, shared by the machines discovered with it."""
        self.config: Config = loaded.config
        self.sources: dict[str, SourceConfig] = {s.id: s for s in loaded.config.sources}
        self.time_bounds = TimeBounds.of_seconds(loaded.config.tracker.max_future, loaded.config.tracker.max_past)
        self.max_machines = {s.id: s.max_machines for s in loaded.config.sources}
        self.stamping = {s.id for s in loaded.config.sources if s.stamps_at_source()}  # sources on their own clock
        self._rules = {m.profile: m.rules for m in loaded.machines}
        self.reorder.configure(windows(loaded.config.sources))

    # -- machines ----------------------------------------------------------------------------

    def owns(self, machine: str) -> bool:
        return self.shard is None or self.shard.owns(machine)

    def add(self, machine: ResolvedMachine, start_ns: int) -> None:
        self.machines[machine.info.id] = machine
        tracker = self.trackers[machine.info.id] = self.tracker(machine, start_ns)
        self.per_source[machine.source] = self.per_source.get(machine.source, 0) + 1
        self.resume(machine, tracker)

    def tracker(self, machine: ResolvedMachine, start_ns: int) -> Tracker:
        settings = self.config.tracker
        return Tracker(machine.info, machine.rules, start_ns=start_ns,
                       interval_ns=int(settings.interval * NS_PER_S),
                       debounce_ns=int(machine.debounce_s * NS_PER_S),
                       stale_after_ns=None if machine.stale_after_s is None else int(machine.stale_after_s * NS_PER_S),
                       max_gap_ns=int(settings.max_gap * NS_PER_S))

    def restart(self, start_ns: int) -> None:
        """Every tracker starts again at ``start_ns`` (nothing was read yet: the clock was synced)."""
        for mid, machine in self.machines.items():
            self.trackers[mid] = self.tracker(machine, start_ns)

    def resume(self, machine: ResolvedMachine, tracker: Tracker) -> bool:
        """Carry ``tracker`` on from its machine's checkpoint, if one waits for it."""
        away = self.checkpoints.resume(machine.info.id, tracker, self.sources.get(machine.source))
        if away is None:
            return False
        self.carry += away  # committed with the next commit
        self.dirty.add(machine.info.id)
        return True

    def bound(self, source: str) -> list[BoundMachine]:
        return [m.bound for m in self.machines.values() if m.source == source]

    def on_arrival(self) -> Callable[[str], bool]:
        """Whether a machine is stamped on our clock (arrival time), not its source's."""
        arrival = {sid for sid, cfg in self.sources.items() if not cfg.stamps_at_source()}
        return lambda mid: mid in self.machines and self.machines[mid].source in arrival

    def reconfigure(self, new: LoadedConfig, changes: Mapping[str, list[str]], now: int) -> list[Output]:
        """A reload (``Engine.apply``): the machines gone are written offline and dropped, the new
        ones start, the changed ones carry on from their tracker's state with their new definition."""
        out: list[Output] = []
        carried: dict[str, dict[str, Any]] = {}
        for mid in changes["machines_removed"]:
            self.machines.pop(mid)
            self.lines.arrived.pop(mid, None)
            self.reorder.forget(mid)
            out += self.trackers.pop(mid).stop(now, "removed from the config")
            self.dirty.discard(mid)
        for mid in changes["machines_changed"]:
            self.machines.pop(mid)
            carried[mid] = self.trackers.pop(mid).snapshot()
        self.configure(new)
        for machine in new.machines:
            mid = machine.info.id
            if mid not in self.trackers and self.owns(mid):
                self.add(machine, now)
                if mid in carried:
                    self.trackers[mid].resume(carried[mid])
                self.dirty.add(mid)
        self.per_source = dict(Counter(m.source for m in self.machines.values()))  # [robust]
        return out

    # -- events --------------------------------------------------------------------------------

    def reading(self, event: Sample | Reading) -> list[Output] | None:
        """What a reading does (None: its machine is another shard's)."""
        tracker = self.trackers.get(event.machine)
        if tracker is None:
            if not self.owns(event.machine):
                return None
            self.bad_input.report("engine", "unknown_machine", f"reading for unknown machine {event.machine!r}")
            return []
        if (tracker.last_reading_ns is None and event.ts_ns < tracker.since_ns
                and self.machines[event.machine].source in self.stamping):
            # The first reading of a machine whose clock is behind ours: track it from there. It
            # emitted no change; the roll-ups it wrote (offline) are written again with the same
            # keys, so InfluxDB keeps the new ones.
            tracker = self.trackers[event.machine] = self.tracker(self.machines[event.machine], event.ts_ns)
        elif event.ts_ns < tracker.state_began_ns() - self.time_bounds.max_future_ns:  # [robust] clock stepped back
            event = stepped_back(event, tracker.state_began_ns(), max(self.clock(), tracker.since_ns),
                                 self.reporter(event))
        self.dirty.add(event.machine)
        self.lines.arrived[event.machine] = time.monotonic_ns()
        return tracker.sample(event) if isinstance(event, Sample) else tracker.reading(event)

    def connectivity(self, event: Connectivity) -> list[Output]:
        targets = event.machines or tuple(m for m, r in self.machines.items() if r.source == event.source)
        out: list[Output] = []
        for mid in targets:
            tracker = self.trackers.get(mid)
            if tracker is not None:
                self.dirty.add(mid)
                out += tracker.connectivity(event.online, event.ts_ns, event.reason)
        return out

    def found(self, event: MachineFound, start_ns: int) -> bool | None:
        """A machine a source discovered: tracked from ``start_ns`` if it is new (True), or the
        gaps of a tracked one's identification filled (the config wins). None: another shard's."""
        if event.machine in self.trackers:
            machine = identified(self.machines[event.machine], event)
            if machine is not None:
                self.machines[event.machine] = machine
                self.trackers[event.machine].info = machine.info
            return False
        if not self.owns(event.machine):
            return None
        machine = admitted(self.config, event, self._rules, self.per_source.get(event.source, 0),
                           self.max_machines.get(event.source, 0),
                           lambda kind, detail: self.bad_input.report(event.source, kind, detail))
        if machine is None:
            return False
        self.add(machine, start_ns)
        self.dirty.add(event.machine)
        return True

    def reporter(self, event: Sample | Reading | Connectivity) -> Callable[[str, str], None]:
        """Bad input about an event, counted against its source."""
        if isinstance(event, Connectivity):
            source = event.source
        else:
            resolved = self.machines.get(event.machine)
            source = resolved.source if resolved is not None else "engine"
        return lambda kind, detail: self.bad_input.report(source, kind, detail)

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now: int, late_now: int, lateness: int, held: set[str]) -> tuple[list[Output], int]:
        """Roll every tracker forward: one stamped on arrival to ``now``, one stamped by its
        source on its own time line (no later than ``late_now``), held while its source
        catches up. Returns what they emitted, and the earliest time one is due again."""
        arrival = {sid for sid, cfg in self.sources.items() if not cfg.stamps_at_source()}
        mono = time.monotonic_ns()
        # Time waits for held readings, and for a source that may still redeliver (collector/reorder.py).
        waiting, holding, lags = held | self.reorder.catching_up(mono), self.reorder.holding(), self.reorder.lags()
        out: list[Output] = []
        next_due = NEVER
        for mid, tracker in self.trackers.items():
            sid = self.machines[mid].source
            if sid in arrival:
                emitted = tracker.tick(now, hold=mid in holding)
            else:
                own_now = self.lines.own_now(mid, tracker, late_now - lags.get(sid, 0) if lags else late_now, mono,
                                             lateness)
                emitted = tracker.tick(own_now, hold=sid in waiting or mid in holding)
            if emitted:
                out += emitted
                self.dirty.add(mid)
            due = tracker.due_ns()
            if due < next_due:
                next_due = due
        return out, next_due

    def shift(self, step: Step, step_backs: StepBacks | None) -> tuple[list[Output], Correction | None]:
        """Our clock stepped: the machines stamped on arrival move with it (collector/timelines.py).
        With ``step_backs`` (a sink that applies corrections), a step back also returns the record
        that rewrites what they wrote ahead of the corrected clock (collector/stepback.py)."""
        out, moved = self.lines.shift(step, self.trackers, self.on_arrival())
        self.dirty.update(moved)
        record = None if step_backs is None else step_backs.after(step, self.lines.began_ns,
                                                                   {m: self.trackers[m] for m in moved})
        self.lines.said(step, len(moved), corrected=record is not None)
        return out, record

    def stop(self, now: int) -> list[Output]:
        """Every machine offline from ``now`` (a source-stamped one: on its own time line)."""
        mono = time.monotonic_ns()
        out: list[Output] = []
        for mid, tracker in self.trackers.items():
            stamping = self.machines[mid].source in self.stamping
            out += tracker.stop(self.lines.own_now(mid, tracker, now, mono, 0) if stamping else now)
            self.dirty.add(mid)
        return out

    def take_dirty(self) -> tuple[dict[str, dict[str, Any]], int]:
        """The state of every tracker changed since the last call, and the earliest one is due."""
        dirty, self.dirty = self.dirty, set()
        state: dict[str, dict[str, Any]] = self.reorder.checkpoint()  # held readings, before the batch's ack
        next_due = NEVER
        for mid in dirty:
            tracker = self.trackers.get(mid)
            if tracker is not None:
                state[mid] = tracker.snapshot()
                due = tracker.due_ns()
                if due < next_due:
                    next_due = due
        return state, next_due

    # -- what it shows -------------------------------------------------------------------------

    def late_readings(self) -> dict[str, int]:
        trackers = self.trackers.values()
        return {"clamped": sum(t.clamped for t in trackers), "out_of_order": sum(t.out_of_order for t in trackers),
                "replayed": sum(t.replayed for t in trackers), "duplicate": self.reorder.duplicates}

    def snapshot(self, now: int) -> dict[str, TrackerStatus]:
        return {mid: t.status(now) for mid, t in self.trackers.items()}


__all__ = ["NEVER", "Fleet"]
