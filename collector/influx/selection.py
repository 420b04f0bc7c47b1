"""What an output gets of a stored point: its machine filter and its field policy (pure, no I/O).

The outbox stores each point once, as line protocol; an output applies its selection when it
reads, so this module reads line protocol back: the measurement and tags (``head``), the
fields and the timestamp, honouring the escapes ``collector.core.lineprotocol`` writes
(backslash before comma, equals sign, space, quote and backslash; string fields in double
quotes). A line it cannot split is kept away from a filtered output (never guessed through).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector.influx.config import MachineFilter, OutputSettings


@dataclass(frozen=True, slots=True)
class Point:
    tags: dict[str, str]  # unescaped
    fields: list[tuple[str, str]]  # (unescaped key, the field as written: `key=value`)
    head: str  # measurement and tags as written
    ts: str


def _split(text: str, sep: str, *, limit: int = -1) -> list[str]:
    """``text`` split at each ``sep`` that is not escaped (at most ``limit`` times)."""
    parts: list[str] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == sep and limit != 0:
            parts.append(text[start:i])
            start = i + 1
            limit -= 1
        i += 1
    parts.append(text[start:])
    return parts


def _fields(text: str) -> tuple[list[tuple[str, str]], str] | None:
    """The fields (unescaped key, ``key=value`` as written) and what follows them (the time).
    A double quote opens a string only as a value's first character: a key may hold one."""
    fields: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        start = i
        while i < n and text[i] != "=":  # the key
            i += 2 if text[i] == "\\" else 1
        if i >= n or i == start:
            return None
        key = unescape(text[start:i])
        i += 1
        if i < n and text[i] == '"':  # a string value: up to the closing quote
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return None
            i += 1
        else:
            while i < n and text[i] not in ", ":
                i += 1
        fields.append((key, text[start:i]))
        if i >= n:
            return None  # no time after the fields
        if text[i] == " ":
            return fields, text[i + 1:]
        i += 1  # a comma: the next field


def unescape(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse(line: str) -> Point | None:
    """One line of line protocol, or None when it does not split into head, fields and time."""
    first = _split(line, " ", limit=1)
    if len(first) != 2 or not first[0]:
        return None
    head = first[0]
    read = _fields(first[1])
    if read is None:
        return None
    fields, ts = read
    if not ts or " " in ts:
        return None
    tags: dict[str, str] = {}
    for pair in _split(head, ",")[1:]:
        kv = _split(pair, "=", limit=1)
        if len(kv) != 2:
            return None
        tags[unescape(kv[0])] = unescape(kv[1])
    return Point(tags, fields, head, ts)


def matches(rule: MachineFilter, tags: dict[str, str], is_public: Callable[[str], bool]) -> bool:
    """Whether a point with ``tags`` passes ``rule`` (every condition set must hold)."""
    machine = tags.get("machine")
    if rule.public and (machine is None or not is_public(machine)):
        return False
    if rule.ids and (machine is None or not any(fnmatch.fnmatchcase(machine, pattern) for pattern in rule.ids)):
        return False
    for key, pattern in rule.tags.items():
        value = tags.get(key)
        if value is None or not fnmatch.fnmatchcase(value, pattern):
            return False
    return True


class Selection:
    """An output's filter and field policy over stored lines. ``is_public`` answers from the
    running config, so a reload that makes a machine private stops its points at once, those
    already stored included."""

    def __init__(self, output: OutputSettings, is_public: Callable[[str], bool]) -> None:
        self.rule = output.machines
        self.drop = frozenset(output.drop_fields)
        self.is_public = is_public
        self.everything = self.rule.everything and not self.drop

    def apply(self, lines: Sequence[str]) -> tuple[list[str], int]:
        """The lines this output sends, and how many lines could not be read (left out)."""
        if self.everything:
            return list(lines), 0
        out: list[str] = []
        unreadable = 0
        for line in lines:
            point = parse(line)
            if point is None:
                unreadable += 1
                continue
            if not matches(self.rule, point.tags, self.is_public):
                continue
            if self.drop:
                kept = [raw for key, raw in point.fields if key not in self.drop]
                if not kept:
                    continue
                if len(kept) != len(point.fields):
                    line = f"{point.head} {','.join(kept)} {point.ts}"
            out.append(line)
        return out, unreadable
