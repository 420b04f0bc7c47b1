"""Time bounds and time gaps: a wrong clock costs neither memory nor work in proportion to it."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from collector.core.model import Connectivity, Interval, MachineInfo, Reading, Sample, State, StateChange
from collector.rules import RuleSet, compile_rule
from collector.timebounds import FUTURE, TOO_OLD, TimeBounds
from collector.tracker import Tracker

S = 1_000_000_000
DAY = 86_400 * S
NOW = 1_764_000_000 * S
BOUNDS = TimeBounds.of_seconds(300, 7 * 86_400)
RULES = RuleSet([compile_rule(State.BUSY, "spindle > 50"), compile_rule(State.IDLE, None)])
YEAR_2100_NS = 4_102_444_800_000 * 1_000_000


def test_future_is_taken_at_arrival_and_too_old_dropped() -> None:
    """Test the three cases: in bounds as is, too far ahead at `now`, too old dropped; each counted."""
    reports: list[tuple[str, str]] = []
    report = lambda kind, detail: reports.append((kind, detail))  # noqa: E731
    ok = Reading("m", "s", 1, NOW + 299 * S)
    assert BOUNDS.bound(ok, NOW, report) == ok
    assert BOUNDS.bound(Reading("m", "s", 1, YEAR_2100_NS), NOW, report) == Reading("m", "s", 1, NOW)
    assert BOUNDS.bound(Sample("m", {"s": 1}, 10**23), NOW, report) == Sample("m", {"s": 1}, NOW)
    gone = Connectivity("src", False, 10**29, "DDEATH", ("m",))
    assert BOUNDS.bound(gone, NOW, report) == Connectivity("src", False, NOW, "DDEATH", ("m",))
    assert BOUNDS.bound(Reading("m", "s", 1, NOW - 8 * DAY), NOW, report) is None
    assert BOUNDS.bound(Reading("m", "s", 1, 0), NOW, report) is None
    assert [k for k, _ in reports] == [FUTURE, FUTURE, FUTURE, TOO_OLD, TOO_OLD]
    assert "years ahead of the collector's clock, taken at arrival time" in reports[0][1]


@given(st.integers(min_value=-(2**80), max_value=2**100))
def test_any_timestamp_ends_inside_the_bounds_or_dropped(ts: int) -> None:
    """Test that whatever a source stamps, the tracker only ever sees a time within the bounds."""
    used, kind = BOUNDS.check(ts, NOW)
    if used is None:
        assert kind == TOO_OLD and ts < NOW - 7 * DAY
    else:
        assert NOW - 7 * DAY <= used <= NOW + 300 * S
        assert (kind is None) == (used == ts)


def tracker(max_gap_s: float = 86_400) -> Tracker:
    return Tracker(MachineInfo(id="m1", plant="p"), RULES, start_ns=NOW, interval_ns=60 * S,
                   max_gap_ns=int(max_gap_s * S))


def test_a_gap_of_decades_is_bridged_in_one_step() -> None:
    """Test that a clock jump of 56 years (29 million 60 s intervals) takes milliseconds: the machine
    goes offline where the gap starts, roll-ups are written only for the last `max_gap`, and the
    time still adds up to the ns."""
    t = tracker()
    first = t.reading(Reading("m1", "spindle", 100, NOW + 10 * S))
    assert [c.state for c in first if isinstance(c, StateChange)] == [State.BUSY]
    jump = NOW + 56 * 365 * DAY + 7 * S
    t0 = time.perf_counter()
    out = t.tick(jump)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0  # the unbounded loop took minutes and gigabytes here
    changes = [c for c in out if isinstance(c, StateChange)]
    assert len(changes) == 1 and changes[0].state is State.OFFLINE and changes[0].previous is State.BUSY
    # Where the gap starts: right after the busy change, 1 ns on (two changes never share a timestamp).
    assert changes[0].ts_ns == NOW + 10 * S + 1 and changes[0].reason.startswith("no data for 2.04e+04 days")
    ivs = [i for i in out if isinstance(i, Interval)]
    assert len(ivs) == 1 + 1440  # the interval the gap starts in, then the last day
    assert ivs[0].start_ns == NOW - NOW % (60 * S) and ivs[-1].end_ns == jump - jump % (60 * S)
    for iv in ivs[1:]:
        assert iv.seconds_ns[State.OFFLINE] == 60 * S
    assert t.gaps_bridged == 1
    assert sum(t.totals.values()) == jump - (NOW - NOW % (60 * S))  # nothing lost or counted twice
    assert t.totals[State.BUSY] == 1  # busy from NOW+10s, and nothing is known after that moment
    # Data flows again after the gap: the state follows it.
    back = t.reading(Reading("m1", "spindle", 100, jump + S))
    assert [(c.state, c.previous) for c in back if isinstance(c, StateChange)] == [(State.BUSY, State.OFFLINE)]


def test_a_gap_shorter_than_max_gap_is_rolled_up_whole() -> None:
    """Test that a gap below `max_gap` writes every interval as before (no bridging)."""
    t = tracker(max_gap_s=3600)
    t.reading(Reading("m1", "spindle", 100, NOW + 10 * S))
    out = t.tick(NOW + 3000 * S)
    assert t.gaps_bridged == 0 and not any(isinstance(c, StateChange) for c in out)
    assert len([i for i in out if isinstance(i, Interval)]) == 50


def test_a_reading_stamped_decades_ahead_is_bridged_too() -> None:
    """Test that a reading (not only a tick) far ahead costs O(1): the tracker alone is bounded
    even when no time bound stands before it."""
    t = tracker(max_gap_s=600)
    t0 = time.perf_counter()
    out = t.reading(Reading("m1", "spindle", 100, 10**23))
    assert time.perf_counter() - t0 < 1.0
    assert len([i for i in out if isinstance(i, Interval)]) <= 11
    assert [c.state for c in out if isinstance(c, StateChange)][-1] is State.BUSY
