"""After the collector's clock stepped back: the record that puts the stored history in order.

The engine calls ``correction_after`` once per step, right after its trackers moved with it,
and commits the record behind the points they emitted on the old line and ahead of any point on
the new one; each output applies it in that place (collector/core/correction.py, docs/DESIGN.md
"The collector's clock").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection

from collector.core.clock import Step
from collector.core.correction import Correction

log = logging.getLogger("collector.engine")


def correction_after(step: Step, began_ns: int, machines: Collection[str], interval_ns: int) -> Correction | None:
    """The correction of a step back by D: the points of ``machines`` (stamped on arrival)
    labelled on the old line, which began at ``began_ns``, move by -D. The span starts at the
    roll-up interval ``began_ns`` falls in: a tracker's first roll-up is stamped there."""
    if step.delta_ns >= 0 or not machines:
        return None
    record = Correction(tuple(sorted(machines)), began_ns - began_ns % interval_ns, step.at_ns, step.delta_ns,
                        interval_ns)
    log.warning("the points of %d machine(s) stamped on arrival from %s to %s (old clock) were dated %s ahead: "
                "every output rewrites them on the corrected clock", len(machines), _utc(record.from_ns),
                _utc(record.to_ns), step.size())
    return record


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
