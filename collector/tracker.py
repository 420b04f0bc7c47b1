"""The per-machine state tracker: readings in, state changes and interval roll-ups out.

Pure and clock-injected: it never reads a clock itself. The engine feeds it readings (with
source timestamps), connectivity events, and ``tick(now)`` calls.

How it keeps durations exact:
- All times are integer nanoseconds, so the per-state seconds of an interval add up to the
  interval exactly, and the states' totals add up to the time tracked.
- A change can take effect in the past: debounce commits a new state at the moment it began,
  and staleness makes a machine offline from its last reading on. So time is only *rolled up*
  into intervals up to the point that can no longer change (``_final_until``), and later
  events are never placed before it (they are clamped to it).
- Readings older than the current state's start are counted (``out_of_order``) and ignored.
- Time before the tracker started counts as ``offline``: the first interval is whole too.
- No input costs work in proportion to a time gap. A stretch longer than ``max_gap_ns`` to roll
  up at once (a restart after a long stop, the wall clock jumping years ahead on a gateway that
  booted without a real-time clock) is *bridged*: the machine goes ``offline`` where the gap
  starts (reason ``no data for ...``: nothing is known of that time), its current interval is
  closed, and roll-ups are written only for the gap's last ``max_gap_ns`` (at most that many
  intervals); the rest of the gap is counted as offline in one step and has no
  ``machine_availability`` points. See ``_bridge``.
- A step of the collector's clock is not time: ``shift`` moves the whole time line with it
  (docs/DESIGN.md, "The collector's clock").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.core.model import NS_PER_S, Interval, MachineInfo, Output, Quality, Reading, Sample, State, StateChange
from collector.rules import RuleSet


@dataclass(slots=True)
class _Pending:
    state: State
    reason: str
    since_ns: int


@dataclass(frozen=True, slots=True)
class TrackerStatus:
    """What the board and the HTTP API show of one machine."""

    machine: MachineInfo
    state: State
    since_ns: int
    reason: str
    totals_ns: dict[State, int] = field(default_factory=dict)
    last_reading_ns: int | None = None
    values: dict[str, Any] = field(default_factory=dict)


DEFAULT_MAX_GAP_NS = 86_400 * NS_PER_S


class Tracker:
    def __init__(self, info: MachineInfo, rules: RuleSet, *, start_ns: int, interval_ns: int,
                 debounce_ns: int = 0, stale_after_ns: int | None = None,
                 max_gap_ns: int = DEFAULT_MAX_GAP_NS) -> None:
        if interval_ns <= 0:
            raise ValueError("interval_ns must be positive")
        # Whole intervals, at least one: a gap is bridged only when it spans more than this.
        self.max_gap_intervals = max(1, max_gap_ns // interval_ns)
        self._bridge_from_ns = (self.max_gap_intervals + 2) * interval_ns  # a roll this long is bridged
        self.gaps_bridged = 0
        self.info = info
        self.rules = rules
        self.debounce_ns = debounce_ns
        self.stale_after_ns = stale_after_ns
        self.interval_ns = interval_ns
        self._state_signals = frozenset(rules.signals)

        self.state = State.OFFLINE
        self.since_ns = start_ns
        self._since_raw_ns = start_ns  # the time that started the state, before any clamping
        self.reason = "starting: no data yet"
        self.values: dict[str, Any] = {}
        self.bad: dict[str, str] = {}
        self.disconnected: str | None = None
        self.last_reading_ns: int | None = None
        self.pending: _Pending | None = None
        self.out_of_order = 0
        self.clamped = 0
        self.replayed = 0
        # After a resume: readings up to the last one the checkpoint had seen were processed
        # before (a broker delivers what was not acknowledged again); they are skipped.
        self._replay_until: int | None = None
        self._last_change_ns: int | None = None  # two changes never share a timestamp

        self.win_start_ns = start_ns - start_ns % interval_ns
        self.acc_pos_ns = self.win_start_ns  # time rolled up so far; nothing is placed before it
        self.acc: dict[State, int] = dict.fromkeys(State, 0)
        self.totals: dict[State, int] = dict.fromkeys(State, 0)
        self._roll_to(start_ns, [])  # the part of the first interval before we started: offline

    # -- inputs ---------------------------------------------------------------------------

    def reading(self, r: Reading) -> list[Output]:
        if r.quality is Quality.BAD:
            return self._observe(r.ts_ns, bad=(r.signal, r.status or "bad quality"))
        return self._observe(r.ts_ns, good={r.signal: r.value})

    def sample(self, s: Sample) -> list[Output]:
        """Several good values at one time (one message): as many readings, one rule evaluation."""
        return self._observe(s.ts_ns, good=s.values)

    def _observe(self, ts_ns: int, *, good: dict[str, Any] | None = None,
                 bad: tuple[str, str] | None = None) -> list[Output]:
        """Good values, or one signal's bad quality (signal, status), observed at ``ts_ns``."""
        if self._replay_until is not None:
            if ts_ns <= self._replay_until:
                self.replayed += 1
                return []
            self._replay_until = None
        if ts_ns < self._since_raw_ns:
            self.out_of_order += 1
            return []
        out: list[Output] = []
        # Not before what is rolled up or the current state's start: a reading as old as the one
        # that started the state (clamped forward by a tick) is simultaneous with it, not late.
        ts = max(ts_ns, self.acc_pos_ns, self.since_ns)
        if ts_ns < self.acc_pos_ns:
            self.clamped += 1  # late at its source: that time was already rolled up
        self._advance(ts, out)
        # Rules are pure functions of the values: an unchanged value (periodic publishers send
        # mostly those) cannot change the state, so the rules are not evaluated again for it.
        changed = self.last_reading_ns is None
        if bad is not None:
            signal, status = bad
            changed = changed or self.bad.get(signal) != status
            self.bad[signal] = status
        if good is not None:
            values, bad_now = self.values, self.bad
            for signal, value in good.items():
                if bad_now and bad_now.pop(signal, None) is not None:
                    changed = True
                if not changed and (signal not in values or values[signal] != value):
                    changed = True
                values[signal] = value
        self.disconnected = None  # data flows again
        self.last_reading_ns = ts if self.last_reading_ns is None else max(self.last_reading_ns, ts)
        if changed or self.state is State.OFFLINE:  # offline (stale, lost, bad): always look again
            self._decide(ts, out, raw=ts_ns)
        self._roll_to(self._final_until(ts), out)
        return out

    def connectivity(self, online: bool, ts_ns: int, reason: str) -> list[Output]:
        """The source went away (offline at once, no debounce) or came back (the state then
        follows the next readings)."""
        out: list[Output] = []
        if online:
            self.disconnected = None
            return out
        ts = max(ts_ns, self.acc_pos_ns, self.since_ns)
        self._advance(ts, out)
        self.disconnected = reason or "source offline"
        self.pending = None
        if self.state is not State.OFFLINE:
            self._commit(State.OFFLINE, self.disconnected, ts, out)
        self._roll_to(self._final_until(ts), out)
        return out

    def tick(self, now_ns: int, *, hold: bool = False) -> list[Output]:
        """Let time pass: debounce and staleness take effect, finished intervals are emitted.

        ``hold``: a backlog of this machine's readings may still be arriving (a kept MQTT
        session after a restart), so time moves only as far as its last reading, not to now.
        """
        out: list[Output] = []
        if hold:
            now_ns = min(now_ns, self.acc_pos_ns if self.last_reading_ns is None else self.last_reading_ns)
        if now_ns < self.due_ns():
            # Nothing due before the interval ends: time is rolled up later in one step, with
            # the same result (the engine's ticker skips trackers until the first is due).
            return out
        if now_ns <= self.acc_pos_ns:
            return out
        self._advance(now_ns, out)
        self._roll_to(self._final_until(now_ns), out)
        return out

    def due_ns(self) -> int:
        """The earliest time a ``tick`` has anything to do (the engine's ticker skips the walk
        over every tracker until the first of them is due): the end of the open interval or the
        staleness deadline; with a change waiting out its debounce, any later time."""
        if self.pending is not None:
            return self.acc_pos_ns + 1
        due = self._win_end()
        stale = self._stale_due()
        return due if stale is None or stale > due else stale

    def stop(self, now_ns: int, reason: str = "collector stopped") -> list[Output]:
        """The collector shuts down: the machine is offline from now (the unfinished interval
        is not written; the next run writes that interval whole)."""
        out: list[Output] = []
        ts = max(now_ns, self.acc_pos_ns, self.since_ns)
        self._advance(ts, out)
        self.pending = None
        if self.state is not State.OFFLINE:
            self._commit(State.OFFLINE, reason, ts, out)
        return out

    def state_began_ns(self) -> int:
        """When the current state began, as stamped: a reading older than this is out of order."""
        return self._since_raw_ns

    def shift(self, delta_ns: int) -> list[Output]:
        """The collector's clock stepped by ``delta_ns`` (collector/core/clock.py): from now on the
        wall clock labels this tracker's time line differently, but no time passed. Everything
        held on that line moves with it, so the step is not elapsed time for staleness, debounce
        or roll-ups, and the next readings (stamped on the new line) follow the last ones in
        order. What was written keeps its labels.

        Roll-ups stay aligned to the wall clock: unless the step is whole intervals, the open
        interval is closed where the time rolled up ends (a short one: its fields add up to the
        time it holds) and the next starts there on the new line, ending on the next boundary."""
        out: list[Output] = []
        if delta_ns % self.interval_ns:
            if self.acc_pos_ns > self.win_start_ns:
                out.append(Interval(self.info, self.win_start_ns, self.acc_pos_ns, self.acc, self.state))
                self.acc = dict.fromkeys(State, 0)
            self.win_start_ns = self.acc_pos_ns
        self.win_start_ns += delta_ns
        self.acc_pos_ns += delta_ns
        self.since_ns += delta_ns
        self._since_raw_ns += delta_ns
        if self.last_reading_ns is not None:
            self.last_reading_ns += delta_ns
        if self.pending is not None:
            self.pending.since_ns += delta_ns
        if self._last_change_ns is not None:
            self._last_change_ns += delta_ns
        if self._replay_until is not None:
            self._replay_until += delta_ns
        return out

    # -- across restarts ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a restart needs to carry on exactly (JSON-able): committed with the points
        it produced (the outbox is the checkpoint), and taken at a clean stop."""
        pending = self.pending
        return {
            "state": self.state.value, "since_ns": self.since_ns, "since_raw_ns": self._since_raw_ns,
            "reason": self.reason,
            "values": {k: v for k, v in self.values.items() if isinstance(v, str | int | float | bool | None)},
            "bad": dict(self.bad), "disconnected": self.disconnected,
            "pending": None if pending is None else [pending.state.value, pending.reason, pending.since_ns],
            "last_reading_ns": self.last_reading_ns, "last_change_ns": self._last_change_ns,
            "interval_ns": self.interval_ns, "win_start_ns": self.win_start_ns, "acc_pos_ns": self.acc_pos_ns,
            "acc": {s.value: ns for s, ns in self.acc.items()},
        }

    def resume(self, snap: dict[str, Any]) -> bool:
        """Carry on from a checkpoint or the snapshot of a clean stop: the unfinished interval
        continues (nothing of it is lost or written twice), and readings newer than the last one
        seen are accepted, e.g. a persistent MQTT session's backlog (``tick(hold=True)`` keeps
        the wall clock from rolling past it while it arrives). False when the snapshot does not
        fit (another interval length, or from the future): the tracker then starts afresh."""
        if snap["interval_ns"] != self.interval_ns or snap["acc_pos_ns"] > self.since_ns:
            return False
        self.state, self.since_ns, self.reason = State(snap["state"]), snap["since_ns"], snap["reason"]
        self._since_raw_ns = snap.get("since_raw_ns", self.since_ns)
        self.values = dict(snap["values"])
        self.bad = dict(snap.get("bad", {}))
        self.disconnected = snap.get("disconnected")
        pending = snap.get("pending")
        self.pending = None if pending is None else _Pending(State(pending[0]), pending[1], pending[2])
        self.last_reading_ns = self._replay_until = snap["last_reading_ns"]
        self._last_change_ns = snap.get("last_change_ns", self.since_ns)
        self.win_start_ns, self.acc_pos_ns = snap["win_start_ns"], snap["acc_pos_ns"]
        self.acc = {s: int(snap["acc"].get(s.value, 0)) for s in State}
        self.totals = dict.fromkeys(State, 0)
        return True

    def status(self, now_ns: int) -> TrackerStatus:
        totals = dict(self.totals)
        totals[self.state] += max(0, now_ns - self.acc_pos_ns)
        return TrackerStatus(self.info, self.state, self.since_ns, self.reason, totals,
                             self.last_reading_ns, dict(self.values))

    # -- internals ------------------------------------------------------------------------

    def _desired(self) -> tuple[State, str, bool]:
        """The state the current values call for, its reason, and whether it bypasses debounce."""
        if self.disconnected is not None:
            return State.OFFLINE, self.disconnected, True
        bad = sorted(s for s in self.bad if s in self._state_signals)
        if bad:
            return State.OFFLINE, "bad quality: " + ", ".join(f"{s} {self.bad[s]}" for s in bad), True
        state, reason = self.rules.evaluate(self.values)
        return state, reason, False

    def _decide(self, ts: int, out: list[Output], raw: int) -> None:
        state, reason, immediate = self._desired()
        if state is self.state:
            self.pending = None
            return
        if immediate or self.debounce_ns == 0:
            self.pending = None
            self._commit(state, reason, ts, out, raw=raw)
        elif self.pending is None or self.pending.state is not state:
            self.pending = _Pending(state, reason, ts)

    def _advance(self, t: int, out: list[Output]) -> None:
        """Apply the time-driven transitions due at or before ``t``, in time order."""
        while True:
            due_commit = self.pending.since_ns + self.debounce_ns if self.pending else None
            due_stale = self._stale_due()
            if due_commit is not None and due_commit <= t and (due_stale is None or due_commit <= due_stale):
                assert self.pending is not None
                pending, self.pending = self.pending, None
                self._commit(pending.state, pending.reason, pending.since_ns, out)
            elif due_stale is not None and due_stale <= t:
                assert self.last_reading_ns is not None and self.stale_after_ns is not None
                self.pending = None
                if self.state is not State.OFFLINE:
                    self._commit(State.OFFLINE, f"stale: no reading for {self.stale_after_ns / 1e9:g}s",
                                 self.last_reading_ns, out)
            else:
                return

    def _stale_due(self) -> int | None:
        if self.stale_after_ns is None or self.last_reading_ns is None:
            return None
        if self.state is State.OFFLINE and self.pending is None:
            return None
        return self.last_reading_ns + self.stale_after_ns

    def _final_until(self, now: int) -> int:
        """Time up to which nothing can change any more."""
        t = now
        if self.pending is not None:
            t = min(t, self.pending.since_ns)
        if self._stale_due() is not None:
            assert self.last_reading_ns is not None
            t = min(t, self.last_reading_ns)
        return max(t, self.acc_pos_ns)

    def _commit(self, state: State, reason: str, at: int, out: list[Output], raw: int | None = None) -> None:
        self._since_raw_ns = at if raw is None else min(raw, at)
        at = max(at, self.acc_pos_ns, self.since_ns)
        if at == self._last_change_ns:
            # InfluxDB keeps one point per series and timestamp: a change at the same instant
            # as the one before (a state of zero length) lands 1 ns later instead of replacing it.
            at += 1
        self._last_change_ns = at
        self._roll_to(at, out)
        if state is self.state:  # the roll-up bridged a gap and went offline already
            return
        out.append(StateChange(self.info, at, state, self.state, at - self.since_ns, reason))
        self.state, self.since_ns, self.reason = state, at, reason

    def _roll_to(self, until: int, out: list[Output]) -> None:
        if until - self.win_start_ns >= self._bridge_from_ns:
            self._bridge(until, out)
        interval = self.interval_ns
        # The next boundary (as _win_end, inline: this runs for every reading).
        while (end := self.win_start_ns - self.win_start_ns % interval + interval) <= until:
            self._add(end - self.acc_pos_ns)
            self.acc_pos_ns = end
            out.append(Interval(self.info, self.win_start_ns, end, self.acc, self.state))
            self.acc = dict.fromkeys(State, 0)
            self.win_start_ns = end
        if until > self.acc_pos_ns:
            self._add(until - self.acc_pos_ns)
            self.acc_pos_ns = until

    def _bridge(self, until: int, out: list[Output]) -> None:
        """A gap of more than ``max_gap_intervals`` whole intervals to roll up: O(1), not O(gap).

        The machine goes offline at the gap's start (``acc_pos_ns``, the last time anything was
        known), the interval holding that moment is closed, the time up to the last
        ``max_gap_intervals`` intervals before ``until`` is added to the offline total in one
        step (no interval points for it), and the normal roll-up goes on from there.
        """
        gap_ns = until - self.acc_pos_ns
        self.gaps_bridged += 1
        self.pending = None
        if self.state is not State.OFFLINE:
            at = max(self.acc_pos_ns, self.since_ns)
            if at == self._last_change_ns:  # one point per series and timestamp, as in _commit
                at += 1
            self._last_change_ns = at
            self._add(at - self.acc_pos_ns)
            self.acc_pos_ns = at
            reason = f"no data for {gap_ns / NS_PER_S / 86400:.3g} days (a long stop or a clock jump)"
            out.append(StateChange(self.info, at, State.OFFLINE, self.state, at - self.since_ns, reason))
            self.state, self.since_ns, self._since_raw_ns, self.reason = State.OFFLINE, at, at, reason
        end = self._win_end()  # close the interval the gap starts in
        self._add(end - self.acc_pos_ns)
        out.append(Interval(self.info, self.win_start_ns, end, self.acc, self.state))
        resume = until - until % self.interval_ns - self.max_gap_intervals * self.interval_ns
        self._add(resume - end)
        self.acc = dict.fromkeys(State, 0)
        self.win_start_ns = self.acc_pos_ns = resume

    def _win_end(self) -> int:
        """The end of the open interval: the next boundary (a window starts off one only after a
        clock step, see ``shift``)."""
        return self.win_start_ns - self.win_start_ns % self.interval_ns + self.interval_ns

    def _add(self, ns: int) -> None:
        self.acc[self.state] += ns
        self.totals[self.state] += ns
