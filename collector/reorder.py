"""Hold and sort: readings that may arrive out of order wait in a per-machine buffer and reach
the trackers in their own time order (issue 23; docs/DESIGN.md, "Readings out of order").

Pure and clock-injected (sans-I/O): the engine feeds it each batch with the collector's
monotonic time, asks it each tick what is due, and commits what ``checkpoint`` returns with the
batch's effect.

    reorder = Reorder()
    reorder.configure({"broker": Window(window_ns, catch_up_ns, persist=True)})
    reorder.connected("broker", mono)           # a kept session resumed: its catch-up window opens
    events = reorder.take("broker", batch.events, mono, redelivered=batch.redelivered)
    events += reorder.due(mono)                  # each tick

Rules:
- A reading waits until the monotonic clock passes its arrival plus the source's
  ``reorder_window``, or, if it arrived while the source was catching up after a resumed
  session, until the catch-up window ends (``redelivery_window``: that is when a broker like
  NATS delivers again what it sent before a crash, after newer messages). It is then released
  together with every held reading of its machine stamped no later, in time order (arrival
  order among equal stamps).
- A reading stamped no later than the last one released for its machine is late: it goes on
  at once and the tracker places it as it would without a buffer (clamped, out of order or
  replayed, counted by why).
- A duplicate of a held reading (same machine, stamp and values: a QoS 1 redelivery) is dropped
  and counted.
- A connectivity event of a machine first releases what it holds (offline is later than its
  readings, as its source sent them).
- A source without a window and not catching up holds nothing: its batches pass through as they
  are (in-order sources pay one dict lookup per batch).
- For a source that delivers again what was not acknowledged (``persist``), the held readings
  are part of the checkpoint committed before the batch is acknowledged, so a crash loses none of
  them; redelivered copies are then duplicates. Other sources' held readings are not kept: a
  crash loses them like anything read and not yet committed, and the time is written offline.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adapters.base import SourceConfig
from collector.core.model import NS_PER_S, Connectivity, Event, Quality, Reading, Sample

KEY = "\x00held\x00"
"""Prefix of the held readings in the checkpoint (the outbox's tracker_state table, beside the
trackers' snapshots; a machine id does not start with NUL): ``KEY + machine + NUL + n`` is chunk
``n`` of a machine's held readings."""
CHUNK = 64
"""Held readings per checkpoint entry: a commit rewrites only the chunks that changed (a new
reading joins the open one), not every held reading of the machine, so a long hold (a collector
killed again and again within the catch-up window) costs each commit about what it adds."""
DUP_GRACE_NS = 5_000_000_000
"""A redelivered message (MQTT DUP) seen while catching up keeps the window open this much longer:
a broker redelivers its unacknowledged messages in a burst, and the rest of it is on its way."""
_NEVER = 2**63


class Window(NamedTuple):
    """A source's hold, in ns: ``window`` after each reading's arrival; ``catch_up`` after a resumed
    session's connect; ``persist`` its held readings in the checkpoint (it redelivers)."""

    window: int = 0
    catch_up: int = 0
    persist: bool = False


class _Held(NamedTuple):
    ts: int
    seq: int  # arrival order among equal stamps
    arrived: int  # monotonic ns
    catching_up: bool  # arrived in the source's catch-up window: waits for its end too
    chunk: int  # the checkpoint entry it is kept in
    event: Reading | Sample


@dataclass(slots=True)
class _Machine:
    source: str
    held: list[_Held] = field(default_factory=list)  # sorted by (ts, seq)
    released: int | None = None  # the newest stamp released
    # chunk -> seq -> the held reading as the checkpoint stores it (encoded once, when it comes)
    chunks: dict[int, dict[int, list[Any] | None]] = field(default_factory=dict)
    open_chunk: int = 0
    dirty: set[int] = field(default_factory=set)  # chunks changed since the last checkpoint

    def add(self, h: _Held) -> None:
        bisect.insort(self.held, h)
        self.chunks.setdefault(h.chunk, {})[h.seq] = _encode(h.event) if _plain(h.event) else None
        self.dirty.add(h.chunk)

    def chunk_for_next(self) -> int:
        """The open chunk, or a free number once it is full (numbers are reused: entries stay few)."""
        if len(self.chunks.get(self.open_chunk, ())) >= CHUNK:
            n = 0
            while len(self.chunks.get(n, ())):
                n += 1
            self.open_chunk = n
        return self.open_chunk

    def drop(self, released: list[_Held]) -> None:
        for h in released:
            chunk = self.chunks[h.chunk]
            del chunk[h.seq]
            if not chunk:
                del self.chunks[h.chunk]
            self.dirty.add(h.chunk)


class Reorder:
    """``owns(machine)``: whether this collector tracks the machine (``shard:``); the readings of
    machines another shard tracks are not held (the engine counts and drops them)."""

    def __init__(self, owns: Callable[[str], bool] = lambda _: True) -> None:
        self.owns = owns
        self.windows: dict[str, Window] = {}
        self.catch_up_until: dict[str, int] = {}  # source -> monotonic ns its catch-up window ends
        self.machines: dict[str, _Machine] = {}
        self.duplicates = 0
        self.redeliveries: dict[str, int] = {}  # source -> messages marked as delivered again (MQTT DUP)
        self._holding: dict[str, set[str]] = {}  # source -> machines with held readings
        self._dirty: set[str] = set()  # machines whose held readings changed since the last checkpoint
        self._seq = 0
        self._next = _NEVER  # no held reading is due before this (monotonic ns)
        self._lags: dict[str, int] = {}

    # -- config and connections -------------------------------------------------------------

    def configure(self, windows: Mapping[str, Window]) -> None:
        """At start and on reload. A source that is gone keeps what it holds until it is due."""
        self.windows = dict(windows)
        self._lags = {s: w.window for s, w in self.windows.items() if w.window}
        self._next = 0  # windows may have shrunk: look again at the next tick

    def connected(self, source: str, now: int, *, resumed: bool) -> None:
        """A source (re)connected; ``resumed``: it kept a session that may deliver again, late,
        what it sent before (its catch-up window opens)."""
        catch_up = self.windows.get(source, Window()).catch_up
        # Also after a clean stop: messages in flight then (read by no one, or read and not handed
        # over) were not acknowledged, and such a broker sends them again late.
        if resumed and catch_up:
            self.catch_up_until[source] = now + catch_up
            self._next = 0

    def catching_up(self, now: int) -> set[str]:
        """The sources in their catch-up window: their machines' time waits (a reading may still
        come, older than any held)."""
        if not self.catch_up_until:
            return set()
        return {s for s, until in self.catch_up_until.items() if until > now}

    def holding(self) -> set[str]:
        """Machines with held readings: their time waits for them (no staleness, no roll-up past them)."""
        if not self._holding:
            return set()
        return set().union(*self._holding.values())

    def lags(self) -> dict[str, int]:
        """Per source with a window: how far behind the clock its machines' time runs, so that a
        reading up to the window late finds it not yet rolled up (empty: no source has one)."""
        return self._lags

    def held(self) -> int:
        return sum(len(m.held) for m in self.machines.values())

    # -- the flow ----------------------------------------------------------------------------

    def take(self, source: str, events: list[Event], now: int, *, redelivered: int = 0) -> list[Event]:
        """A batch of ``source``: what goes to the trackers now, in order."""
        if redelivered:
            self.redeliveries[source] = self.redeliveries.get(source, 0) + redelivered
        until = self.catch_up_until.get(source)
        catching_up = until is not None and until > now
        if catching_up and redelivered:
            assert until is not None
            self.catch_up_until[source] = max(until, now + DUP_GRACE_NS)
        window = self.windows.get(source, Window()).window
        if not window and not catching_up and not self._holding.get(source):
            return events  # nothing to sort: in order as it came
        out: list[Event] = []
        for event in events:
            if isinstance(event, Reading | Sample):
                self._hold(source, event, now, catching_up, window, out)
            elif isinstance(event, Connectivity):
                for mid in event.machines or list(self._holding.get(event.source, ())):
                    self._release(mid, _NEVER, out)
                out.append(event)
            else:
                out.append(event)
        if now >= self._next:
            out += self.due(now)
        return out

    def due(self, now: int) -> list[Event]:
        """Held readings whose time came, over every source (each tick)."""
        if now < self._next:
            return []
        out: list[Event] = []
        self._next = _NEVER
        for machines in list(self._holding.values()):
            for mid in list(machines):
                self._release_due(mid, now, out)
        return out

    def flush(self, source: str | None = None) -> list[Event]:
        """Release everything held (of ``source``): a clean stop, a source given up as offline."""
        out: list[Event] = []
        for sid, machines in list(self._holding.items()):
            if source is None or sid == source:
                for mid in list(machines):
                    self._release(mid, _NEVER, out)
        return out

    def forget(self, machine: str) -> None:
        """A machine removed from the config: what it holds is dropped."""
        m = self.machines.get(machine)
        if m is not None:
            m.drop(list(m.held))
            m.held.clear()
            self._holding.get(m.source, set()).discard(machine)
            self._dirty.add(machine)

    # -- across restarts -----------------------------------------------------------------------

    def checkpoint(self) -> dict[str, dict[str, Any]]:
        """The held readings of every machine changed since the last call, of sources that
        redeliver: committed with the batch's effect, before its acknowledgement."""
        if not self._dirty:
            return {}
        dirty, self._dirty = self._dirty, set()
        out: dict[str, dict[str, Any]] = {}
        for mid in dirty:
            m = self.machines[mid]
            if not self.windows.get(m.source, Window()).persist:
                m.dirty.clear()
                continue
            for n in m.dirty:
                held = m.chunks.get(n, {}).values()
                out[f"{KEY}{mid}\x00{n}"] = {"source": m.source, "released": m.released,
                                            "held": [item for item in held if item is not None]}
            m.dirty.clear()
        return out

    def restore(self, saved: dict[str, tuple[dict[str, Any], int]], now: int) -> None:
        """Take this module's entries out of the checkpoint ``saved`` (the rest are the trackers'):
        their readings are held again, as if they arrived now while catching up."""
        for key in sorted(k for k in saved if k.startswith(KEY)):
            snap, _ = saved.pop(key)
            source = snap.get("source")
            if not snap.get("held") or source is None:
                continue
            mid = key[len(KEY):].rpartition("\x00")[0]
            m = self.machines.setdefault(mid, _Machine(source))
            released = snap.get("released")
            if released is not None:
                m.released = released if m.released is None else max(m.released, released)
            for item in snap["held"]:
                self._insert(m, mid, _decode(mid, item), now, catching_up=True)
            catch_up = self.windows.get(source, Window()).catch_up
            self.catch_up_until[source] = max(self.catch_up_until.get(source, 0), now + catch_up)

    # -- inside ----------------------------------------------------------------------------------

    def _hold(self, source: str, event: Reading | Sample, now: int, catching_up: bool, window: int,
              out: list[Event]) -> None:
        mid = event.machine
        m = self.machines.get(mid)
        if m is None:
            if not self.owns(mid):
                out.append(event)
                return
            m = self.machines[mid] = _Machine(source)
        if m.released is not None and event.ts_ns <= m.released:
            out.append(event)  # late: the tracker places it as it would without a buffer
            return
        held = m.held
        i = bisect.bisect_left(held, (event.ts_ns,))
        while i < len(held) and held[i].ts == event.ts_ns:
            if held[i].event == event:
                self.duplicates += 1
                return
            i += 1
        self._insert(m, mid, event, now, catching_up=catching_up)
        deadline = now + window
        if catching_up:
            deadline = max(deadline, self.catch_up_until[source])
        if deadline < self._next:
            self._next = deadline

    def _insert(self, m: _Machine, mid: str, event: Reading | Sample, now: int, *, catching_up: bool) -> None:
        self._seq += 1
        m.add(_Held(event.ts_ns, self._seq, now, catching_up, m.chunk_for_next(), event))
        self._holding.setdefault(m.source, set()).add(mid)
        self._dirty.add(mid)

    def _deadline(self, source: str, h: _Held) -> int:
        deadline = h.arrived + self.windows.get(source, Window()).window
        if h.catching_up:
            deadline = max(deadline, self.catch_up_until.get(source, 0))
        return deadline

    def _release_due(self, mid: str, now: int, out: list[Event]) -> None:
        """Release the machine's readings up to the newest stamp whose wait is over."""
        m = self.machines[mid]
        cut = -1
        for h in m.held:
            deadline = self._deadline(m.source, h)
            if deadline <= now:
                cut = h.ts
            elif deadline < self._next:
                self._next = deadline
        if cut >= 0:
            self._release(mid, cut, out)
            for h in m.held:  # what is left waits: when is the first of it due?
                self._next = min(self._next, self._deadline(m.source, h))

    def _release(self, mid: str, upto: int, out: list[Event]) -> None:
        m = self.machines[mid]
        n = bisect.bisect_right(m.held, (upto, _NEVER))
        if not n:
            return
        released = m.held[:n]
        out.extend(h.event for h in released)
        m.released = released[-1].ts if m.released is None else max(m.released, released[-1].ts)
        del m.held[:n]
        m.drop(released)
        self._dirty.add(mid)
        if not m.held:
            self._holding.get(m.source, set()).discard(mid)
            if not self._holding.get(m.source):
                self._holding.pop(m.source, None)


def _plain(event: Reading | Sample) -> bool:
    """Whether the event's values survive JSON as they are (a reading of another type is not kept
    across a crash; only MQTT sources redeliver, and their values come from JSON or text)."""
    values = event.values.values() if isinstance(event, Sample) else (event.value,)
    return all(_plain_value(v) for v in values)


def _plain_value(v: Any) -> bool:
    if v is None or isinstance(v, str | bool | int | float):
        return not isinstance(v, int) or -(2**63) <= v < 2**64  # orjson's integer range
    if isinstance(v, list):
        return all(_plain_value(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_value(x) for k, x in v.items())
    return False


def _encode(event: Reading | Sample) -> list[Any]:
    if isinstance(event, Sample):
        return ["s", event.ts_ns, event.values]
    return ["r", event.ts_ns, event.signal, event.value, event.quality.value, event.status]


def _decode(machine: str, item: list[Any]) -> Reading | Sample:
    if item[0] == "s":
        return Sample(machine, dict(item[2]), int(item[1]))
    return Reading(machine, item[2], item[3], int(item[1]), Quality(item[4]), item[5])


def windows(sources: Iterable[SourceConfig]) -> dict[str, Window]:
    """Each source's hold, from its config (``reorder_window``, and the catch-up window of a source
    that redelivers). Arrival-stamped readings have no catch-up window: stamped as they are read,
    a late redelivery is dated by its arrival whatever is held, so holding would only delay."""
    return {s.id: Window(int(s.reorder_window * NS_PER_S),
                         int(s.catch_up_window() * NS_PER_S) if s.stamps_at_source() else 0, s.redelivers())
            for s in sources}
