"""Free windows from an hour-of-week profile. Pure: a profile and a time in, a forecast out.

Method: for each of the next 168 hours (from the start of the current one), the idle share of
that hour of the week = idle / known seconds in its bucket (known = every state but offline;
older weeks already weighted down by the profile). Hours never seen running have no share
(None) and are never free. A free window is a run of consecutive hours whose share is at least
the threshold; its expected free hours are the sum of those shares.

Limits: it says when a machine *usually* was free, not when it will be: no calendar, holidays
or bookings; a pattern that changes shows fully only after a few weeks (decay 0.8 gives the
newest week 20 % of the weight); a machine that was mostly offline in an hour has little known
time there and a share that rests on it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from collector.capacity.profile import HOURS_PER_WEEK, Buckets
from collector.core.model import State

HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    expected_free_hours: float


@dataclass(frozen=True, slots=True)
class Forecast:
    start: dt.datetime  # the start of the current hour, in the profile's time zone
    shares: list[float | None]  # idle share of each of the next 168 hours, from ``start``
    windows: list[Window]

    @property
    def start_hour_of_week(self) -> int:
        return self.start.weekday() * 24 + self.start.hour


def idle_share(bucket: dict[State, float]) -> float | None:
    known = sum(v for s, v in bucket.items() if s is not State.OFFLINE)
    if known <= 0:
        return None
    return min(1.0, max(0.0, bucket.get(State.IDLE, 0.0) / known))


def forecast(buckets: Buckets, now: dt.datetime, threshold: float) -> Forecast:
    """``now`` must be timezone-aware, in the zone the profile's hours are counted in."""
    start = now.replace(minute=0, second=0, microsecond=0)
    hours = [_at(start, i) for i in range(HOURS_PER_WEEK)]
    shares = [idle_share(buckets[h.weekday() * 24 + h.hour]) for h in hours]
    windows: list[Window] = []
    run: list[float] = []
    for i, share in enumerate([*shares, None]):
        if share is not None and share >= threshold:
            run.append(share)
        elif run:
            windows.append(Window(_at(start, i - len(run)), _at(start, i), sum(run)))
            run = []
    return Forecast(start, shares, windows)


def _at(start: dt.datetime, hours: int) -> dt.datetime:
    """``hours`` real hours later (added in UTC: across a DST change a local hour repeats or is skipped)."""
    return (start.astimezone(dt.UTC) + hours * HOUR).astimezone(start.tzinfo)
