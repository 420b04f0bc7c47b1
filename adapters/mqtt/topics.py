"""Topic templates: ``factory/{plant}/{line}/{machine}/status`` -> the MQTT filter
``factory/+/+/+/status`` and, per received topic, the values of the named levels."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TopicTemplate:
    """A compiled topic template. ``match`` is on the per-message path: it only compares list
    items (the adapter caches its result per topic anyway)."""

    __slots__ = ("filter", "literals", "multi", "names", "size", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        levels = template.split("/")
        self.multi = levels[-1] == "#"
        if self.multi:
            levels = levels[:-1]
        self.size = len(levels)
        self.names: list[tuple[int, str]] = []
        self.literals: list[tuple[int, str]] = []
        filter_levels = []
        for i, level in enumerate(levels):
            m = _FIELD.match(level)
            if m:
                self.names.append((i, m.group(1)))
                filter_levels.append("+")
            else:
                if level != "+":
                    self.literals.append((i, level))
                filter_levels.append(level)
        if self.multi:
            filter_levels.append("#")
        self.filter = "/".join(filter_levels)

    def match(self, levels: list[str]) -> dict[str, str] | None:
        """The named levels' values if the topic (split on ``/``) matches, else ``None``."""
        n = len(levels)
        if n < self.size if self.multi else n != self.size:
            return None
        for i, literal in self.literals:
            if levels[i] != literal:
                return None
        return {name: levels[i] for i, name in self.names}


def expand(template: str, values: Mapping[str, str]) -> str:
    """``{plant}-{machine}`` with the topic's named levels (unknown names stay empty)."""
    return string.Formatter().vformat(template, (), _Default(values))


class _Default(dict[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)

    def __missing__(self, key: str) -> str:
        return ""
