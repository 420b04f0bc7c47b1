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
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters import REGISTRY
from adapters.base import Adapter, AdapterContext, BoundMachine, SourceConfig, SourceError
from collector.configfile import LoadedConfig
from collector.core.backoff import Backoff, Opening
from collector.core.badinput import BadInput
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
    now_ns,
)
from collector.machines import ResolvedMachine, resolve_found
from collector.sinks import Sink
from collector.timebounds import TimeBounds
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
PACE_BELOW = 256
"""Batches of fewer events are a trickle: their commit waits for the sender (see _enqueue)."""
PACE_MAX_UNACKED = 10
"""A held commit goes once this many messages wait for it to be acknowledged: a broker sends
only so many unacknowledged messages (mosquitto: 20 by default), so holding more would stall
the source until the next send."""


@dataclass
class _Write:
    """A commit not handed to the sink yet; later commits join it until it starts."""

    lines: list[str]
    state: dict[str, dict[str, Any]]
    release: asyncio.Event = field(default_factory=asyncio.Event)  # held for the sender: go now
    done: asyncio.Future[None] | None = None
    unacked: int = 0  # messages whose acknowledgement waits for this write (see _settle)


class _Unsettled:
    """A source's commits its supervisor did not wait for (held for the sender), each with the
    acknowledgements to send once it is stored, in order."""

    def __init__(self) -> None:
        self.futures: set[asyncio.Future[None]] = set()
        self.error: BaseException | None = None  # a held commit failed: the supervisor raises it

    def add(self, written: asyncio.Future[None], ack: Callable[[], None]) -> None:
        def stored(f: asyncio.Future[None]) -> None:
            self.futures.discard(f)
            if f.cancelled():
                self.error = self.error or SourceError("a commit was cancelled")
            elif f.exception() is not None:
                self.error = self.error or f.exception()
            elif self.error is None:
                ack()  # callbacks run in the order added: acknowledgements keep the messages' order
        self.futures.add(written)
        written.add_done_callback(stored)


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
    def __init__(self, loaded: LoadedConfig, sink: Sink, *, clock: Callable[[], int] = now_ns,
                 tick_s: float = 0.25, backoff_initial_s: float = 0.5, backoff_cap_s: float = RECONNECT_CAP_S,
                 on_output: Callable[[Sequence[Output]], None] | None = None) -> None:
        self.config = loaded.config
        self.sink = sink
        self.clock = clock
        self.tick_s = tick_s
        self._lateness_ns = int(self.config.tracker.lateness * NS_PER_S)
        self.backoff = (backoff_initial_s, backoff_cap_s)
        self._opening = Opening(OPENING_AT_ONCE, OPENING_PATIENCE_S)
        self.on_output = on_output
        self.bad_input = BadInput()
        self.stats = EngineStats()
        self.machines: dict[str, ResolvedMachine] = {}
        self.trackers: dict[str, Tracker] = {}
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
        self._tail: asyncio.Future[None] | None = None  # the last write queued (see _enqueue)
        self._open: _Write | None = None  # the queued write not yet handed to the sink: joinable
        self._commit_delay_s = self.config.outbox.commit_delay
        self._paced = False  # the sink's sender takes what is held back before each send (see _enqueue)
        self._holding: _Write | None = None
        self._next_due = 0  # no tracker has anything due before this (see _tick)
        self._errors_logged: set[str] = set()
        self._stop_ns: int | None = None
        self._tg: asyncio.TaskGroup | None = None  # reload (apply) starts and stops source tasks in it
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        start = clock()
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
                "replayed": sum(t.replayed for t in trackers)}

    def snapshot(self) -> dict[str, TrackerStatus]:
        now = self.clock()
        return {mid: t.status(now) for mid, t in self.trackers.items()}

    async def run(self, stop: asyncio.Event) -> None:
        async with self.sink:
            await self._resume()
            self._pace()
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
                    self._release_hold()  # the cancelled sources' last commits go at once
                    for task in (*self._source_tasks.values(), *tasks, stopper):
                        task.cancel()
            finally:
                self._tg = None  # no reload starts a source on the way out
                self._release_hold()
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
        self._rules = {m.profile: m.rules for m in loaded.machines}

    # -- machines --------------------------------------------------------------------------

    def _owns(self, machine: str) -> bool:
        return self.shard is None or self.shard.owns(machine)

    def _add(self, machine: ResolvedMachine, start_ns: int) -> None:
        tracker_cfg = self.config.tracker
        self.machines[machine.info.id] = machine
        tracker = self.trackers[machine.info.id] = Tracker(
            machine.info, machine.rules, start_ns=start_ns,
            interval_ns=int(tracker_cfg.interval * NS_PER_S),
            debounce_ns=int(machine.debounce_s * NS_PER_S),
            stale_after_ns=None if machine.stale_after_s is None else int(machine.stale_after_s * NS_PER_S),
            max_gap_ns=int(tracker_cfg.max_gap * NS_PER_S))
        self.machines_per_source[machine.source] = self.machines_per_source.get(machine.source, 0) + 1
        saved = self._snapshots.pop(machine.info.id, None)
        if saved is not None:
            self._resume_tracker(machine, tracker, *saved)

    def _bound(self, source: str) -> list[BoundMachine]:
        return [m.bound for m in self.machines.values() if m.source == source]

    # -- across restarts: the outbox holds every tracker's last committed state ----------------

    def _pace(self) -> None:
        """A sink with a sender of its own (the outbox) calls ``_release`` before each send, so a
        commit at a trickle can wait for it: one transaction per send, not one per message."""
        pace = getattr(self.sink, "pace", None)
        if pace is not None and self._commit_delay_s > 0:
            pace(self._release)
            self._paced = True

    def _release_hold(self) -> None:
        """Stopping: no commit waits for the sender any more."""
        self._paced = False
        if self._holding is not None:
            self._holding.release.set()

    async def _release(self) -> None:
        """The sender is about to send: commit what is held back, and wait until it is stored."""
        holding = self._holding
        if holding is not None and holding.done is not None:
            holding.release.set()
            await asyncio.wait([holding.done])

    async def _resume(self) -> None:
        """Carry on from the last commit (a crash) or the last clean stop."""
        load = getattr(self.sink, "load_state", None)
        if load is None:
            return
        saved: dict[str, tuple[dict[str, Any], int]] = await load()
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
        while True:
            try:
                async with contextlib.AsyncExitStack() as opened:
                    async with self._opening.slot():  # a few sources open at a time (see Opening)
                        self._source_opened[source.id] = self.clock()
                        adapter = await opened.enter_async_context(factory(source, self._bound(source.id), context))
                    log.info("source %s (%s) connected", source.id, source.type)
                    self.stats.source_online[source.id] = True
                    self._adapters[source.id] = adapter
                    self._lost.pop(source.id, None)
                    unsettled = _Unsettled()
                    try:
                        async for batch in adapter:
                            backoff.reset()
                            # A large batch means a backlog: commit it at once (see _enqueue).
                            await self._settle(self._process_all(batch.events), batch.ack,
                                               hold=len(batch.events) < PACE_BELOW, messages=batch.messages,
                                               unsettled=unsettled)
                    finally:
                        # Held commits are stored and acknowledged on this connection before it closes.
                        if unsettled.futures:
                            self._release_hold()
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
                await self._commit(self._process(lost))
            await asyncio.sleep(delay)

    async def _settle(self, out: list[Output], ack: Callable[[], None] | None, *, hold: bool = True,
                      messages: int = 0, unsettled: _Unsettled | None = None) -> None:
        """Commit a batch's effect, then acknowledge it; a stop or a reload that cancels the
        source meanwhile waits for both, so no batch is committed and left unacknowledged (the
        broker would deliver it again to trackers that already have it).

        A commit held for the sender (see _enqueue) is not waited for: its acknowledgement is
        sent once it is stored, and the supervisor reads on, so the next batches join it. It
        goes at the latest when ``PACE_MAX_UNACKED`` messages wait for it."""
        if unsettled is not None and unsettled.error is not None:
            raise unsettled.error
        written = self._enqueue(out, hold=hold)
        holding = self._holding
        if (written is not None and ack is not None and unsettled is not None and holding is not None
                and written is holding.done):
            holding.unacked += messages
            if holding.unacked >= PACE_MAX_UNACKED:
                holding.release.set()
            unsettled.add(written, ack)
            return
        if written is not None:
            try:
                await asyncio.shield(written)
            except asyncio.CancelledError:
                await asyncio.wait([written])  # a second cancel must not cancel the shared write
                if ack is not None and not written.cancelled() and written.exception() is None:
                    ack()
                raise
        if ack is not None:
            ack()

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
        now = self._watermark()
        late_now = min(now, self.clock() - self._lateness_ns)
        held = self._held_sources()
        out: list[Output] = []
        for source in [s for s in self._lost if s not in held]:
            out += self._process(self._lost.pop(source))
        if now < self._next_due:
            # No tracker is due (every tick below would return at once): a plant of 1,000
            # machines changing once a minute is due about once a minute, not four times a second.
            return out
        arrival = {sid for sid, cfg in self._sources.items() if not cfg.stamps_at_source()}
        next_due = _NEVER
        for mid, tracker in self.trackers.items():
            sid = self.machines[mid].source
            emitted = tracker.tick(now if sid in arrival else late_now, hold=sid in held)
            if emitted:
                out += emitted
                self._dirty.add(mid)
            due = tracker.due_ns()
            if due < next_due:
                next_due = due
        self._next_due = next_due
        return out

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
            self._dirty.add(event.machine)
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
                return []  # configured (or already found): the config wins
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

    # -- committing: points and the trackers' state in one transaction --------------------------

    async def _commit(self, out: list[Output], *, hold: bool = True) -> None:
        """Store ``out`` and the state of every tracker changed since the last commit, at once."""
        written = self._enqueue(out, hold=hold)
        if written is not None:
            await asyncio.shield(written)  # a write is shared (group commit): a cancelled awaiter leaves it be

    def _enqueue(self, out: list[Output], *, hold: bool = True) -> asyncio.Future[None] | None:
        """Take the trackers' state now (synchronously, right after the events that changed it)
        and queue the write behind every write queued before: commits land in the order the
        trackers changed, so the checkpoint on disk is always a state they really passed through.
        The write goes on even if whoever awaits it is cancelled.

        Group commit: a write joins the queued one that has not reached the sink yet (one
        transaction, one fsync, for every batch that arrived while the previous commit ran).
        With a sink that sends on its own (the outbox: ``_pace``), a write queued behind none is
        held until the sender is about to send, ``outbox.commit_delay`` at most: at a trickle
        that is one commit per send instead of one per message, and the points reach InfluxDB
        with the same send as before. Not with ``hold=False`` (a batch of ``PACE_BELOW`` events
        or more, i.e. a backlog): its supervisor waits for the commit before it reads on, and a
        sender that finds nothing new to send (a backlog of readings that change no state) sleeps
        a whole flush interval, so holding would cap a drain at a Receive Maximum per second.
        Joining keeps the order (the joined write is the last queued) and what lands is still a
        state the trackers passed through: the later snapshot of a machine replaces its earlier
        one. Acknowledgements wait for the commit as ever."""
        if self._carry:
            out, self._carry = self._carry + out, []
        if not out and not self._dirty:
            if not hold and self._open is not None:
                self._open.release.set()
            return self._tail
        dirty, self._dirty = self._dirty, set()
        state: dict[str, dict[str, Any]] = {}
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
        lines = [to_line(o) for o in out]
        joinable = self._open
        if joinable is not None:
            joinable.lines += lines
            joinable.state.update(state)
            if not hold:
                joinable.release.set()  # a backlog batch joined a held write: it goes now
            return self._tail
        pending = self._open = _Write(lines, state)
        before = self._tail
        hold = hold and self._paced and (before is None or before.done())
        if hold:
            self._holding = pending

        async def write() -> None:
            try:
                if before is not None and not before.done():
                    await asyncio.wait([before])  # in order; an earlier failure is its own awaiter's to see
                elif hold:
                    try:
                        async with asyncio.timeout(self._commit_delay_s):
                            await pending.release.wait()
                    except TimeoutError:
                        pass
            finally:  # even if cancelled: later commits must not join a write that will not happen
                if self._holding is pending:
                    self._holding = None
                if self._open is pending:
                    self._open = None
            await self.sink.write(pending.lines, pending.state)
            self.stats.commits += 1
            self.stats.lines_written += len(pending.lines)

        self._tail = pending.done = asyncio.ensure_future(write())
        return self._tail

    async def _shutdown(self) -> None:
        now = self._stop_ns if self._stop_ns is not None else self.clock()
        out: list[Output] = []
        for mid, tracker in self.trackers.items():
            out += tracker.stop(now)
            self._dirty.add(mid)
        await self._commit(out)

