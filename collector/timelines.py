"""Each machine's time line, and what a step of the collector's clock does to it (docs/DESIGN.md,
"The collector's clock").

- A machine stamped **on arrival** lives on our clock. A step of our clock is relabelling, not
  time: its time line moves with the step (``shift``), and an arrival stamp taken before the
  step but handed over after it is put on the new line (``on_our_line``).
- A machine stamped **by its source** lives on its source's clock, which may be behind ours:
  its time moves from its last stamp as real time passes since that reading arrived
  (``own_now``), so a clock minutes behind neither makes it stale between readings nor rolls
  its time past readings still to come.

The engine owns the trackers and says which machines are stamped on arrival; this module keeps
the last step and when each machine's last reading arrived (monotonic ns).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

from collector.core.clock import TRANSLATE_WINDOW_NS, Clock, Step
from collector.core.model import Connectivity, Output, Reading, Sample
from collector.tracker import Tracker

log = logging.getLogger(__name__)


class TimeLines:
    def __init__(self, wall: Clock | None) -> None:
        # The collector's clock, checked for steps; None (tests, benchmarks): a line without steps.
        self.wall = wall
        self.step: Step | None = None  # the last step, while old-line stamps may still come in
        self.began_ns = 0  # when the current line began, as of the last check
        # When each machine's last reading arrived (monotonic ns): see own_now.
        self.arrived: dict[str, int] = {}

    def check(self) -> Step | None:
        """The step of the collector's clock since the last check, if any."""
        if self.wall is None:
            return None
        if self.step is not None and self.wall.mono_ns() - self.step.mono_ns > 2 * TRANSLATE_WINDOW_NS:
            self.step = None  # no stamp of the old line is left in any adapter
        self.began_ns = self.wall.line_began_ns  # where the line a step leaves began (collector/stepback.py)
        step = self.wall.check()
        if step is not None:
            self.step = step
        return step

    def shift(self, step: Step, trackers: Mapping[str, Tracker],
              on_arrival: Callable[[str], bool]) -> tuple[list[Output], list[str]]:
        """Move the time line of every machine stamped on arrival by the step; the others keep
        their source's. Returns what the trackers emitted and the machines moved."""
        out: list[Output] = []
        moved: list[str] = []
        for mid, tracker in trackers.items():
            if on_arrival(mid):
                out += tracker.shift(step.delta_ns)
                moved.append(mid)
        return out, moved

    @staticmethod
    def said(step: Step, moved: int, corrected: bool) -> None:
        """The step, in the log (``corrected``: a correction record rewrites what was written ahead)."""
        log.warning("the system clock stepped %s: not elapsed time; %d machine(s) stamped on arrival carry on at "
                    "the new time%s", step.describe(), moved,
                    f"; what was written in the last {step.size()} is dated ahead of the corrected clock"
                    if step.delta_ns < 0 and not corrected else "")

    def on_our_line(self, event: Reading | Sample | Connectivity,
                    on_arrival: Callable[[str], bool]) -> Reading | Sample | Connectivity:
        """An event stamped on our clock before its last step, handed over after it, on the new line."""
        assert self.wall is not None
        if isinstance(event, Connectivity):
            ts = self.wall.translate(event.ts_ns)
            return event if ts == event.ts_ns else dataclasses.replace(event, ts_ns=ts)
        if not on_arrival(event.machine):
            return event
        ts = self.wall.translate(event.ts_ns)
        return event if ts == event.ts_ns else event._replace(ts_ns=ts)

    def own_now(self, mid: str, tracker: Tracker, now: int, mono: int, lateness: int) -> int:
        """Now on a source-stamped machine's own time line, no later than ``now``: its last
        stamp plus the real time since that reading arrived (``mono``), less the lateness."""
        last, arrived = tracker.last_reading_ns, self.arrived.get(mid)
        if last is None or arrived is None:
            return now
        return min(now, last + mono - arrived - lateness)


__all__ = ["TimeLines"]
