"""The hour-of-week profile of each public machine, kept in SQLite (``data_dir/capacity.sqlite``).

Per machine: 168 buckets (Monday 00:00-01:00 local time is bucket 0) of seconds per state,
fed by the tracker's interval roll-ups. Older weeks weigh less: when a roll-up of a newer week
arrives, every bucket of the machine is multiplied by ``decay`` once per week that passed, and a
late roll-up of an older week is added already weighted down. So the profile is an
exponentially weighted sum with no history to keep, and it stays 168 × 5 numbers per machine.

Besides the profile, per machine and clock hour, the idle and known seconds of the last eight
days (for "free hours in the last 24 h / 7 d").

Each roll-up counts once. The engine hands roll-ups over before its outbox commit; a crash in
between has the trackers resume from the commit before and emit those roll-ups again. So the
store keeps, per machine and in the same transaction as the figures, the end of the last
roll-up it added (a tracker rolls up in time order), and skips any roll-up that ends no later.
(A roll-up that only overlaps it, the first after a restart with another interval length, counts.)

A roll-up says how long each state lasted in its interval, not when within it; an interval that
crosses an hour boundary is split across the hours in proportion (with the default 60 s
intervals, aligned to the clock, none does). Pieces are cut at quarter hours, which are hour
boundaries in every time zone in use (offsets are whole quarter hours).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from collector.core.model import NS_PER_S, Interval, State

HOURS_PER_WEEK = 168
QUARTER_NS = 900 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
RECENT_KEEP_NS = 8 * 24 * HOUR_NS
STATES = tuple(State)

Buckets = list[dict[State, float]]  # 168 buckets of seconds per state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profile_week (machine TEXT PRIMARY KEY, week INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profile (
    machine TEXT NOT NULL, how INTEGER NOT NULL, state TEXT NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (machine, how, state));
CREATE TABLE IF NOT EXISTS applied (machine TEXT PRIMARY KEY, until_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recent (
    machine TEXT NOT NULL, hour_ns INTEGER NOT NULL, idle_s REAL NOT NULL, known_s REAL NOT NULL,
    PRIMARY KEY (machine, hour_ns));
"""


def hour_of_week(ts_ns: int, zone: ZoneInfo) -> tuple[int, int]:
    """(week number, hour of week) of an instant in ``zone``; weeks start on Monday 00:00."""
    local = dt.datetime.fromtimestamp(ts_ns / NS_PER_S, zone)
    return (local.toordinal() - local.weekday()) // 7, local.weekday() * 24 + local.hour


def empty_buckets() -> Buckets:
    return [dict.fromkeys(STATES, 0.0) for _ in range(HOURS_PER_WEEK)]


def _pieces(start_ns: int, end_ns: int) -> Iterable[tuple[int, int]]:
    """[start, end) cut at quarter hours."""
    pos = start_ns
    while pos < end_ns:
        nxt = min(end_ns, pos - pos % QUARTER_NS + QUARTER_NS)
        yield pos, nxt
        pos = nxt


class ProfileStore:
    """Profiles of the machines in ``machines`` (the public ones); others are never stored."""

    def __init__(self, path: Path | None, zone: ZoneInfo, decay: float) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.zone = zone
        self.decay = decay
        self.weeks: dict[str, int] = dict(self.db.execute("SELECT machine, week FROM profile_week").fetchall())
        self.applied: dict[str, int] = dict(self.db.execute("SELECT machine, until_ns FROM applied").fetchall())
        self.replayed = 0  # roll-ups skipped because they were added before
        self.buckets: dict[str, Buckets] = {}
        for machine, how, state, seconds in self.db.execute("SELECT machine, how, state, seconds FROM profile"):
            self.buckets.setdefault(machine, empty_buckets())[how][State(state)] = seconds

    def close(self) -> None:
        self.db.close()

    def profile(self, machine: str) -> Buckets:
        return self.buckets.get(machine) or empty_buckets()

    def add(self, intervals: Iterable[Interval]) -> None:
        """Add roll-ups to their machines' profiles, in one transaction; a roll-up of time
        already added (a replay after a crash) is skipped."""
        dirty: dict[str, set[int]] = {}  # the buckets to write: those touched, all after a decay
        recent: dict[tuple[str, int], list[float]] = {}
        for iv in intervals:
            length = iv.end_ns - iv.start_ns
            if length <= 0:
                continue
            mid = iv.machine.id
            applied = self.applied.get(mid)
            if applied is not None and iv.end_ns <= applied:
                self.replayed += 1
                continue
            self.applied[mid] = iv.end_ns
            buckets = self.buckets.get(mid)
            if buckets is None:  # (not setdefault: that would build 168 buckets for every roll-up)
                buckets = self.buckets[mid] = empty_buckets()
            hours = dirty.setdefault(mid, set())
            for a, b in _pieces(iv.start_ns, iv.end_ns):
                share = (b - a) / length
                week, how = hour_of_week(a, self.zone)
                ref = self.weeks.setdefault(mid, week)
                if week > ref:  # a new week: everything so far is one (or more) weeks older
                    factor = self.decay ** (week - ref)
                    for bucket in buckets:
                        for s in bucket:
                            bucket[s] *= factor
                    self.weeks[mid] = ref = week
                    hours.update(range(HOURS_PER_WEEK))
                weight = share * self.decay ** (ref - week) / NS_PER_S
                bucket = buckets[how]
                hours.add(how)
                for s, ns in iv.seconds_ns.items():
                    bucket[s] += ns * weight
                idle = iv.seconds_ns.get(State.IDLE, 0) * share / NS_PER_S
                known = (length - iv.seconds_ns.get(State.OFFLINE, 0)) * share / NS_PER_S
                acc = recent.setdefault((mid, a - a % HOUR_NS), [0.0, 0.0])
                acc[0] += idle
                acc[1] += known
        if not dirty:
            return
        newest = max(hour for _, hour in recent) if recent else 0
        with self.db:
            self.db.execute("BEGIN")
            for mid, hours in dirty.items():
                self.db.execute("INSERT OR REPLACE INTO profile_week VALUES (?, ?)", (mid, self.weeks[mid]))
                self.db.execute("INSERT OR REPLACE INTO applied VALUES (?, ?)", (mid, self.applied[mid]))
                self.db.executemany(
                    "INSERT OR REPLACE INTO profile VALUES (?, ?, ?, ?)",
                    [(mid, how, s.value, v) for how in sorted(hours) for s, v in self.buckets[mid][how].items()])
            self.db.executemany(
                "INSERT INTO recent VALUES (?, ?, ?, ?) ON CONFLICT (machine, hour_ns) DO UPDATE SET "
                "idle_s = idle_s + excluded.idle_s, known_s = known_s + excluded.known_s",
                [(mid, hour, idle, known) for (mid, hour), (idle, known) in recent.items()])
            self.db.execute("DELETE FROM recent WHERE hour_ns < ?", (newest - RECENT_KEEP_NS,))

    def idle_hours_since(self, machine: str, since_ns: int) -> float:
        """Idle hours rolled up in the clock hours that start at or after ``since_ns`` (so "the
        last 24 h" are the current hour and the 23 before it, as far as rolled up)."""
        first_hour = since_ns + (-since_ns) % HOUR_NS
        row = self.db.execute("SELECT COALESCE(SUM(idle_s), 0) FROM recent WHERE machine = ? AND hour_ns >= ?",
                              (machine, first_hour)).fetchone()
        return float(row[0]) / 3600
