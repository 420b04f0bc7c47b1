"""asyncua DataValues -> plain values, ns timestamps and our two qualities (the boundary)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from asyncua import ua

from collector.core.model import Quality
from collector.core.timeunits import datetime_to_ns


def to_ns(when: dt.datetime | None) -> int | None:
    """A UTC datetime as integer ns since the epoch (exact to the µs Python keeps); None for
    missing or OPC UA's "no time" (the 1601 epoch)."""
    if when is None or when.year < 1971:
        return None
    return datetime_to_ns(when)


def plain(value: Any) -> Any:
    """OPC UA types the rules can compare: a NodeId becomes its identifier (OPC 40001 states
    are compared as ints, ``5006``), texts their text, enums their number."""
    if isinstance(value, ua.NodeId):
        return value.Identifier
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    if isinstance(value, enum.Enum):
        return value.value
    return value


def quality(status: ua.StatusCode | None, uncertain_is_bad: bool) -> tuple[Quality, str]:
    """The reading's quality and the status name to carry as its reason ("" when Good)."""
    if status is None or status.is_good():
        return Quality.GOOD, ""
    name: str = status.name
    if status.is_uncertain() and not uncertain_is_bad:
        return Quality.GOOD, name
    return Quality.BAD, name
