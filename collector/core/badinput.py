"""Counting bad input: every malformed message is counted per source and kind, logged at most
once per kind per minute, and dropped without touching anything else.

Kinds are names from the code (``malformed_json``, ``future_timestamp``...), but a count per
(source, kind) is state fed by the network all the same: past ``MAX_KEYS`` pairs, further new
pairs are counted under (source, ``other``), so no input can grow this table without bound.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
MAX_KEYS = 1_000
OTHER = "other"


class BadInput:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._clock = clock

    def report(self, source: str, kind: str, detail: str, subject: str = "") -> None:
        """Count one bad input of ``kind`` (e.g. ``malformed_json``) from ``source``; ``detail``
        names the topic or node and what was wrong. ``subject`` (a machine id) marks a report
        that ``collector check`` lists once per subject rather than once per kind."""
        key = (source, kind)
        if key not in self.counts and len(self.counts) >= MAX_KEYS:
            key = (source, OTHER)
        self.counts[key] += 1
        now = self._clock()
        last = self._last_logged.get(key)
        if last is None or now - last >= LOG_EVERY_S:
            self._last_logged[key] = now
            log.warning("bad input from source %s (%s, %d so far): %s",
                        source, kind, self.counts[key], _one_line(detail[:500]))

    def total(self) -> int:
        return sum(self.counts.values())


def _one_line(text: str) -> str:
    """One log line per event, whatever a topic or machine id holds."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
