"""Tracker: debounce, staleness, connectivity, out-of-order readings and exact roll-ups."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core.model import Interval, MachineInfo, Output, Quality, Reading, Sample, State, StateChange
from collector.rules import RuleSet, compile_rule
from collector.tracker import Tracker

S = 1_000_000_000
T0 = 1_700_000_020 * S  # 40 s into a minute
INFO = MachineInfo(id="m1", plant="p")
RULES = RuleSet([
    compile_rule(State.DOWN, "alarm"),
    compile_rule(State.SETUP, "mode == 'SETUP'"),
    compile_rule(State.BUSY, "spindle > 50"),
    compile_rule(State.IDLE, None),
])


def tracker(debounce: float = 0, stale: float | None = None, interval: float = 60) -> Tracker:
    return Tracker(INFO, RULES, start_ns=T0, interval_ns=int(interval * S), debounce_ns=int(debounce * S),
                   stale_after_ns=None if stale is None else int(stale * S))


def rd(signal: str, value: object, t: float, quality: Quality = Quality.GOOD) -> Reading:
    return Reading("m1", signal, value, T0 + int(t * S), quality, "BadNodeIdUnknown" if quality is Quality.BAD else "")


def changes(out: list[Output]) -> list[tuple[float, State, State, float]]:
    return [((c.ts_ns - T0) / S, c.state, c.previous, c.previous_ns / S) for c in out if isinstance(c, StateChange)]


def intervals(out: list[Output]) -> list[Interval]:
    return [i for i in out if isinstance(i, Interval)]


def test_first_reading_leaves_offline_with_exact_duration() -> None:
    """Test that the first reading ends the start-up offline state with its exact duration."""
    t = tracker()
    out = t.reading(rd("spindle", 100, 2.5))
    assert changes(out) == [(2.5, State.BUSY, State.OFFLINE, 2.5)]
    assert t.reason == "spindle > 50 (spindle=100)"


def test_debounce_commits_at_the_moment_the_state_began() -> None:
    """Test that a debounced state starts when it began, and a blip shorter than debounce is dropped."""
    t = tracker(debounce=5)
    out = t.reading(rd("spindle", 100, 0)) + t.tick(T0 + 5 * S)
    assert changes(out) == [(0, State.BUSY, State.OFFLINE, 0)]
    out = t.reading(rd("spindle", 0, 10)) + t.reading(rd("spindle", 100, 12)) + t.tick(T0 + 30 * S)
    assert changes(out) == []  # 2 s of idle is a blip
    out = t.reading(rd("spindle", 0, 40)) + t.tick(T0 + 44 * S)
    assert changes(out) == []
    out = t.tick(T0 + 45 * S)
    assert changes(out) == [(40, State.IDLE, State.BUSY, 40)]


def test_staleness_goes_offline_from_the_last_reading() -> None:
    """Test that no reading for stale_after makes the machine offline from its last reading."""
    t = tracker(stale=10)
    t.reading(rd("spindle", 100, 1))
    t.reading(rd("spindle", 100, 3))
    assert changes(t.tick(T0 + 12 * S)) == []
    out = t.tick(T0 + 13 * S)
    assert changes(out) == [(3, State.OFFLINE, State.BUSY, 2)]
    assert t.reason == "stale: no reading for 10s"
    out = t.reading(rd("spindle", 100, 20))
    assert changes(out) == [(20, State.BUSY, State.OFFLINE, 17)]


def test_connectivity_loss_is_offline_at_once_and_data_brings_it_back() -> None:
    """Test that a source's offline event bypasses debounce and the next reading ends it."""
    t = tracker(debounce=5)
    t.reading(rd("spindle", 100, 0))
    t.tick(T0 + 6 * S)
    out = t.connectivity(False, T0 + 7 * S, "session lost")
    assert changes(out) == [(7, State.OFFLINE, State.BUSY, 7)]
    assert t.reason == "session lost"
    out = t.connectivity(True, T0 + 8 * S, "") + t.reading(rd("spindle", 100, 9)) + t.tick(T0 + 20 * S)
    assert changes(out) == [(9, State.BUSY, State.OFFLINE, 2)]


def test_bad_quality_on_a_state_signal_is_offline_with_the_status() -> None:
    """Test that a Bad status on a signal the rules use makes the machine offline, with the status as reason."""
    t = tracker()
    t.reading(rd("spindle", 100, 0))
    out = t.reading(rd("spindle", None, 2, Quality.BAD))
    assert changes(out) == [(2, State.OFFLINE, State.BUSY, 2)]
    assert t.reason == "bad quality: spindle BadNodeIdUnknown"
    assert changes(t.reading(rd("unused", None, 3, Quality.BAD))) == []


def test_out_of_order_readings_older_than_the_state_are_counted_and_ignored() -> None:
    """Test that a reading older than the current state's start is counted and changes nothing."""
    t = tracker()
    t.reading(rd("spindle", 100, 10))
    assert t.reading(rd("alarm", True, 5)) == []
    assert t.out_of_order == 1
    assert t.state is State.BUSY


def test_intervals_are_aligned_and_whole() -> None:
    """Test that roll-ups are wall-clock aligned, count pre-start time offline, and sum to the interval."""
    t = tracker()
    out = t.reading(rd("spindle", 100, 5)) + t.reading(rd("spindle", 0, 35)) + t.tick(T0 + 79 * S)
    got = intervals(out)
    assert [((i.start_ns - T0) / S, (i.end_ns - T0) / S) for i in got] == [(-40, 20)]
    assert {s: v / S for s, v in got[0].seconds_ns.items() if v} == {State.OFFLINE: 45, State.BUSY: 15}
    assert got[0].state is State.BUSY


def test_rule_that_cannot_be_evaluated_falls_through() -> None:
    """Test that a condition over an unseen signal does not match instead of failing."""
    t = tracker()
    out = t.reading(rd("mode", "AUTO", 1))
    assert changes(out) == [(1, State.IDLE, State.OFFLINE, 1)]


SIGNAL = st.sampled_from(["spindle", "alarm", "mode"])
VALUE = st.sampled_from([0, 100, True, False, "SETUP", "AUTO", None])


def test_a_sample_changes_state_once_for_all_its_signals() -> None:
    """Test that a message carrying several signals is one step: the state it ends in is committed
    once, with no zero-length state from half of its values (signal by signal, ``mode`` would make
    the machine setup for 0 s before ``alarm`` makes it down)."""
    t = tracker()
    t.sample(Sample("m1", {"spindle": 100, "mode": "AUTO", "alarm": False}, T0 + S))
    out = t.sample(Sample("m1", {"mode": "SETUP", "alarm": True}, T0 + 3 * S))
    assert changes(out) == [(3, State.DOWN, State.BUSY, 2)]
    assert t.values == {"spindle": 100, "mode": "SETUP", "alarm": True}
    split = tracker()
    split.sample(Sample("m1", {"spindle": 100, "mode": "AUTO", "alarm": False}, T0 + S))
    out = split.reading(rd("mode", "SETUP", 3)) + split.reading(rd("alarm", True, 3))
    # two changes never share a timestamp (InfluxDB would keep only the last): the second is 1 ns later
    assert changes(out) == [(3, State.SETUP, State.BUSY, 2), (3 + 1e-9, State.DOWN, State.SETUP, 1e-9)]


def test_a_good_value_in_a_sample_clears_that_signals_bad_quality() -> None:
    """Test that a sample's good value ends the offline a Bad reading of the same signal caused."""
    t = tracker()
    t.reading(rd("spindle", None, 1, Quality.BAD))
    assert t.state is State.OFFLINE
    out = t.sample(Sample("m1", {"spindle": 100}, T0 + 2 * S))
    assert changes(out) == [(2, State.BUSY, State.OFFLINE, 2)] and t.bad == {}


EVENT = st.one_of(
    st.tuples(st.just("reading"), SIGNAL, VALUE, st.booleans()),
    st.tuples(st.just("sample"), st.just(""), st.dictionaries(SIGNAL, VALUE, min_size=1), st.just(False)),
    st.tuples(st.just("offline"), st.just(""), st.just(None), st.just(False)),
    st.tuples(st.just("online"), st.just(""), st.just(None), st.just(False)),
    st.tuples(st.just("tick"), st.just(""), st.just(None), st.just(False)),
)


Step = tuple[int, tuple[str, str, object, bool]]


def drive(t: Tracker, steps: list[Step]) -> tuple[int, list[Output]]:
    """Feed ``steps`` (clock advance, event) to ``t`` from T0: the clock then and the outputs. A
    negative advance is a late event, stamped that much before the clock."""
    now = T0
    out: list[Output] = []
    for dt, (kind, signal, value, bad) in steps:
        now += max(dt, 0)
        ts = now + min(dt, 0)
        if kind == "reading":
            out += t.reading(Reading("m1", signal, value, ts, Quality.BAD if bad else Quality.GOOD))
        elif kind == "sample":
            assert isinstance(value, dict)
            out += t.sample(Sample("m1", value, ts))
        elif kind == "offline":
            out += t.connectivity(False, ts, "lost")
        elif kind == "online":
            out += t.connectivity(True, ts, "")
        else:
            out += t.tick(now)
    return now, out


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(min_value=-3 * S, max_value=40 * S), EVENT), max_size=60),
    debounce=st.sampled_from([0, 1, 5]),
    stale=st.sampled_from([None, 3, 20]),
    interval=st.sampled_from([1, 10, 60]),
)
def test_durations_add_up_exactly(steps: list[Step], debounce: int, stale: int | None, interval: int) -> None:
    """Test that over any event sequence, intervals are contiguous and sum exactly, and state
    changes chain: each previous duration equals the time since the change before."""
    t = tracker(debounce=debounce, stale=stale, interval=interval)
    now, out = drive(t, steps)
    end = now + 100 * S
    out += t.tick(end)
    rolled = intervals(out)
    for a, b in itertools.pairwise(rolled):
        assert a.end_ns == b.start_ns
    for i in rolled:
        assert sum(i.seconds_ns.values()) == i.end_ns - i.start_ns == interval * S
        assert i.start_ns % (interval * S) == 0
    assert rolled and rolled[0].start_ns <= T0
    # the state changes chain exactly, and never go back in time
    since = T0
    prev = State.OFFLINE
    for c in (c for c in out if isinstance(c, StateChange)):
        assert c.previous is prev and c.state is not prev
        assert c.ts_ns >= since and c.previous_ns == c.ts_ns - since
        since, prev = c.ts_ns, c.state
    # totals over everything rolled up equal the roll-ups' sums, state by state
    for state in State:
        assert sum(i.seconds_ns[state] for i in rolled) <= t.totals[state]
    assert sum(t.totals.values()) == t.acc_pos_ns - rolled[0].start_ns


def test_restart_resumes_the_interval_and_accepts_the_backlog() -> None:
    """Test that after a clean stop and a restart, readings from the downtime (a persistent
    session's backlog) are kept, and the interval spanning the restart is written once, whole."""
    first = tracker()
    out = first.reading(rd("spindle", 100, 0)) + first.stop(T0 + 10 * S)
    assert changes(out)[-1] == (10, State.OFFLINE, State.BUSY, 10)
    assert intervals(out) == []  # the unfinished interval is not written at the stop
    snap = first.snapshot()

    second = Tracker(INFO, RULES, start_ns=T0 + 15 * S, interval_ns=60 * S)
    assert second.resume(snap)
    assert second.tick(T0 + 16 * S, hold=True) == []  # holding: the backlog may still come
    out = second.reading(rd("spindle", 0, 12)) + second.reading(rd("spindle", 100, 13)) + second.tick(T0 + 46 * S)
    assert changes(out) == [(12, State.IDLE, State.OFFLINE, 2), (13, State.BUSY, State.IDLE, 1)]
    got = intervals(out)
    assert len(got) == 1 and got[0].start_ns == T0 - 40 * S
    assert {s: v / S for s, v in got[0].seconds_ns.items() if v} == {
        State.OFFLINE: 42, State.BUSY: 17, State.IDLE: 1}


def test_resume_without_readings_rolls_up_offline_after_the_hold() -> None:
    """Test that a resumed machine that never reports closes its intervals as offline once the hold ends."""
    first = tracker()
    first.stop(T0 + 5 * S)
    second = Tracker(INFO, RULES, start_ns=T0 + 100 * S, interval_ns=60 * S)
    assert second.resume(first.snapshot())
    assert intervals(second.tick(T0 + 120 * S, hold=True)) == []
    got = intervals(second.tick(T0 + 131 * S))
    assert [(i.start_ns - T0) // S for i in got] == [-40, 20]
    assert all(i.seconds_ns[State.OFFLINE] == 60 * S for i in got)


def test_readings_as_old_as_a_clamped_state_start_are_not_dropped() -> None:
    """Test that when a tick has moved time past a batch's timestamp, the batch's later signals
    still count (they are simultaneous with the first, not out of order)."""
    t = tracker(interval=1)
    t.tick(T0 + 5 * S)  # time rolled up to 5 s: five 1 s intervals are written and final
    out = t.reading(rd("mode", "AUTO", 4)) + t.reading(rd("spindle", 900, 4))
    assert changes(out) == [(5, State.IDLE, State.OFFLINE, 5), (5 + 1e-9, State.BUSY, State.IDLE, 1e-9)]
    assert t.out_of_order == 0
    assert t.reading(rd("spindle", 0, 3)) == [] and t.out_of_order == 1  # older than that: dropped


def test_a_reading_later_than_the_rolled_up_time_is_clamped_and_counted() -> None:
    """Test that a reading stamped before time already rolled up is placed at that time and counted
    as `clamped` (late at its source), while one that is merely simultaneous is not."""
    t = tracker(interval=1)  # written intervals make the time final
    t.tick(T0 + 10 * S)
    out = t.reading(rd("spindle", 900, 7))
    assert changes(out) == [(10, State.BUSY, State.OFFLINE, 10)]
    assert t.clamped == 1
    t.reading(rd("spindle", 800, 12))
    assert t.clamped == 1


def test_resume_skips_what_the_checkpoint_already_holds() -> None:
    """Test that after a resume, readings no newer than the last one the checkpoint saw (a broker
    delivering unacknowledged messages again) are skipped as replayed, and newer ones count."""
    first = tracker()
    first.reading(rd("spindle", 100, 1))
    first.reading(rd("spindle", 0, 2))
    snap = first.snapshot()
    second = Tracker(INFO, RULES, start_ns=T0 + 5 * S, interval_ns=60 * S)
    assert second.resume(snap)
    assert second.reading(rd("spindle", 100, 1)) == [] and second.reading(rd("spindle", 0, 2)) == []
    assert second.replayed == 2
    assert changes(second.reading(rd("spindle", 100, 3))) == [(3, State.BUSY, State.IDLE, 1)]


def test_a_tick_with_nothing_due_rolls_nothing_and_a_late_reading_keeps_its_time() -> None:
    """Test that inside an unfinished interval, with no debounce or staleness due, a tick leaves time
    open (nothing is written yet), so a reading that arrives after it still counts at its own time;
    the interval is whole and exact when it closes."""
    t = tracker()
    assert t.tick(T0 + 10 * S) == [] and t.acc_pos_ns < T0 + 10 * S
    assert changes(t.reading(rd("spindle", 900, 7))) == [(7, State.BUSY, State.OFFLINE, 7)]
    assert t.clamped == 0
    closed = intervals(t.tick(T0 + 21 * S))  # the minute ends 20 s after T0
    assert len(closed) == 1 and closed[0].seconds_ns[State.BUSY] == 13 * S


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(min_value=-3 * S, max_value=40 * S), EVENT), max_size=40),
    debounce=st.sampled_from([0, 1, 5]),
    stale=st.sampled_from([None, 3, 20]),
    interval=st.sampled_from([1, 10, 60]),
    probe=st.floats(min_value=0, max_value=1),
)
def test_a_tick_before_due_does_nothing(steps: list[Step], debounce: int, stale: int | None, interval: int,
                                        probe: float) -> None:
    """Test that ``due_ns`` is a safe bound for the engine's ticker to skip a tracker: after any
    event sequence, a tick at any time before it emits nothing and changes nothing."""
    t = tracker(debounce=debounce, stale=stale, interval=interval)
    drive(t, steps)
    due = t.due_ns()
    before = t.snapshot()
    at = t.acc_pos_ns + int((due - 1 - t.acc_pos_ns) * probe) if due - 1 > t.acc_pos_ns else due - 1
    assert t.tick(at) == [] and t.snapshot() == before
