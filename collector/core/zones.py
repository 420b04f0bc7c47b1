"""IANA time zone names in config fields: checked when the config is read, so a typo stops the
start with the field's path, not the first forecast or simulated shift."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def _known(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; expected an IANA name like Europe/Berlin") from exc
    return name


TimeZoneName = Annotated[str, AfterValidator(_known)]
"""A time zone by its IANA name, e.g. ``Europe/Berlin``."""

__all__ = ["TimeZoneName"]
