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


def _split(text: str, sep: str, *, quotes: bool = False, limit: int = -1) -> list[str]:
    """``text`` split at each ``sep`` that is neither escaped nor (with ``quotes``) inside a
    double-quoted string."""
    parts: list[str] = []
    start, i, quoted, n = 0, 0, False, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quotes and c == '"':
            quoted = not quoted
        elif c == sep and not quoted and limit != 0:
            parts.append(text[start:i])
            start = i + 1
            limit -= 1
        i += 1
    parts.append(text[start:])
    return parts


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
    parts = _split(line, " ", quotes=True)
    # the head has no quotes, but a quote inside it is escaped: the quoted split is safe
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    head, body, ts = parts
    tags: dict[str, str] = {}
    for pair in _split(head, ",")[1:]:
        kv = _split(pair, "=", limit=1)
        if len(kv) != 2:
            return None
        tags[unescape(kv[0])] = unescape(kv[1])
    fields: list[tuple[str, str]] = []
    for field in _split(body, ",", quotes=True):
        kv = _split(field, "=", limit=1)
        if len(kv) != 2 or not kv[0]:
            return None
        fields.append((unescape(kv[0]), field))
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
