"""Payload decoding for ``json`` and ``value`` topics: JSON paths, plain values, timestamps.

Paths are JMESPath. The common shapes (``exec``, ``spindle.speed``, ``alarms[0]``) are compiled
to plain dict/list lookups, which are several times faster than the JMESPath interpreter and
give the same result; anything else (filters, functions, projections) goes to ``jmespath``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import jmespath

from collector.core.errors import BadInputError
from collector.core.timeunits import NS_PER_UNIT, datetime_to_ns

MISSING: Final = object()
"""What a path yields when the payload does not have it (JMESPath's ``null``)."""

Getter = Callable[[Any], Any]

_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[-?\d+\])*$")
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+)\]")


class PathError(BadInputError):
    """A path that is not valid JMESPath."""


def compile_path(expression: str) -> Getter:
    """A function ``payload -> value`` (or ``MISSING``) for one JMESPath expression."""
    if _SIMPLE.match(expression):
        steps: list[str | int] = [m.group(1) if m.group(1) is not None else int(m.group(2))
                                  for m in _STEP.finditer(expression)]
        if len(steps) == 1:
            key = steps[0]

            def one(obj: Any) -> Any:
                if type(obj) is dict:
                    value = obj.get(key, MISSING)
                    return MISSING if value is None else value
                return MISSING

            return one

        def walk(obj: Any) -> Any:
            for step in steps:
                if type(step) is str:
                    if type(obj) is not dict:
                        return MISSING
                    obj = obj.get(step)
                else:
                    if type(obj) is not list:
                        return MISSING
                    try:
                        obj = obj[step]  # type: ignore[index]
                    except IndexError:
                        return MISSING
                if obj is None:
                    return MISSING
            return obj

        return walk
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise PathError(f"bad path {expression!r}: {exc}") from exc

    def search(obj: Any) -> Any:
        try:
            value = compiled.search(obj)
        except jmespath.exceptions.JMESPathError:  # e.g. length() of a number: the payload's shape is wrong
            return MISSING
        return MISSING if value is None else value

    return search


_TRUE = frozenset({"true", "True", "TRUE", "on", "ON"})
_FALSE = frozenset({"false", "False", "FALSE", "off", "OFF"})


def parse_value(payload: bytes | bytearray) -> bool | int | float | str:
    """A plain payload: ``1`` -> 1, ``2.5`` -> 2.5, ``true`` -> True, ``ACTIVE`` -> "ACTIVE".

    Raises ``UnicodeDecodeError`` for payloads that are not UTF-8 text.
    """
    text = payload.decode().strip()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number != number or number in (float("inf"), float("-inf")) else number


def parse_timestamp(value: Any, fmt: str) -> int:
    """A payload timestamp in integer ns since the epoch; raises ``ValueError`` if unusable.

    ``auto``: numbers are epoch seconds, ms, us or ns told apart by size (plausible dates from
    1973 on), strings are ISO 8601 (a time without a zone is UTC).
    """
    if isinstance(value, bool):
        raise ValueError(f"a boolean is not a timestamp: {value!r}")
    if isinstance(value, int | float):
        if fmt == "iso":
            raise ValueError(f"expected an ISO 8601 string, got {value!r}")
        if fmt in NS_PER_UNIT:
            unit = fmt
        else:
            magnitude = abs(value)
            unit = "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us" if magnitude < 1e17 else "ns"
        if isinstance(value, int):
            return value * NS_PER_UNIT[unit]
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a timestamp: {value!r}")
        whole = int(value)  # whole and fraction apart: 1.7e9 s * 1e9 would lose ns in a double
        return whole * NS_PER_UNIT[unit] + round((value - whole) * NS_PER_UNIT[unit])
    if isinstance(value, str):
        if fmt not in ("auto", "iso"):
            try:
                return parse_timestamp(float(value) if "." in value else int(value), fmt)
            except ValueError:
                raise ValueError(f"expected epoch {fmt}, got {value!r}") from None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
        return datetime_to_ns(parsed)
    raise ValueError(f"not a timestamp: {value!r}")

