"""``collector check``: try a config against the live sources without writing anything.

It opens every source with the real adapters (so what it finds is what ``run`` would find),
prints each machine's signals as they arrive, the state the rules give and why, and every
problem: a node that does not exist, a certificate refused, a payload path with no value, a
topic no subscription matches, a machine that sent nothing. The exit status is 1 when a
configured machine sent no data, so a script can gate an install on it.

It never writes: no outbox, no InfluxDB, no tracker state. An MQTT source (and MTConnect over
MQTT) is read with a throw-away client id and a clean session, outside any shared-subscription
group, so a running collector's persistent session and its queued messages are left alone; an
MTConnect agent's stored session (its next sequence) stays in the data dir untouched, as check
keeps its own in a temp dir. OPC UA sources use the
data dir's certificates (made there on first use, as ``run`` would) so the server admin can
trust the client before the first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from adapters import REGISTRY
from adapters.base import Adapter, AdapterContext, SourceConfig
from adapters.mqtt.config import MqttSource
from adapters.mtconnect.config import MtConnectSource
from collector.capacity.records import silence_detected_by
from collector.check_mqtt import TopicSpy
from collector.configfile import LoadedConfig
from collector.core.backoff import Backoff
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, Event, MachineFound, Quality, Reading, Sample, State, composite_name
from collector.machines import ResolvedMachine, resolve_found
from collector.supervision import supervise

log = logging.getLogger(__name__)

EXIT_OK, EXIT_NO_DATA = 0, 1


@dataclass
class MachineCheck:
    machine: ResolvedMachine
    configured: bool
    values: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # signal -> status, while its quality is bad
    messages: int = 0
    state: State | None = None
    reason: str = ""


class _Problems(BadInput):
    """Bad input and source failures, each distinct kind said once when first seen (and counted)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self.say = say
        self.seen: dict[str, int] = {}  # key -> times
        self.first: dict[str, str] = {}  # key -> the text of its first occurrence

    def report(self, source: str, kind: str, detail: str, subject: str = "") -> None:
        self.counts[(source, kind)] += 1
        self.add(f"source {source}: {kind}: {detail}", key=f"{source}:{kind}:{subject}")

    def add(self, text: str, key: str | None = None) -> None:
        key = key or text
        if key not in self.seen:
            self.seen[key] = 0
            self.first[key] = text
            self.say(f"PROBLEM {text}")
        self.seen[key] += 1

    def lines(self) -> list[str]:
        return [self.first[k] + (f" ({n} times)" if n > 1 else "") for k, n in self.seen.items()]


class Checker:
    def __init__(self, loaded: LoadedConfig, out: TextIO) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.out = out
        self.started = time.monotonic()
        self.problems = _Problems(self.say)
        self.machines: dict[str, MachineCheck] = {m.info.id: MachineCheck(m, True) for m in loaded.machines}
        self.spies: dict[str, TopicSpy] = {}
        self.connected: set[str] = set()
        self._tmp = tempfile.TemporaryDirectory(prefix="collector-check-")

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    async def run(self, duration: float, stop: asyncio.Event | None = None) -> int:
        cfg = self.config
        self.say(f"checking {self.loaded.path} for {duration:g}s: {len(cfg.sources)} source(s), "
                 f"{len(self.machines)} machine(s); nothing is written")
        self._silence()
        stop = stop or asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._source(s), name=f"check:{s.id}") for s in cfg.sources]
                stopper = tg.create_task(stop.wait(), name="check:stop")
                await asyncio.wait([stopper, *tasks], timeout=duration, return_when=asyncio.FIRST_COMPLETED)
                for task in (*tasks, stopper):
                    task.cancel()
        finally:
            for spy in self.spies.values():
                spy.close()
            self._tmp.cleanup()
        return self._summary()

    def _silence(self) -> None:
        """Warn where a machine gone silent cannot be told from an idle one: it would stay idle,
        and the capacity feed would offer a machine that is not there."""
        sources = {s.id: s for s in self.config.sources}
        blind: dict[str, list[str]] = {}
        for m in self.loaded.machines:
            if not silence_detected_by(m, sources.get(m.source)):
                blind.setdefault(m.source, []).append(m.info.id)
        for source, machines in blind.items():
            shown = ", ".join(machines[:5]) + (f" and {len(machines) - 5} more" if len(machines) > 5 else "")
            self.problems.add(
                f"source {source}: cannot tell a silent machine from an idle one ({shown}): no status topic, not "
                f"Sparkplug only, no stale_after; a machine that stops sending stays in its last state (idle: "
                f"offered as free capacity). Set stale_after (e.g. three publish periods) or a status topic")

    # -- sources ---------------------------------------------------------------------------------

    async def _source(self, source: SourceConfig) -> None:
        source = _read_only(source)
        if isinstance(source, MqttSource):
            spy = self.spies[source.id] = TopicSpy(source)
            with contextlib.suppress(Exception):  # a hint for the summary, not needed to check
                await spy.start()
        await supervise(self, source, Backoff(0.5, 5.0))  # run's loop (collector/supervision.py)

    def source_adapter(self, source: SourceConfig) -> contextlib.AbstractAsyncContextManager[Adapter]:
        # The configured machines: a reopen does not bind those found meanwhile (they are found again).
        bound = [m.machine.bound for m in self.machines.values() if m.configured and m.machine.source == source.id]
        return REGISTRY[source.type].load()(source, bound, AdapterContext(self._data_dir(source), self.problems))

    async def source_read(self, source: SourceConfig, adapter: Adapter, progress: Backoff) -> None:
        self.connected.add(source.id)
        self.say(f"source {source.id} ({source.type}): connected")
        async for batch in adapter:
            progress.reset()
            for event in batch.events:
                self._event(source.id, event)
            if batch.ack is not None:  # our own throw-away session: keep the broker sending
                batch.ack()

    def source_closed(self, source: SourceConfig) -> None:
        pass

    async def source_down(self, source: SourceConfig, exc: Exception, delay_s: float) -> None:
        self.problems.add(f"source {source.id} ({source.type}): {exc or type(exc).__name__}")

    def _data_dir(self, source: SourceConfig) -> Path:
        if source.type == "opcua":  # its certificates: the ones `run` uses, see the module docstring
            return self.config.data_dir / "sources" / source.id
        return Path(self._tmp.name) / source.id

    # -- events ----------------------------------------------------------------------------------

    def _event(self, source: str, event: Event) -> None:
        if isinstance(event, Sample):
            self._values(event.machine, event.values)
        elif isinstance(event, Reading):
            if event.quality is Quality.BAD:
                self.problems.add(f"machine {event.machine} signal {event.signal}: bad quality {event.status}",
                                  key=f"{event.machine}:{event.signal}:{event.status}")
                self._values(event.machine, {}, bad=(event.signal, event.status or "bad quality"))
            else:
                self._values(event.machine, {event.signal: event.value})
        elif isinstance(event, Connectivity):
            targets = ", ".join(event.machines) if event.machines else f"every machine of {source}"
            self.say(f"source {source}: {targets} {'online' if event.online else 'OFFLINE'}"
                     + (f": {event.reason}" if event.reason else ""))
            if not event.online:
                for m in self.machines.values():
                    if m.machine.source == source and (not event.machines or m.machine.info.id in event.machines):
                        self._state(m, State.OFFLINE, event.reason or "source offline")
        elif isinstance(event, MachineFound):
            if event.machine in self.machines:
                return
            try:
                machine = resolve_found(self.config, event)
            except ValueError as exc:
                self.problems.add(f"source {source}: discovered machine {event.machine}: {exc}")
                return
            self.machines[event.machine] = MachineCheck(machine, configured=False)
            self.say(f"found machine {event.machine} on source {source} (profile {event.profile})")

    def _values(self, machine_id: str, values: dict[str, Any], bad: tuple[str, str] | None = None) -> None:
        m = self.machines.get(machine_id)
        if m is None:
            self.problems.add(f"reading for machine {machine_id!r}, which the config does not list",
                              key=f"unknown:{machine_id}")
            return
        m.messages += 1
        m.values.update(values)
        for signal in values:
            m.bad.pop(signal, None)
        if bad is not None:
            m.bad[bad[0]] = bad[1]
        shown = " ".join(f"{k}={v!r}" for k, v in values.items()) or (f"{bad[0]}: {bad[1]}" if bad else "")
        self.say(f"{machine_id:<14} {shown}")
        # As the tracker decides: a signal the rules use with bad quality makes the machine offline.
        bad_used = sorted(s for s in m.bad if s in m.machine.rules.signals)
        if bad_used:
            self._state(m, State.OFFLINE, "bad quality: " + ", ".join(f"{s} {m.bad[s]}" for s in bad_used))
        else:
            self._state(m, *m.machine.rules.evaluate(m.values))

    def _state(self, m: MachineCheck, state: State, reason: str) -> None:
        if (state, reason) != (m.state, m.reason):
            m.state, m.reason = state, reason
            self.say(f"{m.machine.info.id:<14} -> {state.value.upper()}: {reason}")

    # -- the end ---------------------------------------------------------------------------------

    def _summary(self) -> int:
        print(file=self.out)
        no_data = [m for m in self.machines.values() if m.configured and m.messages == 0]
        for m in self.machines.values():
            if m.messages == 0:
                continue
            missing = [s for s in m.machine.bound.signals if composite_name(s) not in m.values]
            for signal in missing:
                self.problems.add(f"machine {m.machine.info.id}: signal {signal} "
                                  f"({m.machine.bound.signals[signal]}) never arrived")
        for m in no_data:
            self.problems.add(f"machine {m.machine.info.id}: no data from source {m.machine.source}")
        for source_id, spy in self.spies.items():
            if any(m.machine.source == source_id for m in no_data):
                hint = spy.unmatched_hint()
                if hint:
                    self.problems.add(f"source {source_id}: {hint}")
        print(f"summary after {time.monotonic() - self.started:.1f}s (nothing was written):", file=self.out)
        width = max([len(mid) for mid in self.machines] + [7])
        print(f"  {'machine':<{width}}  {'source':<10} {'messages':>8}  {'state':<8} reason", file=self.out)
        for mid, m in sorted(self.machines.items()):
            state = m.state.value if m.state is not None and m.messages else "NO DATA"
            found = "" if m.configured else " (discovered)"
            print(f"  {mid:<{width}}  {m.machine.source:<10} {m.messages:>8}  {state:<8} {m.reason}{found}",
                  file=self.out)
        lines = self.problems.lines()
        print(f"problems ({len(lines)}):" if lines else "problems: none", file=self.out)
        for line in lines:
            print(f"  {line}", file=self.out)
        configured = sum(1 for m in self.machines.values() if m.configured)
        if no_data:
            print(f"FAILED: {len(no_data)} of {configured} configured machine(s) sent no data: "
                  f"{', '.join(m.machine.info.id for m in no_data)}", file=self.out)
            return EXIT_NO_DATA
        if not any(m.messages for m in self.machines.values()):  # e.g. discovery only, and it found nothing
            print("FAILED: no machine sent data", file=self.out)
            return EXIT_NO_DATA
        print(f"OK: all {configured} configured machine(s) sent data", file=self.out)
        return EXIT_OK


def _read_only(source: SourceConfig) -> SourceConfig:
    """The source as check reads it: never in a running collector's MQTT session or share group,
    and never the Sparkplug primary host (its STATE birth would outdate the running collector's,
    and its stop would tell every waiting edge node that the host went away)."""
    if isinstance(source, MqttSource):
        return source.model_copy(update={"client_id": f"collector-check-{os.getpid()}-{source.id}",
                                         "clean_start": True, "shared_group": None, "host_id": None})
    if isinstance(source, MtConnectSource) and source.mqtt is not None:
        broker = source.mqtt.model_copy(update={"client_id": f"collector-check-{os.getpid()}-{source.id}",
                                                "clean_start": True})
        return source.model_copy(update={"mqtt": broker})
    return source


async def check(loaded: LoadedConfig, duration: float, out: TextIO, stop: asyncio.Event | None = None) -> int:
    return await Checker(loaded, out).run(duration, stop)


__all__ = ["EXIT_NO_DATA", "EXIT_OK", "Checker", "check"]
