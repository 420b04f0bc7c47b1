"""The collector's one clock: the monotonic clock, labelled with the wall clock.

    CLOCK.now_ns()          # ns since the epoch: monotonic_ns() + the anchor (wall - monotonic)
    step = CLOCK.check()    # the engine's ticker, 4 times a second: did the wall clock step?

Arrival stamps, tick deadlines, debounce and staleness all read ``now_ns``. Between two
``check`` calls it cannot jump: it moves exactly as the monotonic clock does, so elapsed time
on it is real elapsed time. ``check`` compares the wall clock with the anchor:

- a difference above ``threshold_ns`` is a **step** (NTP's first sync on a gateway without a
  real-time clock, ``date -s``, a VM resumed): the anchor moves to the wall clock at once,
  ``check`` returns the ``Step`` and the engine moves its trackers' time lines with it (a step
  is not elapsed time; docs/DESIGN.md, "The collector's clock");
- a smaller one is slewed, like ``adjtime``: at most 500 ppm of the time since the last check,
  so the labels stay monotonic and never jump by a fraction of the threshold.

The label line changes only inside ``check``, which the engine calls on its event loop: every
stamp taken before it is on the old line, every stamp after it on the new one. A stamp taken
on the old line and handed over after the step (an adapter's buffer) is moved onto the new
line by ``translate``.

``SyncProbe`` says whether the kernel's clock is synchronized (``adjtimex``, as ``timedatectl``
shows it); tests give a simulated one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
DEFAULT_STEP_THRESHOLD_NS = NS_PER_S // 2
"""systemd-timesyncd steps the clock above 0.4 s and chrony's usual ``makestep 1 3`` above 1 s:
0.5 s tells a step from the drift a running clock has, which NTP slews."""
SLEW_PPM = 500  # the most adjtime slews: labels keep running forward while they converge
TRANSLATE_WINDOW_NS = 10 * NS_PER_S  # how long an old-line stamp may wait in an adapter's buffer


@dataclass(frozen=True, slots=True)
class Step:
    """The wall clock moved by ``delta_ns`` (new labels minus old labels of the same instant)
    at ``at_ns`` on the old line (``mono_ns`` on the monotonic clock)."""

    delta_ns: int
    at_ns: int
    mono_ns: int

    def size(self) -> str:
        seconds = abs(self.delta_ns) / NS_PER_S
        return f"{seconds:.3f}s" if seconds < 3600 else f"{seconds / 3600:.2f}h"

    def describe(self) -> str:
        return f"{'forward' if self.delta_ns > 0 else 'back'} by {self.size()}"


class Clock:
    def __init__(self, *, wall: Callable[[], int] = time.time_ns, mono: Callable[[], int] = time.monotonic_ns,
                 threshold_ns: int = DEFAULT_STEP_THRESHOLD_NS) -> None:
        self._wall, self._mono = wall, mono
        self.threshold_ns = threshold_ns
        self._offset = self._measure()
        self._last_check = mono()
        self.steps = 0
        self.last_step: Step | None = None
        # Where the current line began, on it: the start, or the instant of the last step. The
        # stamps since were all labelled with the same anchor (slews aside): a step back by D
        # shows they ran D ahead (collector/core/correction.py).
        self.line_began_ns = self.now_ns()

    def now_ns(self) -> int:
        """Now, as ns since the epoch: monotonic, labelled by the wall clock at the last check."""
        return self._mono() + self._offset

    def mono_ns(self) -> int:
        return self._mono()

    def error_ns(self) -> int:
        """How far the wall clock is from ``now_ns`` right now (what the next check will act on)."""
        return self._measure() - self._offset

    def check(self) -> Step | None:
        """Follow the wall clock: a step re-anchors at once (and is returned), drift is slewed."""
        mono = self._mono()
        measured = self._measure()
        diff = measured - self._offset
        if abs(diff) > self.threshold_ns:
            step = Step(diff, mono + self._offset, mono)
            self._offset = measured
            self._last_check = mono
            self.steps += 1
            self.last_step = step
            self.line_began_ns = mono + measured
            return step
        # At most 500 ppm of the time since the last check, and of a second at most: stamps taken
        # between two checks (milliseconds apart) then never run backward.
        budget = min(max(0, mono - self._last_check), NS_PER_S) * SLEW_PPM // 1_000_000
        self._offset += max(-budget, min(budget, diff))
        self._last_check = mono
        return None

    def translate(self, ts_ns: int) -> int:
        """An arrival stamp (``ts_ns`` read from this clock) on the current line.

        A stamp taken just before the last step and handed over after it is on the old line.
        After a forward step no new stamp is at or before ``at_ns``, so any such stamp is old.
        After a back step the lines overlap: within the window, a stamp past the midpoint of
        the step is old (a buffer holds stamps for milliseconds; the threshold is 0.5 s)."""
        step = self.last_step
        if step is None or ts_ns > step.at_ns:
            return ts_ns
        if step.delta_ns > 0:
            return ts_ns + step.delta_ns
        since = self._mono() - step.mono_ns
        if since < min(TRANSLATE_WINDOW_NS, -step.delta_ns // 2) and ts_ns > step.at_ns + step.delta_ns // 2:
            return ts_ns + step.delta_ns
        return ts_ns

    def _measure(self) -> int:
        """wall - monotonic, the wall reading taken between two monotonic ones."""
        before = self._mono()
        wall = self._wall()
        after = self._mono()
        return wall - (before + after) // 2


CLOCK = Clock()
"""The process's clock: adapters stamp arrivals with it (``collector.core.model.now_ns``) and the
engine checks it; one wall clock per process, so one anchor."""


class SyncProbe(Protocol):
    def synchronized(self) -> bool | None:
        """True when the kernel says its clock is synchronized, False when it says not, None
        when it cannot tell (not Linux)."""


class AdjtimexProbe:
    """The kernel's answer, as ``timedatectl``'s "System clock synchronized" reads it (systemd's
    ``ntp_synced``): ``adjtimex`` (read-only, no privilege needed) reports a maximum error below
    16 s. The kernel grows that error by 500 ppm a second until an NTP daemon (chrony, ntpd,
    systemd-timesyncd) sets it, and caps it at 16 s. (Not ``STA_UNSYNC``: chrony without
    ``rtcsync`` keeps that flag set while synchronized, to keep the kernel off the RTC.)"""

    MAXERROR_UNSYNCED_US = 16_000_000  # the kernel's NTP_PHASE_LIMIT

    class _Timex(ctypes.Structure):
        # struct timex (linux/timex.h): the fields read here, then room for the rest (the kernel
        # writes the whole struct: 208 bytes on 64-bit Linux).
        _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                    ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                    ("_rest", ctypes.c_byte * 256)]

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None

    def synchronized(self) -> bool | None:
        adjtimex = getattr(self._libc, "adjtimex", None)
        if adjtimex is None:
            return None
        timex = self._Timex()  # modes 0: read only
        if adjtimex(ctypes.byref(timex)) < 0:
            return None
        return bool(timex.maxerror < self.MAXERROR_UNSYNCED_US)


class FixedProbe:
    """A probe whose answer a test sets."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer

    def synchronized(self) -> bool | None:
        return self.answer
