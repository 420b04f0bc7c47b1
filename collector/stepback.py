"""After the collector's clock stepped back: the record that puts the stored history in order.

    backs = StepBacks()
    record = backs.after(step, began_ns, arrival_trackers)   # on every step, trackers already moved

The engine calls ``after`` on every step, once its trackers moved with it, and commits the
record (only a step back makes one) behind the points they emitted on the old line and ahead of
any point on the new one; each output applies it in that place (collector/core/correction.py,
docs/DESIGN.md "The collector's clock").

The span a record covers starts where the arrival-stamped machines' labels began: the roll-up
interval of the start, or, after a step forward, where the moved trackers' open intervals
begin. A step back does not start a new span: the points it corrects are then on the new line's
labels, and a later step back shows them ahead as well. A step forward does (it is not
corrected: it may be a suspend, where the old labels were right).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from collector.core.clock import Step
from collector.core.correction import Correction
from collector.tracker import Tracker

log = logging.getLogger("collector.engine")


class StepBacks:
    def __init__(self) -> None:
        self.since_ns: int | None = None  # the first label of the span a step back corrects

    def after(self, step: Step, began_ns: int, trackers: Mapping[str, Tracker]) -> Correction | None:
        """The correction of ``step`` (None for a step forward, or with no arrival-stamped
        machine). ``began_ns``: where the clock's line before the step began (the start, if no
        span began since); ``trackers``: the arrival-stamped machines', moved by the step."""
        if not trackers:
            return None
        interval = min(t.interval_ns for t in trackers.values())
        if self.since_ns is None:  # the trackers' first roll-ups are stamped at the start's interval
            self.since_ns = began_ns - began_ns % interval
        if step.delta_ns > 0:
            self.since_ns = min(t.win_start_ns for t in trackers.values())
            return None
        record = Correction(tuple(sorted(trackers)), self.since_ns, step.at_ns, step.delta_ns, interval)
        self.since_ns += step.delta_ns
        log.warning("the points of %d machine(s) stamped on arrival from %s to %s (old clock) were dated %s ahead: "
                    "every output rewrites them on the corrected clock", len(trackers), _utc(record.from_ns),
                    _utc(record.to_ns), step.size())
        return record


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
