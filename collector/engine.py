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
- **The outbox is the checkpoint** (collector/checkpoints.py): each commit holds the points and
  the state of the trackers they came from in one transaction; a start resumes from it.

The engine supervises the sources (collector/supervision.py, collector/holds.py) and ticks; a
machine and what an event does to it are the fleet's (collector/fleet.py; readings out of order
wait in collector/reorder.py), clock steps collector/timelines.py's, commits collector/commits.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from adapters import REGISTRY
from adapters.base import Adapter, AdapterContext, SourceConfig
from collector.checkpoints import Checkpoints
from collector.commits import PACE_BELOW, Commits, Unsettled
from collector.config import Config, Shard
from collector.configfile import LoadedConfig
from collector.core.backoff import Backoff, Opening
from collector.core.badinput import BadInput
from collector.core.clock import CLOCK, AdjtimexProbe, Clock, SyncProbe
from collector.core.lineprotocol import to_line
from collector.core.model import NS_PER_S, Connectivity, Event, MachineFound, Output, Reading, Sample, StateChange
from collector.fleet import Fleet
from collector.holds import Holds
from collector.machines import ResolvedMachine
from collector.reconfig import diff
from collector.sinks import Correcting, Sink
from collector.stepback import StepBacks
from collector.supervision import OPENING_AT_ONCE, OPENING_PATIENCE_S, RECONNECT_CAP_S, Failures, supervise
from collector.timekeeping import SyncWait
from collector.timelines import TimeLines
from collector.tracker import Tracker, TrackerStatus

log = logging.getLogger(__name__)

HOLD_MAX_S = 60.0
"""How long a redelivering source's machines wait for it to come back before they go offline."""


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
        self.sink = sink
        # The collector's clock (collector/core/clock.py), checked for steps by the ticker; a
        # plain function (tests, benchmarks) is a time line without steps.
        self.wall = clock if isinstance(clock, Clock) else None
        self.clock: Callable[[], int] = clock.now_ns if isinstance(clock, Clock) else clock
        if self.wall is not None:
            self.wall.threshold_ns = int(loaded.config.clock.step_threshold * NS_PER_S)
        self.sync = SyncWait(loaded.config.clock, sync_probe or AdjtimexProbe(),
                             os.environ if environ is None else environ)
        self.lines = TimeLines(self.wall)  # steps of our clock; each source-stamped machine's own time
        self._step_backs = StepBacks()  # what a step back corrects (collector/stepback.py)
        self.tick_s = tick_s
        self._lateness_ns = int(loaded.config.tracker.lateness * NS_PER_S)
        self.backoff = (backoff_initial_s, backoff_cap_s)
        self._opening = Opening(OPENING_AT_ONCE, OPENING_PATIENCE_S)  # shared by the supervisors
        self.on_output = on_output
        self.bad_input = BadInput()
        self.stats = EngineStats()
        self.failures = Failures(self.stats.adapter_errors)
        self.fleet = Fleet(loaded, self.clock(), clock=self.clock, lines=self.lines, bad_input=self.bad_input,
                           checkpoints=Checkpoints())
        self._adapters: dict[str, Adapter] = {}
        # When each source was last opened: a machine it discovers is tracked from then, so the
        # first readings (stamped no earlier than the open) are not older than its tracker.
        self._source_opened: dict[str, int] = {}
        self.holds = Holds(HOLD_MAX_S)  # sources whose machines' time moves only on their readings
        self.commits = Commits(sink, loaded.config.outbox.commit_delay, self._written)
        self._next_due = 0  # no tracker has anything due before this (see _tick)
        self._stop_ns: int | None = None
        self._tg: asyncio.TaskGroup | None = None  # reload (apply) starts and stops source tasks in it
        self._source_tasks: dict[str, asyncio.Task[None]] = {}

    # -- public ----------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.fleet.config

    @property
    def machines(self) -> dict[str, ResolvedMachine]:
        return self.fleet.machines

    @property
    def trackers(self) -> dict[str, Tracker]:
        return self.fleet.trackers

    @property
    def shard(self) -> Shard | None:
        return self.fleet.shard

    def late_readings(self) -> dict[str, int]:
        """Readings the trackers could not place at their own time, by why (for /metrics):
        ``clamped`` (late at its source: placed at the time already rolled up), ``out_of_order``
        (older than the state it would change: ignored), ``replayed`` (delivered again after a
        restart and already committed: skipped), ``duplicate`` (a copy of a held reading: dropped)."""
        return self.fleet.late_readings()

    def snapshot(self) -> dict[str, TrackerStatus]:
        return self.fleet.snapshot(self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        if not await self.sync.wait(stop):
            return  # stopped while waiting: nothing was read, nothing is written
        if self.wall is not None and self.wall.check() is not None:
            # Synchronized: the boot guess is gone; nothing was read yet: the trackers start again.
            self.fleet.restart(self.clock())
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

    async def apply(self, new: LoadedConfig) -> dict[str, list[str]]:
        """Switch to a new, already validated config while running (collector/reload.py). Machines
        that are gone are written offline and dropped; new machines start; machines whose
        definition is the same keep their tracker (state, since-time, durations); a machine whose
        definition changed gets a tracker of the new definition that carries on from the old one's
        checkpoint (the new rules apply from its next reading). Sources that changed, or whose
        machines changed, are reopened; the others keep their connection. Returns what changed,
        by kind (see ``collector.reconfig.diff``)."""
        changes = diff(self.config, list(self.machines.values()), new)
        out = self.fleet.reconfigure(new, changes, self._watermark())
        await self._commit(out, hold=False)  # a reload answers when it is done: not paced
        # A reopened source's task is cancelled wherever it waits; a batch being committed is
        # committed and acknowledged first (_settle), so the broker does not deliver it again.
        for sid in changes["sources_removed"] + changes["sources_restarted"]:
            task = self._source_tasks.pop(sid, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self.stats.source_online.pop(sid, None)
            self.holds.drop(sid)
        if self._tg is not None:
            for source in self.config.sources:
                if source.id not in self._source_tasks:
                    self._source_tasks[source.id] = self._tg.create_task(self._supervise(source),
                                                                         name=f"source:{source.id}")
        return changes

    async def _resume(self) -> None:
        """Carry on from the last commit (a crash) or the last clean stop (collector/checkpoints.py)."""
        if not await self.fleet.checkpoints.load(self.sink):
            return
        self.fleet.reorder.restore(self.fleet.checkpoints.waiting, time.monotonic_ns())  # held readings
        resumed = sum(self.fleet.resume(self.machines[mid], tracker) for mid, tracker in self.trackers.items())
        log.info("resuming %d machine(s) from the state last committed", resumed)
        for source in self.config.sources:
            if source.redelivers():
                self.holds.hold(source.id)
        await self._commit([])

    # -- supervising the sources (collector/supervision.py calls the source_* methods) ----------

    async def _supervise(self, source: SourceConfig) -> None:
        if self.shard is not None:
            source = source.in_shard(self.shard.index)
        await supervise(self, source, Backoff(*self.backoff), self._opening)

    def source_adapter(self, source: SourceConfig) -> contextlib.AbstractAsyncContextManager[Adapter]:
        self._source_opened[source.id] = self.clock()
        context = AdapterContext(self.config.data_dir / "sources" / source.id, self.bad_input)
        return REGISTRY[source.type].load()(source, self.fleet.bound(source.id), context)

    async def source_read(self, source: SourceConfig, adapter: Adapter, progress: Backoff) -> None:
        log.info("source %s (%s) connected", source.id, source.type)
        self.stats.source_online[source.id] = True
        self._adapters[source.id] = adapter
        self.holds.back(source.id)
        self.fleet.reorder.connected(source.id, time.monotonic_ns(), resumed=adapter.catching_up())
        unsettled = Unsettled()
        try:
            async for batch in adapter:
                progress.reset()
                # Held readings wait (collector/reorder.py); a large batch means a backlog: commit it at once.
                events = self.fleet.reorder.take(source.id, batch.events, time.monotonic_ns(),
                                                 redelivered=batch.redelivered)
                await self._settle(self._process_all(events), batch.ack, hold=len(batch.events) < PACE_BELOW,
                                   messages=batch.messages, unsettled=unsettled)
        finally:
            # Held commits are stored and acknowledged on this connection before it closes.
            if unsettled.futures:
                self.commits.release_hold()
                await asyncio.wait(list(unsettled.futures))

    def source_closed(self, source: SourceConfig) -> None:
        self._adapters.pop(source.id, None)

    async def source_down(self, source: SourceConfig, exc: Exception, delay_s: float) -> None:
        reason = self.failures.reason(source.id, exc)
        self.stats.source_online[source.id] = False
        self.stats.reconnects[source.id] = self.stats.reconnects.get(source.id, 0) + 1
        log.warning("%s; reconnecting in %.1fs", reason, delay_s)
        lost = Connectivity(source.id, False, self.clock(), reason)
        if source.redelivers():
            # The broker keeps what is published meanwhile: if it is back within the hold, that
            # backlog says what the machines did (collector/holds.py).
            self.holds.lose(source.id, lost)
        else:
            await self._commit(self._process_all([*self.fleet.reorder.flush(source.id), lost]))

    async def _settle(self, out: list[Output], ack: Callable[[], None] | None, *, hold: bool = True,
                      messages: int = 0, unsettled: Unsettled | None = None) -> None:
        """Commit a batch's effect, then acknowledge it (collector/commits.py)."""
        if unsettled is not None and unsettled.error is not None:
            raise unsettled.error
        written = self._enqueue(out, hold=hold)
        await self.commits.settle(written, ack, messages=messages, unsettled=unsettled)

    # -- ticking -------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self._commit(self._tick())

    def _tick(self) -> list[Output]:
        """Roll every tracker forward to the watermark: the wall clock (less the lateness a
        source-stamped reading is allowed), but never past an event an adapter has read and not
        yet handed over."""
        out = self._check_clock() + self._process_all(self.fleet.reorder.due(time.monotonic_ns()))
        now = self._watermark()
        late_now = min(now, self.clock() - self._lateness_ns)
        held = self.holds.held(self._adapters)
        for lost in self.holds.expired(held):
            out += self._process_all([*self.fleet.reorder.flush(lost.source), lost])
        if now < self._next_due:
            # No tracker is due (every tick below would return at once): a plant of 1,000
            # machines changing once a minute is due about once a minute, not four times a second.
            return out
        emitted, self._next_due = self.fleet.tick(now, late_now, self._lateness_ns, held)
        return out + emitted if out else emitted

    def _check_clock(self) -> list[Output]:
        """A step of the collector's clock is relabelling, not time (collector/timelines.py): the
        machines stamped on arrival and the times the engine keeps on our clock move with it."""
        step = self.lines.check()
        if step is None:
            return []
        out, record = self.fleet.shift(step, self._step_backs if isinstance(self.sink, Correcting) else None)
        if record is not None:
            # behind the old line's last points, ahead of the new line's first (collector/stepback.py)
            self._enqueue(out)
            self.commits.enqueue([record.to_line()], {})
            out = []
        self._source_opened = {sid: ts + step.delta_ns for sid, ts in self._source_opened.items()}
        self.holds.shift(step.delta_ns)
        self._next_due = 0
        return out

    def _watermark(self) -> int:
        now = self.clock()
        for adapter in list(self._adapters.values()):
            oldest = adapter.horizon_ns()
            if oldest is not None and oldest < now:
                now = oldest
        return now

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
            if self.lines.step is not None:
                event = self.lines.on_our_line(event, self.fleet.on_arrival())
            bounded = self._time_bound(event)
            if bounded is None:
                return []
            event = bounded
        if isinstance(event, Sample | Reading):
            out = self.fleet.reading(event)
            if out is None:
                self.stats.other_shard += 1
                return []
            return out
        if isinstance(event, Connectivity):
            self.stats.source_online[event.source] = event.online
            return self.fleet.connectivity(event)
        if isinstance(event, MachineFound):
            start = min(self._source_opened.get(event.source, self.clock()), self.clock())
            new = self.fleet.found(event, start)
            if new is None:
                self.stats.other_shard += 1
            elif new:
                log.info("discovered machine %s on source %s (profile %s)", event.machine, event.source,
                         event.profile)
        return []

    def _time_bound(self, event: Sample | Reading | Connectivity) -> Sample | Reading | Connectivity | None:
        """[robust] The event with its timestamp inside ``tracker.max_future``/``max_past`` (see
        collector/timebounds.py), or None when it is dropped; either is counted as bad input."""
        now = self.clock()
        bounds = self.fleet.time_bounds
        return event if bounds.within(event.ts_ns, now) else bounds.bound(event, now, self.fleet.reporter(event))

    # -- committing: points and the trackers' state in one transaction --------------------------

    @property
    def _dirty(self) -> set[str]:
        return self.fleet.dirty

    async def _commit(self, out: list[Output], *, hold: bool = True) -> None:
        """Store ``out`` and the state of every tracker changed since the last commit, at once."""
        written = self._enqueue(out, hold=hold)
        if written is not None:
            await asyncio.shield(written)  # a write is shared (group commit): a cancelled awaiter leaves it be

    def _enqueue(self, out: list[Output], *, hold: bool = True) -> asyncio.Future[None] | None:
        """Take the changed trackers' state now (synchronously, right after the events that
        changed it) and queue it with ``out`` (collector/commits.py): commits land in the order
        the trackers changed, so the checkpoint on disk is a state they really passed through."""
        if self.fleet.carry:
            out, self.fleet.carry = self.fleet.carry + out, []
        state, due = self.fleet.take_dirty()
        self._next_due = min(self._next_due, due)
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
        held = self._process_all(self.fleet.reorder.flush())  # a clean stop: what is held goes in as it is
        await self._commit(held + self.fleet.stop(self._stop_ns if self._stop_ns is not None else self.clock()))
