"""A simulated machine's week (``shifts: true``): when the plant works, and how much work each
machine gets in each shift. Pure and seeded: the same machine id and seed give the same week,
so ``collector demo``'s generated history and the live simulation follow one pattern.

The plant works Monday to Friday 06-22 (two shifts) and Saturday 06-14, in its local time.
Per machine:
- each shift gets a share of the time the machine waits for work: usually about a fifth, but
  some shifts have few orders (about four fifths idle), and every machine has at least one such
  shift on a weekday afternoon: the capacity a platform could sell;
- outside the shifts the machine is either switched off (silent: offline by staleness), left on
  without work (idle), or runs unmanned on long jobs (busy), one of the three per machine.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from zoneinfo import ZoneInfo

HOURS_PER_WEEK = 168
BUSY_SHARE = 0.2  # idle share of a shift with orders
SLACK_SHARE = 0.8  # idle share of a shift with few orders
IDLE_SHARE = 0.95  # left on without work
LIGHTS_OUT_SHARE = 0.1  # unmanned, on long jobs
SHIFTS = ((6, 14), (14, 22))  # local hours [start, end)
SATURDAY = 5


@dataclass(frozen=True, slots=True)
class Week:
    """``shares[h]``: the share of hour ``h`` of the week (Monday 00:00 local is 0) the machine
    waits for work; None: switched off."""

    shares: tuple[float | None, ...]
    zone: ZoneInfo

    def hour(self, ts_s: float) -> tuple[float | None, float]:
        """(the share of the hour holding ``ts_s``, the end of that hour in epoch seconds)."""
        local = dt.datetime.fromtimestamp(ts_s, self.zone)
        start = local.replace(minute=0, second=0, microsecond=0)
        end = (start.astimezone(dt.UTC) + dt.timedelta(hours=1)).timestamp()
        return self.shares[local.weekday() * 24 + local.hour], end


def make_week(rng: random.Random, zone: ZoneInfo) -> Week:
    closed = rng.choices([None, IDLE_SHARE, LIGHTS_OUT_SHARE], weights=[0.4, 0.35, 0.25])[0]
    shares: list[float | None] = [closed] * HOURS_PER_WEEK
    slack_day = rng.randrange(5)  # one weekday afternoon with few orders, whatever the dice say
    for day in range(6):
        for n, (first, end) in enumerate(SHIFTS):
            if day == SATURDAY and n > 0:
                continue
            slack = (day == slack_day and n == 1) or rng.random() < 0.25
            for h in range(first, end):
                shares[day * 24 + h] = SLACK_SHARE if slack else BUSY_SHARE
    return Week(tuple(shares), zone)
