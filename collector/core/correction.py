"""A correction of stored history after the collector's clock stepped back (pure, no I/O).

    record = Correction(machines, from_ns, to_ns, delta_ns, interval_ns)
    line = record.to_line()             # travels through the outbox in order with the points
    new = corrected(stored, record)     # what replaces the stored points of the span

After a step back by D (``delta_ns`` = -D), the points of machines stamped on arrival that were
labelled on the old line, ``from_ns`` to ``to_ns``, run D ahead of the corrected clock and
overlap what comes after the step. Each output deletes that span of those machines and writes
``corrected(...)`` instead (collector/influx/correctors.py): the state changes moved by
``delta_ns`` (their ``previous_s`` is real time, unchanged), and the roll-ups derived again on
the intervals of the corrected clock. A roll-up cannot simply move: moved by a D that is not
whole intervals it would straddle two of them. So each stored roll-up is taken apart into its
states' spans (its fields say how long each state lasted, the changes inside it say where) and
the spans are rolled up again: every roll-up still adds up to the time it holds, to the
nanosecond, and is stamped at the first instant it holds (docs/DESIGN.md, "The collector's
clock").

The record is a line-protocol comment (``#correct {json}``): a sink that knows nothing of it
(``--print``) passes a comment, InfluxDB would ignore one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from collector.core.model import NS_PER_S, State

MARKER = "#correct "
STATE_MEASUREMENT = "machine_state"
ROLLUP_MEASUREMENT = "machine_availability"
_BY_CODE = {s.code: s for s in State}
_ORDER = list(State)
_VALUES = {s.value for s in State}


@dataclass(frozen=True, slots=True)
class Correction:
    """Move the points of ``machines`` labelled ``from_ns``..``to_ns`` (inclusive) by ``delta_ns``;
    roll-ups are ``interval_ns`` long, aligned to the clock."""

    machines: tuple[str, ...]
    from_ns: int
    to_ns: int
    delta_ns: int
    interval_ns: int

    def to_line(self) -> str:
        return MARKER + json.dumps({"machines": list(self.machines), "from_ns": self.from_ns, "to_ns": self.to_ns,
                                    "delta_ns": self.delta_ns, "interval_ns": self.interval_ns})

    @classmethod
    def from_line(cls, line: str) -> Correction:
        data = json.loads(line.removeprefix(MARKER))
        return cls(tuple(data["machines"]), int(data["from_ns"]), int(data["to_ns"]), int(data["delta_ns"]),
                   int(data["interval_ns"]))

    def covers(self, point: StoredPoint) -> bool:
        return (point.machine in self.machines and self.from_ns <= point.ts_ns <= self.to_ns
                and point.measurement in (STATE_MEASUREMENT, ROLLUP_MEASUREMENT))


def is_correction(line: str) -> bool:
    return line.startswith(MARKER)


@dataclass(slots=True)
class StoredPoint:
    """A point as an output holds it: fields typed (int, float, str, bool) as stored."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, object]
    ts_ns: int
    key: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = tuple(sorted(self.tags.items()))

    @property
    def machine(self) -> str:
        return self.tags.get("machine", "")


def corrected(points: Iterable[StoredPoint], record: Correction) -> list[StoredPoint]:
    """The points that replace those ``record`` covers (the others in ``points`` are ignored)."""
    mine = [p for p in points if record.covers(p)]
    out: list[StoredPoint] = []
    for machine in sorted({p.machine for p in mine}):
        own = sorted((p for p in mine if p.machine == machine), key=lambda p: p.ts_ns)
        changes = [p for p in own if p.measurement == STATE_MEASUREMENT]
        out += [StoredPoint(p.measurement, dict(p.tags), dict(p.fields), p.ts_ns + record.delta_ns) for p in changes]
        rollups = [p for p in own if p.measurement == ROLLUP_MEASUREMENT]
        out += _rebucket(rollups, changes, record.delta_ns, record.interval_ns)
    return out


def _ns(value: object) -> int:
    """Seconds as stored (float, or an integer a JSON reader gave back) to integer ns: the
    tracker writes ``ns / 1e9``, which this inverts exactly below 2**53 ns (104 days)."""
    return round(float(value) * NS_PER_S) if isinstance(value, int | float) else 0


def _state_of(change: StoredPoint) -> State | None:
    value = change.fields.get("state")
    if isinstance(value, str) and value in _VALUES:
        return State(value)
    code = change.fields.get("state_code")
    if isinstance(code, int | float) and int(code) in _BY_CODE:
        return _BY_CODE[int(code)]
    return None


Span = tuple[int, int, State]  # start, end (ns, old labels), the state held


def spans(rollups: Sequence[StoredPoint], changes: Sequence[StoredPoint]) -> list[Span]:
    """The states' spans the roll-ups hold: each roll-up covers its start plus its fields'
    total; inside it, the changes say where each state began. The state a roll-up begins in is
    the one the previous roll-up ended in when they touch, else the one whose time is left
    once the spans after its first change are counted."""
    moments = sorted((c.ts_ns, s) for c in changes if (s := _state_of(c)) is not None)
    out: list[Span] = []
    for r in rollups:
        held = {s: _ns(r.fields.get(f"{s.value}_s", 0)) for s in State}
        start, end = r.ts_ns, r.ts_ns + sum(held.values())
        inside = [(t, s) for t, s in moments if start <= t < end]
        if out and out[-1][1] == start:
            first = out[-1][2]
        else:
            left = dict(held)
            ends = [t for t, _ in inside[1:]] + [end] if inside else []
            for (t, s), nxt in zip(inside, ends, strict=True):
                left[s] -= nxt - t
            first = max(_ORDER, key=lambda s: left[s])
        at, state = start, first
        for t, s in inside:
            if t > at:
                out.append((at, t, state))
            at, state = t, s
        if end > at:
            out.append((at, end, state))
    return out


def _rebucket(rollups: Sequence[StoredPoint], changes: Sequence[StoredPoint], delta_ns: int,
              interval_ns: int) -> list[StoredPoint]:
    """The roll-ups again, on the intervals of the corrected clock."""
    if not rollups:
        return []
    complete = (all(f"{s.value}_s" in r.fields for r in rollups for s in State)
                and all(_state_of(c) is not None for c in changes))
    if delta_ns % interval_ns == 0 or not complete:
        # Whole intervals: each roll-up moves as it is. Fields an output drops (drop_fields) leave
        # nothing to take a roll-up apart with: it moves as it is too, off the boundaries.
        return [StoredPoint(r.measurement, dict(r.tags), dict(r.fields), r.ts_ns + delta_ns) for r in rollups]
    template = rollups[0]
    buckets: dict[int, tuple[int, dict[State, int], State]] = {}  # interval start -> first instant, held, last state
    for start, end, state in spans(rollups, changes):
        a, b = start + delta_ns, end + delta_ns
        while a < b:
            k = a - a % interval_ns
            cut = min(b, k + interval_ns)
            first, held, _ = buckets.get(k, (a, dict.fromkeys(State, 0), state))
            held[state] += cut - a
            buckets[k] = (min(first, a), held, state)
            a = cut
    names = [name for name in template.fields]
    out = []
    for k in sorted(buckets):
        first, held, last = buckets[k]
        fields: dict[str, object] = {}
        for name in names:
            if name == "state":
                fields[name] = last.value
            elif name.endswith("_s") and name[:-2] in _VALUES:
                fields[name] = held[State(name[:-2])] / NS_PER_S
            else:
                fields[name] = template.fields[name]
        out.append(StoredPoint(template.measurement, dict(template.tags), fields, first))
    return out
