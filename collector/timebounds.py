"""Time bounds: what a source timestamp far from the collector's clock means.

A reading's timestamp comes from the source (a JSON field, a Sparkplug metric, an OPC UA
SourceTimestamp). A gateway whose clock is wrong, or a hostile publisher, can put any number
there: the year 2100, ``1e23`` (year 5138 as ns), 1970. The tracker places readings on its
time line, so such a stamp must not reach it as it is.

- **Ahead of the collector's clock by more than ``max_future``** (``tracker.max_future``,
  default 5 min): bad input ``future_timestamp``, and the reading is **taken at arrival time**
  (the collector's clock when it is processed). Why not drop it: the value is current (it just
  arrived); only its stamp is wrong, and a gateway whose clock runs ahead stamps *every*
  message that way. Dropping would freeze its machines in their last state without a trace on
  the board; taking them at arrival keeps them tracked, to the precision of arrival, while the
  counter (and the log line, once per minute) tells the operator to fix that clock.
- **Behind the machine's current state by more than ``max_future``**: bad input
  ``clock_stepped_back``, **taken at arrival time**. A source clock stepped back (an edge
  gateway corrected by NTP, a PLC set by hand) stamps every reading before the state the
  tracker is in, so each would be ignored as out of order and the machine would go stale
  while it publishes. A reading a little out of order (redelivery, a replayed store) is within
  the bound and keeps its own time (the tracker decides); one further back is the clock.
- **Older than ``max_past``** (``tracker.max_past``, default 7 days): bad input ``too_old``,
  **dropped**. The tracker could not place it anyway (its time line has moved on, and what is
  rolled up is final), and no MQTT session backlog is kept that long (``session_expiry``
  defaults to one day).

Pure: no clock of its own; the engine passes ``now_ns``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from collector.core.model import NS_PER_S, Connectivity, Reading, Sample

FUTURE = "future_timestamp"
STEPPED_BACK = "clock_stepped_back"
TOO_OLD = "too_old"

Timed = Reading | Sample | Connectivity


@dataclasses.dataclass(frozen=True, slots=True)
class TimeBounds:
    max_future_ns: int
    max_past_ns: int | None

    @classmethod
    def of_seconds(cls, max_future_s: float, max_past_s: float | None) -> TimeBounds:
        return cls(int(max_future_s * NS_PER_S), None if max_past_s is None else int(max_past_s * NS_PER_S))

    def within(self, ts_ns: int, now_ns: int) -> bool:
        """The fast path: is ``ts_ns`` inside the bounds (nothing to do)?"""
        if ts_ns > now_ns + self.max_future_ns:
            return False
        return self.max_past_ns is None or ts_ns >= now_ns - self.max_past_ns

    def check(self, ts_ns: int, now_ns: int) -> tuple[int | None, str | None]:
        """The timestamp to use (``None``: drop the event) and the bad-input kind (``None``: fine)."""
        if ts_ns > now_ns + self.max_future_ns:
            return now_ns, FUTURE
        if self.max_past_ns is not None and ts_ns < now_ns - self.max_past_ns:
            return None, TOO_OLD
        return ts_ns, None

    def bound(self, event: Timed, now_ns: int, report: Callable[[str, str], None]) -> Timed | None:
        """``event`` with its timestamp inside the bounds, or ``None`` when it is dropped;
        ``report(kind, detail)`` counts what was out of bounds."""
        ts, kind = self.check(event.ts_ns, now_ns)
        if kind is None:
            return event
        what = getattr(event, "machine", None) or getattr(event, "source", "")
        report(kind, f"{what}: timestamp {event.ts_ns} ns is {_describe(event.ts_ns - now_ns)} "
                     f"{'ahead of' if kind == FUTURE else 'behind'} the collector's clock"
                     + (", taken at arrival time" if ts is not None else ", dropped"))
        if ts is None:
            return None
        if isinstance(event, Connectivity):
            return dataclasses.replace(event, ts_ns=ts)
        return event._replace(ts_ns=ts)


def stepped_back(event: Reading | Sample, state_began_ns: int, now_ns: int,
                 report: Callable[[str, str], None]) -> Reading | Sample:
    """[robust] A source stamp far before the machine's current state (more than ``max_future``
    before it began): the source's clock stepped back. Reported, and taken at ``now_ns`` (the
    arrival time, no earlier than the state), so the machine stays tracked while its clock is wrong."""
    report(STEPPED_BACK, f"{event.machine}: timestamp {event.ts_ns} ns is "
                         f"{(state_began_ns - event.ts_ns) / NS_PER_S:.0f}s before its current state "
                         "(its clock stepped back?), taken at arrival time")
    return event._replace(ts_ns=now_ns)


def _describe(delta_ns: int) -> str:
    seconds = abs(delta_ns) / NS_PER_S
    if seconds < 3600:
        return f"{seconds:.0f}s"
    if seconds < 86400 * 365:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / (86400 * 365.25):.3g} years"
