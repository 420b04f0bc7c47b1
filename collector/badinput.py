"""Counting bad input: every malformed message is counted per source and kind, logged at most
once per kind per minute, and dropped without touching anything else."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class BadInput:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._clock = clock

    def report(self, source: str, kind: str, detail: str) -> None:
        """Count one bad input of ``kind`` (e.g. ``malformed_json``) from ``source``; ``detail``
        names the topic or node and what was wrong."""
        key = (source, kind)
        self.counts[key] += 1
        now = self._clock()
        last = self._last_logged.get(key)
        if last is None or now - last >= LOG_EVERY_S:
            self._last_logged[key] = now
            log.warning("bad input from source %s (%s, %d so far): %s",
                        source, kind, self.counts[key], detail)

    def total(self) -> int:
        return sum(self.counts.values())
