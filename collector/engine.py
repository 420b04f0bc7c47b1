"""The pipeline: supervised adapters -> one queue -> a tracker per machine -> the sink.

    engine = Engine(loaded, sink)
    await engine.run(stop)          # until ``stop`` is set; then every machine goes offline

The supervisor owns reconnection: an adapter that fails to connect or loses its source raises;
the supervisor marks the source's machines offline at once, waits a jittered, capped
exponential backoff, and opens the adapter again. Adapters never retry themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import REGISTRY
from adapters.base import AdapterContext, BoundMachine
from collector.backoff import Backoff
from collector.badinput import BadInput
from collector.configfile import LoadedConfig
from collector.lineprotocol import to_line
from collector.machines import ResolvedMachine, resolve_found
from collector.model import NS_PER_S, Connectivity, Event, MachineFound, Output, Reading, Sample, StateChange, now_ns
from collector.sinks import Sink
from collector.tracker import Tracker, TrackerStatus

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
# After a restart, how long intervals wait for a source's backlog (e.g. a persistent MQTT
# session) before time without readings is rolled up as offline.
RESUME_HOLD_S = 30.0
BATCH_MAX = 5_000


@dataclass
class EngineStats:
    events: int = 0
    state_changes: int = 0
    intervals: int = 0
    lines_written: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    source_online: dict[str, bool] = field(default_factory=dict)


class Engine:
    def __init__(self, loaded: LoadedConfig, sink: Sink, *, clock: Callable[[], int] = now_ns,
                 tick_s: float = 0.25, backoff_initial_s: float = 0.5, backoff_cap_s: float = 30.0,
                 on_output: Callable[[Sequence[Output]], None] | None = None,
                 state_file: Path | None = None) -> None:
        self.config = loaded.config
        self.sink = sink
        self.clock = clock
        self.tick_s = tick_s
        self.backoff = (backoff_initial_s, backoff_cap_s)
        self.on_output = on_output
        self.bad_input = BadInput()
        self.stats = EngineStats()
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.machines: dict[str, ResolvedMachine] = {}
        # When each source was last opened: a machine it discovers is tracked from then, so the
        # first readings (stamped no earlier than the open) are not older than its tracker.
        self._source_opened: dict[str, int] = {}
        self.trackers: dict[str, Tracker] = {}
        self.state_file = state_file  # None: every start is fresh (the demo, tests)
        self._snapshots = self._load_snapshots()
        start = clock()
        for machine in loaded.machines:
            self._add(machine, start)

    # -- public ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, TrackerStatus]:
        now = self.clock()
        return {mid: t.status(now) for mid, t in self.trackers.items()}

    async def run(self, stop: asyncio.Event) -> None:
        log.info("starting: %d source(s), %d machine(s)", len(self.config.sources), len(self.trackers))
        async with self.sink:
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(self._supervise(s), name=f"source:{s.id}") for s in self.config.sources]
                    tasks.append(tg.create_task(self._ticker(), name="ticker"))
                    consumer = tg.create_task(self._consume(), name="consumer")
                    stopper = tg.create_task(stop.wait(), name="stop")
                    await asyncio.wait([stopper, consumer, *tasks], return_when=asyncio.FIRST_COMPLETED)
                    for task in (*tasks, consumer, stopper):
                        task.cancel()
            finally:
                await self._shutdown()
        log.info("stopped: %d state change(s), %d interval(s), %d line(s) written",
                 self.stats.state_changes, self.stats.intervals, self.stats.lines_written)

    # -- machines --------------------------------------------------------------------------

    def _add(self, machine: ResolvedMachine, start_ns: int) -> None:
        tracker_cfg = self.config.tracker
        self.machines[machine.info.id] = machine
        tracker = self.trackers[machine.info.id] = Tracker(
            machine.info, machine.rules, start_ns=start_ns,
            interval_ns=int(tracker_cfg.interval * NS_PER_S),
            debounce_ns=int(machine.debounce_s * NS_PER_S),
            stale_after_ns=None if machine.stale_after_s is None else int(machine.stale_after_s * NS_PER_S))
        snap = self._snapshots.pop(machine.info.id, None)
        if snap is not None:
            tracker.resume(snap, start_ns + int(RESUME_HOLD_S * NS_PER_S))

    # -- across restarts: a clean stop leaves each tracker's state for the next start ------------

    def _load_snapshots(self) -> dict[str, dict[str, Any]]:
        if self.state_file is None:
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable tracker state %s: %s", self.state_file, exc)
            return {}
        # Used once: after a crash the next start must not resume from this older stop.
        self.state_file.unlink(missing_ok=True)
        snaps: dict[str, dict[str, Any]] = data.get("machines", {}) if isinstance(data, dict) else {}
        log.info("resuming %d machine(s) from the state of the last stop", len(snaps))
        return snaps

    def _save_snapshots(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 1, "machines": {mid: t.snapshot() for mid, t in self.trackers.items()}}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_file)

    def _bound(self, source: str) -> list[BoundMachine]:
        return [m.bound for m in self.machines.values() if m.source == source]

    # -- tasks -----------------------------------------------------------------------------

    async def _supervise(self, source: Any) -> None:
        spec = REGISTRY[source.type]
        factory = spec.load()
        backoff = Backoff(*self.backoff)
        context = AdapterContext(self.config.data_dir / "sources" / source.id, self.bad_input)
        while True:
            try:
                self._source_opened[source.id] = self.clock()
                async with factory(source, self._bound(source.id), context) as adapter:
                    log.info("source %s (%s) connected", source.id, source.type)
                    self.stats.source_online[source.id] = True
                    async for event in adapter:
                        backoff.reset()
                        await self.queue.put(event)
                raise ConnectionError("the adapter's stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.source_online[source.id] = False
                self.stats.reconnects[source.id] = self.stats.reconnects.get(source.id, 0) + 1
                delay = backoff.next_delay()
                reason = f"source {source.id} unreachable: {exc or type(exc).__name__}"
                log.warning("%s; reconnecting in %.1fs", reason, delay)
                await self.queue.put(Connectivity(source.id, False, self.clock(), reason))
                await asyncio.sleep(delay)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock()
            out: list[Output] = []
            for tracker in self.trackers.values():
                out += tracker.tick(now)
            await self._emit(out)

    async def _consume(self) -> None:
        while True:
            event = await self.queue.get()
            out = self._process(event)
            for _ in range(BATCH_MAX):  # drain what is already queued into one sink write
                try:
                    event = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                out += self._process(event)
            await self._emit(out)

    def _process(self, event: Event) -> list[Output]:
        self.stats.events += 1
        if isinstance(event, Sample | Reading):
            tracker = self.trackers.get(event.machine)
            if tracker is None:
                self.bad_input.report("engine", "unknown_machine", f"reading for unknown machine {event.machine!r}")
                return []
            return tracker.sample(event) if isinstance(event, Sample) else tracker.reading(event)
        if isinstance(event, Connectivity):
            self.stats.source_online[event.source] = event.online
            targets = event.machines or tuple(m for m, r in self.machines.items() if r.source == event.source)
            out: list[Output] = []
            for mid in targets:
                if mid in self.trackers:
                    out += self.trackers[mid].connectivity(event.online, event.ts_ns, event.reason)
            return out
        if isinstance(event, MachineFound):
            if event.machine in self.trackers:
                return []  # configured (or already found): the config wins
            try:
                machine = resolve_found(self.config, event)
            except ValueError as exc:
                self.bad_input.report(event.source, "discovered_machine", f"{event.machine}: {exc}")
                return []
            self._add(machine, min(self._source_opened.get(event.source, self.clock()), self.clock()))
            log.info("discovered machine %s on source %s (profile %s)", event.machine, event.source, event.profile)
        return []

    async def _emit(self, out: list[Output]) -> None:
        if not out:
            return
        for o in out:
            if isinstance(o, StateChange):
                self.stats.state_changes += 1
                log.debug("%s: %s -> %s (%s)", o.machine.id, o.previous, o.state, o.reason)
            else:
                self.stats.intervals += 1
        if self.on_output is not None:
            self.on_output(out)
        lines = [to_line(o) for o in out]
        await self.sink.write(lines)
        self.stats.lines_written += len(lines)

    async def _shutdown(self) -> None:
        now = self.clock()
        out: list[Output] = []
        while not self.queue.empty():  # what adapters delivered is processed, not dropped
            out += self._process(self.queue.get_nowait())
        for tracker in self.trackers.values():
            out += tracker.stop(now)
        await self._emit(out)
        self._save_snapshots()
