"""The pipeline: supervised adapters -> a tracker per machine -> the sink.

    engine = Engine(loaded, sink)
    await engine.run(stop)          # until ``stop`` is set; then every machine goes offline

Exactness rules (docs/DESIGN.md, "Time and exactness"):
- **No queue between adapters and trackers.** A supervisor takes each batch an adapter hands
  over, runs it through the trackers at once, commits what came out, then acknowledges the
  batch to the source (MQTT PUBACKs). Events read but not handed over stay in the adapter.
- **A watermark, not the wall clock.** The ticker rolls time forward (debounce, staleness,
  interval roll-ups) only up to the oldest stamp an adapter still holds, so queueing inside
  the collector never moves or merges a change.
- **Evidence while catching up.** A source that kept a backlog for us (a persistent MQTT
  session after a restart or a lost connection) may still be delivering it: until it has, its
  machines' time moves only as far as their own readings.
- **The outbox is the checkpoint.** Each commit holds the points and the state of every
  tracker they came from, in one SQLite transaction; a start resumes from it.

The supervisor owns reconnection: an adapter that fails to connect or loses its source raises;
the supervisor marks the source's machines offline, waits a jittered, capped exponential
backoff, and opens the adapter again; all supervisors share one ``Opening``, so a few sources
open at a time (a restart storm of 200 servers is paced, not a herd). Adapters never retry
themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters import REGISTRY
from adapters.base import Adapter, AdapterContext, BoundMachine, SourceConfig, SourceError
from collector.commits import PACE_BELOW, Commits, Unsettled
from collector.configfile import LoadedConfig
from collector.core.backoff import Backoff, Opening
from collector.core.badinput import BadInput
from collector.core.clock import CLOCK, TRANSLATE_WINDOW_NS, AdjtimexProbe, Clock, Step, SyncProbe
from collector.core.lineprotocol import to_line
from collector.core.model import (
    NS_PER_S,
    Connectivity,
    Event,
    MachineFound,
    Output,
    Reading,
    Sample,
    StateChange,
)
from collector.machines import ResolvedMachine, resolve_found
from collector.reorder import Reorder, windows
from collector.sinks import Resumable, Sink
from collector.timebounds import STEPPED_BACK, TimeBounds
from collector.timekeeping import SyncWait
from collector.tracker import Tracker, TrackerStatus

log = logging.getLogger(__name__)

HOLD_MAX_S = 60.0
"""How long a redelivering source's machines wait for it to come back (after a restart or a lost
connection) before the wall clock rolls their time up as offline."""
_NEVER = 2**63  # later than any time in ns
RECONNECT_CAP_S = 10.0
"""The longest wait between two attempts to open a source. A machine's server back after a power
cut is read at most this long after (30 s before: 200 machine tools restarting together were
all read again 23 s after the last server was back)."""
OPENING_AT_ONCE = 16
OPENING_PATIENCE_S = 3.0
"""Sources opening at the same time (connect, session, browse, subscribe), and how long one
open holds its turn at most. 200 OPC UA sessions opened at once (the start, or every machine
restarted together) each took over ten seconds on a small gateway, timed out and started over."""
# What a source's failure looks like when it is the network or the peer: reconnect quietly.
# Anything else is a bug in an adapter: logged with its traceback (once per kind) and counted.
EXPECTED_FAILURES = (SourceError, OSError, TimeoutError, EOFError)


@dataclass
class EngineStats:
    events: int = 0
    state_changes: int = 0
    intervals: int = 0
    lines_written: int = 0
    commits: int = 0
    other_shard: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    adapter_errors: dict[str, int] = field(default_factory=dict)
    source_online: dict[str, bool] = field(default_factory=dict)


class Engine:
    def __init__(self, loaded: LoadedConfig, sink: Sink, *, clock: Clock | Callable[[], int] = CLOCK,
                 sync_probe: SyncProbe | None = None, environ: dict[str, str] | None = None,
                 tick_s: float = 0.25, backoff_initial_s: float = 0.5, backoff_cap_s: float = RECONNECT_CAP_S,
                 on_output: Callable[[Sequence[Output]], None] | None = None) -> None:
        self.config = loaded.config
        self.sink = sink
        # The collector's clock (collector/core/clock.py), checked for steps by the ticker; a
        # plain function (tests, benchmarks) is a time line without steps.
        self.wall = clock if isinstance(clock, Clock) else None
        self.clock: Callable[[], int] = clock.now_ns if isinstance(clock, Clock) else clock
        if self.wall is not None:
            self.wall.threshold_ns = int(self.config.clock.step_threshold * NS_PER_S)
        self.sync = SyncWait(self.config.clock, sync_probe or AdjtimexProbe(),
                             os.environ if environ is None else environ)
        self._step: Step | None = None  # the last step, while old-line stamps may still come in
        # When each machine's last reading arrived (monotonic ns): a source-stamped machine's own
        # time line is its last stamp plus the time since (see _tick).
        self._arrived: dict[str, int] = {}
        self.tick_s = tick_s
        self._lateness_ns = int(self.config.tracker.lateness * NS_PER_S)
        self.backoff = (backoff_initial_s, backoff_cap_s)
        self._opening = Opening(OPENING_AT_ONCE, OPENING_PATIENCE_S)
        self.on_output = on_output
        self.bad_input = BadInput()
        self.stats = EngineStats()
        self.machines: dict[str, ResolvedMachine] = {}
        self.trackers: dict[str, Tracker] = {}
        self.reorder = Reorder(self._owns)  # readings that may come out of order wait here (collector/reorder.py)
        self._limits(loaded)  # [robust]
        self.machines_per_source: dict[str, int] = {}
        self.shard = self.config.shard
        self._sources: dict[str, SourceConfig] = {s.id: s for s in self.config.sources}
        self._adapters: dict[str, Adapter] = {}
        # When each source was last opened: a machine it discovers is tracked from then, so the
        # first readings (stamped no earlier than the open) are not older than its tracker.
        self._source_opened: dict[str, int] = {}
        # Sources whose machines' time moves only on their readings' evidence (monotonic start).
        self._held: dict[str, float] = {}
        # Redelivering sources that lost their connection: the offline event, applied if the
        # hold runs out before they are back.
        self._lost: dict[str, Connectivity] = {}
        self._snapshots: dict[str, tuple[dict[str, Any], int]] = {}
        self._dirty: set[str] = set()  # trackers changed since the last commit
        self._carry: list[Output] = []  # outputs made outside a batch (resuming), for the next commit
        self.commits = Commits(sink, self.config.outbox.commit_delay, self._written)
        self._next_due = 0  # no tracker has anything due before this (see _tick)
        self._errors_logged: set[str] = set()
        self._stop_ns: int | None = None
        self._tg: asyncio.TaskGroup | None = None  # reload (apply) starts and stops source tasks in it
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        start = self.clock()
        for machine in loaded.machines:
            if self._owns(machine.info.id):
                self._add(machine, start)

    # -- public ----------------------------------------------------------------------------

    def late_readings(self) -> dict[str, int]:
        """Readings the trackers could not place at their own time, by why (for /metrics):
        ``clamped`` (late at its source: placed at the time already rolled up), ``out_of_order``
        (older than the state it would change: ignored), ``replayed`` (delivered again after a
        restart and already committed: skipped)."""
        trackers = self.trackers.values()
        return {"clamped": sum(t.clamped for t in trackers), "out_of_order": sum(t.out_of_order for t in trackers),
                "replayed": sum(t.replayed for t in trackers), "duplicate": self.reorder.duplicates}

    def snapshot(self) -> dict[str, TrackerStatus]:
        now = self.clock()
        return {mid: t.status(now) for mid, t in self.trackers.items()}

    async def run(self, stop: asyncio.Event) -> None:
        if not await self.sync.wait(stop):
            return  # stopped while waiting: nothing was read, nothing is written
        if self.wall is not None and self.wall.check() is not None:
            # Synchronized: the boot guess is gone. Nothing was read yet; the trackers start again
            # on the new line (their start is when tracking began: offline before it).
            start = self.clock()
            for mid, machine in self.machines.items():
                self.trackers[mid] = self._tracker(machine, start)
        async with self.sink:
            await self._resume()
            self.commits.pace()
            log.info("starting: %d source(s), %d machine(s)%s", len(self.config.sources), len(self.trackers),
                     f", shard {self.shard.index} of {self.shard.count}" if self.shard else "")
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    self._source_tasks = {s.id: tg.create_task(self._supervise(s), name=f"source:{s.id}")
                                          for s in self.config.sources}
                    tasks = [tg.create_task(self._ticker(), name="ticker")]
                    stopper = tg.create_task(stop.wait(), name="stop")
                    # A source task ends only by failing (the group then stops) or by a reload's cancel.
                    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
                    # What adapters hold unread is not acknowledged: the broker delivers it again
                    # after the restart. Machines go offline no later than its oldest stamp, so
                    # that backlog still counts then.
                    self._stop_ns = self._watermark()
                    self.commits.release_hold()  # the cancelled sources' last commits go at once
                    for task in (*self._source_tasks.values(), *tasks, stopper):
                        task.cancel()
            finally:
                self._tg = None  # no reload starts a source on the way out
                self.commits.release_hold()
                await self._shutdown()
        log.info("stopped: %d state change(s), %d interval(s), %d line(s) written",
                 self.stats.state_changes, self.stats.intervals, self.stats.lines_written)

    # -- reload (collector/reload.py): ONE public method, kept apart so it can move with the engine --

    async def apply(self, new: LoadedConfig) -> dict[str, list[str]]:
        """Switch to a new, already validated config while running. Machines that are gone are
        written offline and dropped; new machines start; machines whose definition is the same
        keep their tracker (state, since-time, durations); a machine whose definition changed
        gets a tracker of the new definition that carries on from the old one's checkpoint (the
        new rules apply from its next reading). Sources that changed, or whose machines changed,
        are reopened; the others keep their connection. Returns what changed, by kind (see
        ``collector.reload.diff``)."""
        from collector.reload import diff

        changes = diff(self.config, list(self.machines.values()), new)
        now = self._watermark()
        out: list[Output] = []
        carried: dict[str, dict[str, Any]] = {}
        for mid in changes["machines_removed"]:
            self.machines.pop(mid)
            self._arrived.pop(mid, None)
            self.reorder.forget(mid)
            out += self.trackers.pop(mid).stop(now, "removed from the config")
            self._dirty.discard(mid)
        for mid in changes["machines_changed"]:
            self.machines.pop(mid)
            carried[mid] = self.trackers.pop(mid).snapshot()
        self.config = new.config
        self._limits(new)  # [robust]
        self._sources = {s.id: s for s in new.config.sources}
        for machine in new.machines:
            mid = machine.info.id
            if mid not in self.trackers and self._owns(mid):
                self._add(machine, now)
                if mid in carried:
                    self.trackers[mid].resume(carried[mid])
                self._dirty.add(mid)
        self.machines_per_source = dict(Counter(m.source for m in self.machines.values()))  # [robust]
        await self._commit(out, hold=False)  # a reload answers when it is done: not paced
        # A reopened source's task is cancelled wherever it waits; a batch being committed is
        # committed and acknowledged first (_settle), so the broker does not deliver it again.
        for sid in changes["sources_removed"] + changes["sources_restarted"]:
            task = self._source_tasks.pop(sid, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self.stats.source_online.pop(sid, None)
            self._held.pop(sid, None)
            self._lost.pop(sid, None)
        if self._tg is not None:
            for source in self.config.sources:
                if source.id not in self._source_tasks:
                    self._source_tasks[source.id] = self._tg.create_task(self._supervise(source),
                                                                         name=f"source:{source.id}")
        return changes

    def _limits(self, loaded: LoadedConfig) -> None:
        """[robust] From the config (issue 12), at start and on reload: bounds on source timestamps
        (collector/timebounds.py) and machines per source, and the compiled rules of each profile,
        shared by the machines discovered with it."""
        self.time_bounds = TimeBounds.of_seconds(loaded.config.tracker.max_future, loaded.config.tracker.max_past)
        self.max_machines = {s.id: s.max_machines for s in loaded.config.sources}
        self._stamping = {s.id for s in loaded.config.sources if s.stamps_at_source()}  # sources on their own clock
        self._max_future_ns = self.time_bounds.max_future_ns
        self._rules = {m.profile: m.rules for m in loaded.machines}
        self.reorder.configure(windows(loaded.config.sources))

    # -- machines --------------------------------------------------------------------------

    def _owns(self, machine: str) -> bool:
        return self.shard is None or self.shard.owns(machine)

    def _add(self, machine: ResolvedMachine, start_ns: int) -> None:
        self.machines[machine.info.id] = machine
        tracker = self.trackers[machine.info.id] = self._tracker(machine, start_ns)
        self.machines_per_source[machine.source] = self.machines_per_source.get(machine.source, 0) + 1
        saved = self._snapshots.pop(machine.info.id, None)
        if saved is not None:
            self._resume_tracker(machine, tracker, *saved)

    def _tracker(self, machine: ResolvedMachine, start_ns: int) -> Tracker:
        tracker_cfg = self.config.tracker
        return Tracker(machine.info, machine.rules, start_ns=start_ns,
                       interval_ns=int(tracker_cfg.interval * NS_PER_S),
                       debounce_ns=int(machine.debounce_s * NS_PER_S),
                       stale_after_ns=None if machine.stale_after_s is None else int(machine.stale_after_s * NS_PER_S),
                       max_gap_ns=int(tracker_cfg.max_gap * NS_PER_S))

    def _bound(self, source: str) -> list[BoundMachine]:
        return [m.bound for m in self.machines.values() if m.source == source]

    # -- across restarts: the outbox holds every tracker's last committed state ----------------

    async def _resume(self) -> None:
        """Carry on from the last commit (a crash) or the last clean stop."""
        if not isinstance(self.sink, Resumable):
            return
        saved = await self.sink.load_state()
        self.reorder.restore(saved, time.monotonic_ns())  # held readings: kept with the trackers' state
        if not saved:
            return
        self._snapshots = dict(saved)  # what is left waits for machines discovered later
        for mid in list(self.trackers):
            snap = self._snapshots.pop(mid, None)
            if snap is not None:
                self._resume_tracker(self.machines[mid], self.trackers[mid], *snap)
        resumed = sum(1 for m in self.trackers if m in saved)
        log.info("resuming %d machine(s) from the state last committed", resumed)
        for source in self.config.sources:
            if source.redelivers():
                self._held[source.id] = time.monotonic()
        await self._commit([])

    def _resume_tracker(self, machine: ResolvedMachine, tracker: Tracker, snap: dict[str, Any],
                        saved_ns: int) -> None:
        if not tracker.resume(snap):
            return
        source = self._sources.get(machine.source)
        if source is not None and not source.redelivers():
            # Nothing of the time the collector was away comes again: it is offline (a clean
            # stop already said so; after a crash, from the last commit on).
            self._carry += tracker.connectivity(False, saved_ns, "collector was not running")
        self._dirty.add(machine.info.id)

    # -- tasks -----------------------------------------------------------------------------

    async def _supervise(self, source: SourceConfig) -> None:
        spec = REGISTRY[source.type]
        factory = spec.load()
        backoff = Backoff(*self.backoff)
        context = AdapterContext(self.config.data_dir / "sources" / source.id, self.bad_input)
        if self.shard is not None:
            source = source.in_shard(self.shard.index)
        while True:
            try:
                async with contextlib.AsyncExitStack() as opened:
                    async with self._opening.slot():  # a few sources open at a time (see Opening)
                        self._source_opened[source.id] = self.clock()
                        adapter = await opened.enter_async_context(factory(source, self._bound(source.id), context))
                    log.info("source %s (%s) connected", source.id, source.type)
                    self.stats.source_online[source.id] = True
                    self._adapters[source.id] = adapter
                    self.reorder.connected(source.id, time.monotonic_ns(), resumed=adapter.catching_up())
                    self._lost.pop(source.id, None)
                    unsettled = Unsettled()
                    try:
                        async for batch in adapter:
                            backoff.reset()
                            # A large batch means a backlog: commit it at once (see _enqueue).
                            events = self.reorder.take(source.id, batch.events, time.monotonic_ns(),
                                                       redelivered=batch.redelivered)
                            await self._settle(self._process_all(events), batch.ack,
                                               hold=len(batch.events) < PACE_BELOW, messages=batch.messages,
                                               unsettled=unsettled)
                    finally:
                        # Held commits are stored and acknowledged on this connection before it closes.
                        if unsettled.futures:
                            self.commits.release_hold()
                            await asyncio.wait(list(unsettled.futures))
                raise SourceError("the adapter's stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = self._failure(source.id, exc)
            finally:
                self._adapters.pop(source.id, None)
            self.stats.source_online[source.id] = False
            self.stats.reconnects[source.id] = self.stats.reconnects.get(source.id, 0) + 1
            delay = backoff.next_delay()
            log.warning("%s; reconnecting in %.1fs", reason, delay)
            lost = Connectivity(source.id, False, self.clock(), reason)
            if source.redelivers():
                # The broker keeps what is published meanwhile: if it is back within the hold,
                # that backlog says what the machines did. Only past the hold are they offline,
                # from the moment the connection was lost.
                self._held.setdefault(source.id, time.monotonic())
                self._lost.setdefault(source.id, lost)
            else:
                await self._commit(self._process_all([*self.reorder.flush(source.id), lost]))
            await asyncio.sleep(delay)

    async def _settle(self, out: list[Output], ack: Callable[[], None] | None, *, hold: bool = True,
                      messages: int = 0, unsettled: Unsettled | None = None) -> None:
        """Commit a batch's effect, then acknowledge it (collector/commits.py)."""
        if unsettled is not None and unsettled.error is not None:
            raise unsettled.error
        written = self._enqueue(out, hold=hold)
        await self.commits.settle(written, ack, messages=messages, unsettled=unsettled)

    def _failure(self, source: str, exc: Exception) -> str:
        """The reason a source is down; a failure that is not the network's is a bug: say so."""
        if isinstance(exc, EXPECTED_FAILURES):
            return f"source {source} unreachable: {exc or type(exc).__name__}"
        kind = f"{source}:{type(exc).__name__}"
        self.stats.adapter_errors[source] = self.stats.adapter_errors.get(source, 0) + 1
        if kind not in self._errors_logged:
            self._errors_logged.add(kind)
            log.error("source %s failed with an unexpected error (a bug: please report it); restarting it",
                      source, exc_info=exc)
        return f"source {source} failed: {type(exc).__name__}: {exc}"

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self._commit(self._tick())

    def _tick(self) -> list[Output]:
        """Roll every tracker forward to the watermark: the wall clock (less the lateness a
        source-stamped reading is allowed), but never past an event an adapter has read and not
        yet handed over."""
        out = self._check_clock()
        mono = time.monotonic_ns()
        out += self._process_all(self.reorder.due(mono))
        now = self._watermark()
        late_now = min(now, self.clock() - self._lateness_ns)
        held = self._held_sources()
        for source in [s for s in self._lost if s not in held]:
            out += self._process_all([*self.reorder.flush(source), self._lost.pop(source)])
        if now < self._next_due:
            # No tracker is due (every tick below would return at once): a plant of 1,000
            # machines changing once a minute is due about once a minute, not four times a second.
            return out
        arrival = self._arrival_sources()
        # Time waits for held readings, and for a source that may still redeliver (collector/reorder.py).
        waiting, holding, lags = held | self.reorder.catching_up(mono), self.reorder.holding(), self.reorder.lags()
        next_due = _NEVER
        for mid, tracker in self.trackers.items():
            sid = self.machines[mid].source
            if sid in arrival:
                emitted = tracker.tick(now, hold=mid in holding)
            else:
                emitted = tracker.tick(self._own_now(mid, tracker, late_now - lags.get(sid, 0) if lags else late_now,
                                                     mono, self._lateness_ns), hold=sid in waiting or mid in holding)
            if emitted:
                out += emitted
                self._dirty.add(mid)
            due = tracker.due_ns()
            if due < next_due:
                next_due = due
        self._next_due = next_due
        return out

    def _own_now(self, mid: str, tracker: Tracker, now: int, mono: int, lateness: int) -> int:
        """Now on a source-stamped machine's own time line, no later than ``now``. Its source
        stamps on its own clock, which may be behind ours: the machine's time moves from its last
        stamp as real time passes since that reading arrived (less the lateness), so a clock
        minutes behind neither makes it stale between readings nor rolls its time past readings
        still to come."""
        last, arrived = tracker.last_reading_ns, self._arrived.get(mid)
        if last is None or arrived is None:
            return now
        return min(now, last + mono - arrived - lateness)

    def _arrival_sources(self) -> set[str]:
        return {sid for sid, cfg in self._sources.items() if not cfg.stamps_at_source()}

    def _check_clock(self) -> list[Output]:
        """A step of the collector's clock is relabelling, not time (docs/DESIGN.md, "The
        collector's clock"): the machines stamped on our clock (arrival time) move their time
        lines with it; those stamped by their sources keep theirs (see ``_own_now``)."""
        if self.wall is None:
            return []
        if self._step is not None and self.wall.mono_ns() - self._step.mono_ns > 2 * TRANSLATE_WINDOW_NS:
            self._step = None  # no stamp of the old line is left in any adapter
        step = self.wall.check()
        if step is None:
            return []
        self._step = step
        arrival = self._arrival_sources()
        out: list[Output] = []
        moved = 0
        for mid, tracker in self.trackers.items():
            if self.machines[mid].source in arrival:
                out += tracker.shift(step.delta_ns)
                self._dirty.add(mid)
                moved += 1
        delta = step.delta_ns
        self._source_opened = {sid: ts + delta for sid, ts in self._source_opened.items()}
        self._lost = {sid: dataclasses.replace(c, ts_ns=c.ts_ns + delta) for sid, c in self._lost.items()}
        self._next_due = 0
        log.warning("the system clock stepped %s: not elapsed time; %d machine(s) stamped on arrival carry on at "
                    "the new time%s", step.describe(), moved,
                    f"; what was written in the last {step.size()} is dated ahead of the corrected clock"
                    if delta < 0 else "")
        return out

    def _on_our_line(self, event: Reading | Sample | Connectivity) -> Reading | Sample | Connectivity:
        """An event stamped on our clock before its last step, handed over after it, on the new line."""
        assert self.wall is not None
        if isinstance(event, Connectivity):
            ts = self.wall.translate(event.ts_ns)
            return event if ts == event.ts_ns else dataclasses.replace(event, ts_ns=ts)
        machine = self.machines.get(event.machine)
        if machine is None or machine.source not in self._arrival_sources():
            return event
        ts = self.wall.translate(event.ts_ns)
        return event if ts == event.ts_ns else event._replace(ts_ns=ts)

    def _watermark(self) -> int:
        now = self.clock()
        for adapter in list(self._adapters.values()):
            oldest = adapter.horizon_ns()
            if oldest is not None and oldest < now:
                now = oldest
        return now

    def _held_sources(self) -> set[str]:
        held: set[str] = set()
        for source, since in list(self._held.items()):
            adapter = self._adapters.get(source)
            if adapter is not None:
                if adapter.catching_up():
                    held.add(source)
                    continue
            elif time.monotonic() - since < HOLD_MAX_S:
                held.add(source)
                continue
            del self._held[source]
        return held

    # -- processing (synchronous: nothing else runs between an event and its effect) ----------

    def _process_all(self, events: Iterable[Event]) -> list[Output]:
        out: list[Output] = []
        for event in events:
            emitted = self._process(event)
            if emitted:
                out += emitted
        return out

    def _process(self, event: Event) -> list[Output]:
        self.stats.events += 1
        if isinstance(event, Sample | Reading | Connectivity):  # [robust] time bounds first
            if self._step is not None:
                event = self._on_our_line(event)
            bounded = self._time_bound(event)
            if bounded is None:
                return []
            event = bounded
        if isinstance(event, Sample | Reading):
            tracker = self.trackers.get(event.machine)
            if tracker is None:
                if self._owns(event.machine):
                    self.bad_input.report("engine", "unknown_machine", f"reading for unknown machine {event.machine!r}")
                else:
                    self.stats.other_shard += 1
                return []
            if (tracker.last_reading_ns is None and event.ts_ns < tracker.since_ns
                    and self.machines[event.machine].source in self._stamping):
                # The first reading of a machine whose clock is behind ours: track it from there.
                tracker = self._restart(event.machine, event.ts_ns)
            elif event.ts_ns < tracker.state_began_ns() - self._max_future_ns:  # [robust] its clock stepped back
                event = self._stepped_back(event, tracker)
            self._dirty.add(event.machine)
            self._arrived[event.machine] = time.monotonic_ns()
            return tracker.sample(event) if isinstance(event, Sample) else tracker.reading(event)
        if isinstance(event, Connectivity):
            self.stats.source_online[event.source] = event.online
            targets = event.machines or tuple(m for m, r in self.machines.items() if r.source == event.source)
            out: list[Output] = []
            for mid in targets:
                tracker = self.trackers.get(mid)
                if tracker is not None:
                    self._dirty.add(mid)
                    out += tracker.connectivity(event.online, event.ts_ns, event.reason)
            return out
        if isinstance(event, MachineFound):
            if event.machine in self.trackers:
                self._identify(event)  # configured (or already found): the config wins, gaps filled
                return []
            if not self._owns(event.machine):
                self.stats.other_shard += 1
                return []
            if self.machines_per_source.get(event.source, 0) >= self.max_machines.get(event.source, 0):  # [robust]
                self.bad_input.report(event.source, "too_many_machines",
                                      f"{event.machine!r} not tracked: the source has max_machines machines")
                return []
            try:
                machine = resolve_found(self.config, event, self._rules)  # [robust] rules shared per profile
            except ValueError as exc:
                self.bad_input.report(event.source, "discovered_machine", f"{event.machine}: {exc}")
                return []
            self._add(machine, min(self._source_opened.get(event.source, self.clock()), self.clock()))
            self._dirty.add(event.machine)
            log.info("discovered machine %s on source %s (profile %s)", event.machine, event.source, event.profile)
        return []

    def _identify(self, found: MachineFound) -> None:
        """What a source says a configured machine is (its nameplate, its kind) fills what the
        config left empty: a public machine's capacity record then carries its Identification."""
        machine = self.machines[found.machine]
        info = machine.info
        nameplate = info.nameplate or tuple(sorted(found.nameplate.items()))
        kind = info.kind or found.kind
        if (nameplate, kind) == (info.nameplate, info.kind):
            return
        info = dataclasses.replace(info, nameplate=nameplate, kind=kind)
        self.machines[found.machine] = dataclasses.replace(machine, bound=dataclasses.replace(machine.bound, info=info))
        self.trackers[found.machine].info = info

    def _time_bound(self, event: Sample | Reading | Connectivity) -> Sample | Reading | Connectivity | None:
        """[robust] The event with its timestamp inside ``tracker.max_future``/``max_past`` (see
        collector/timebounds.py), or None when it is dropped; either is counted as bad input."""
        now = self.clock()
        if self.time_bounds.within(event.ts_ns, now):
            return event
        if isinstance(event, Connectivity):
            source = event.source
        else:
            resolved = self.machines.get(event.machine)
            source = resolved.source if resolved is not None else "engine"
        return self.time_bounds.bound(event, now, lambda kind, detail: self.bad_input.report(source, kind, detail))

    def _restart(self, mid: str, start_ns: int) -> Tracker:
        """A tracker that has seen no reading yet starts again at ``start_ns``, before its start: the
        first stamp of a source whose clock is behind ours (or a reading kept from before we
        started). It emitted no change; the roll-ups it wrote (offline) are written again with the
        same keys, so InfluxDB keeps the new ones."""
        tracker = self.trackers[mid] = self._tracker(self.machines[mid], start_ns)
        return tracker

    def _stepped_back(self, event: Sample | Reading, tracker: Tracker) -> Sample | Reading:
        """[robust] A source stamp far before the machine's current state: the source's clock
        stepped back (collector/timebounds.py). Counted, and taken at arrival time (no earlier
        than the state), so the machine stays tracked while its clock is wrong."""
        resolved = self.machines.get(event.machine)
        now = max(self.clock(), tracker.since_ns)
        self.bad_input.report(resolved.source if resolved is not None else "engine", STEPPED_BACK,
                              f"{event.machine}: timestamp {event.ts_ns} ns is "
                              f"{(tracker.state_began_ns() - event.ts_ns) / NS_PER_S:.0f}s before its current state "
                              "(its clock stepped back?), taken at arrival time")
        return event._replace(ts_ns=now)

    # -- committing: points and the trackers' state in one transaction --------------------------

    async def _commit(self, out: list[Output], *, hold: bool = True) -> None:
        """Store ``out`` and the state of every tracker changed since the last commit, at once."""
        written = self._enqueue(out, hold=hold)
        if written is not None:
            await asyncio.shield(written)  # a write is shared (group commit): a cancelled awaiter leaves it be

    def _enqueue(self, out: list[Output], *, hold: bool = True) -> asyncio.Future[None] | None:
        """Take the changed trackers' state now (synchronously, right after the events that
        changed it) and queue it with ``out`` (collector/commits.py): commits land in the order
        the trackers changed, so the checkpoint on disk is a state they really passed through."""
        if self._carry:
            out, self._carry = self._carry + out, []
        dirty, self._dirty = self._dirty, set()
        state: dict[str, dict[str, Any]] = self.reorder.checkpoint()  # held readings, before the batch's ack
        for mid in dirty:
            tracker = self.trackers.get(mid)
            if tracker is not None:
                state[mid] = tracker.snapshot()
                due = tracker.due_ns()
                if due < self._next_due:
                    self._next_due = due
        for o in out:
            if isinstance(o, StateChange):
                self.stats.state_changes += 1
                log.debug("%s: %s -> %s (%s)", o.machine.id, o.previous, o.state, o.reason)
            else:
                self.stats.intervals += 1
        if out and self.on_output is not None:
            self.on_output(out)
        return self.commits.enqueue([to_line(o) for o in out], state, hold=hold)

    def _written(self, lines: int) -> None:
        self.stats.commits += 1
        self.stats.lines_written += lines

    async def _shutdown(self) -> None:
        now = self._stop_ns if self._stop_ns is not None else self.clock()
        mono = time.monotonic_ns()
        out = self._process_all(self.reorder.flush())  # a clean stop: what is held goes in as it is
        for mid, tracker in self.trackers.items():
            stamping = self.machines[mid].source in self._stamping
            out += tracker.stop(self._own_now(mid, tracker, now, mono, 0) if stamping else now)
            self._dirty.add(mid)
        await self._commit(out)

