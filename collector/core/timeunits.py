"""Time units: every timestamp here is integer nanoseconds since the Unix epoch (InfluxDB's own
unit; integers keep the tracker's arithmetic exact)."""

from __future__ import annotations

import datetime as dt
from typing import Final

NS_PER_UNIT: Final = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
"""Nanoseconds per epoch unit, by the names payloads and InfluxDB's `precision` use."""

EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = dt.timedelta(microseconds=1)


def datetime_to_ns(when: dt.datetime) -> int:
    """A datetime as ns since the epoch, exact to the microsecond Python keeps; a naive one is UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - EPOCH) // _US * 1000
