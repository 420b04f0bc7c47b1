"""The hour-of-week profile and the free windows forecast from it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.capacity.forecast import forecast
from collector.capacity.profile import HOURS_PER_WEEK, ProfileStore, empty_buckets
from collector.core.model import NS_PER_S, Interval, MachineInfo, State

BERLIN = ZoneInfo("Europe/Berlin")
LATHE = MachineInfo("lathe-01", "plant-1", public=True)


def _ns(t: dt.datetime) -> int:
    return int(t.timestamp()) * NS_PER_S


def pattern(t: dt.datetime) -> State:
    """The known week: idle every night 22-06 and all Sunday, busy otherwise."""
    return State.IDLE if t.weekday() == 6 or t.hour >= 22 or t.hour < 6 else State.BUSY


def history(start: dt.datetime, weeks: int, step_s: int = 600) -> list[Interval]:
    out, t = [], start
    while t < start + dt.timedelta(weeks=weeks):
        nxt = t + dt.timedelta(seconds=step_s)
        state = pattern(t)
        seconds = dict.fromkeys(State, 0)
        seconds[state] = step_s * NS_PER_S
        out.append(Interval(LATHE, _ns(t), _ns(nxt), seconds, state))
        t = nxt
    return out


def test_known_weekly_pattern_gives_exactly_its_windows(tmp_path: Path) -> None:
    """Test that three weeks of "idle 22-06 and Sunday" history forecast exactly those windows,
    each with its length as expected free hours, and survive a reopen of the store."""
    start = dt.datetime(2026, 1, 5, tzinfo=BERLIN)  # a Monday, far from a DST change
    store = ProfileStore(tmp_path / "capacity.sqlite", BERLIN, decay=0.8)
    store.add(history(start, 3))
    store.close()
    store = ProfileStore(tmp_path / "capacity.sqlite", BERLIN, decay=0.8)  # a restart
    now = dt.datetime(2026, 1, 28, 12, 30, tzinfo=BERLIN)  # Wednesday 12:30
    result = forecast(store.profile("lathe-01"), now, threshold=0.5)

    def at(day: int, hour: int) -> dt.datetime:
        """January's ``day`` (32 is 1 February) at ``hour``."""
        return dt.datetime(2026, 1, 1, hour, tzinfo=BERLIN) + dt.timedelta(days=day - 1)

    expected = [(at(28, 22), at(29, 6)), (at(29, 22), at(30, 6)), (at(30, 22), at(31, 6)),
                (at(31, 22), at(33, 6)),  # Saturday night, all Sunday, until Monday 06:00
                (at(33, 22), at(34, 6)), (at(34, 22), at(35, 6))]
    assert [(w.start, w.end) for w in result.windows] == expected
    for w in result.windows:
        assert abs(w.expected_free_hours - (w.end - w.start).total_seconds() / 3600) < 1e-9
    assert result.start == dt.datetime(2026, 1, 28, 12, tzinfo=BERLIN) and result.start_hour_of_week == 2 * 24 + 12
    assert result.shares[0] == 0.0 and result.shares[10] == 1.0  # Wed 12:00 busy, Wed 22:00 idle


def test_newer_weeks_weigh_more(tmp_path: Path) -> None:
    """Test that a pattern that changed last week shows with the decay's weight: two weeks busy
    on Monday 10:00 then one week idle gives an idle share of 1 / (1 + d + d²): 0.57 at d = 0.5,
    a free window, where counting the weeks alike (1/3) would give none."""
    decay = 0.5
    store = ProfileStore(None, BERLIN, decay=decay)
    monday = dt.datetime(2026, 1, 5, 10, tzinfo=BERLIN)
    for week, state in enumerate((State.BUSY, State.BUSY, State.IDLE)):
        t = monday + dt.timedelta(weeks=week)
        seconds = dict.fromkeys(State, 0)
        seconds[state] = 3600 * NS_PER_S
        store.add([Interval(LATHE, _ns(t), _ns(t + dt.timedelta(hours=1)), seconds, state)])
    result = forecast(store.profile("lathe-01"), monday + dt.timedelta(weeks=3), threshold=0.5)
    assert result.shares[0] == 1 / (1 + decay + decay**2)
    assert [(w.start, w.expected_free_hours) for w in result.windows] == [(result.start, result.shares[0])]


def test_offline_time_is_not_known_time() -> None:
    """Test that offline seconds count neither as idle nor as known: an hour half offline and
    half idle is fully free, an hour only offline has no share."""
    store = ProfileStore(None, dt.UTC, decay=1.0)
    t = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    seconds = dict.fromkeys(State, 0)
    seconds[State.OFFLINE], seconds[State.IDLE] = 1800 * NS_PER_S, 1800 * NS_PER_S
    store.add([Interval(LATHE, _ns(t), _ns(t + dt.timedelta(hours=1)), seconds, State.IDLE)])
    result = forecast(store.profile("lathe-01"), t, threshold=0.5)
    assert result.shares[0] == 1.0 and result.shares[1] is None
    assert [(w.start, w.end, w.expected_free_hours) for w in result.windows] == [(t, t + dt.timedelta(hours=1), 1.0)]
    assert store.idle_hours_since("lathe-01", _ns(t)) == 0.5


@settings(max_examples=60, deadline=None)
@given(start_s=st.integers(1_700_000_000, 1_800_000_000), length_s=st.integers(1, 20_000),
       idle_s=st.integers(0, 20_000))
def test_an_interval_is_spread_without_loss(start_s: int, length_s: int, idle_s: int) -> None:
    """Test that an interval of any length and alignment lands in the buckets whole (decay 1):
    the buckets' seconds add up to its length and its idle seconds to its idle time."""
    idle_s = min(idle_s, length_s)
    seconds = dict.fromkeys(State, 0)
    seconds[State.IDLE], seconds[State.BUSY] = idle_s * NS_PER_S, (length_s - idle_s) * NS_PER_S
    store = ProfileStore(None, BERLIN, decay=1.0)
    store.add([Interval(LATHE, start_s * NS_PER_S, (start_s + length_s) * NS_PER_S, seconds, State.IDLE)])
    buckets = store.profile("lathe-01")
    assert len(buckets) == HOURS_PER_WEEK
    assert abs(sum(sum(b.values()) for b in buckets) - length_s) < 1e-6
    assert abs(sum(b[State.IDLE] for b in buckets) - idle_s) < 1e-6


@settings(max_examples=80, deadline=None)
@given(idle=st.lists(st.integers(0, 3600), min_size=HOURS_PER_WEEK, max_size=HOURS_PER_WEEK),
       offline=st.lists(st.integers(0, 3600), min_size=HOURS_PER_WEEK, max_size=HOURS_PER_WEEK),
       threshold=st.floats(0, 1), hour=st.integers(0, HOURS_PER_WEEK - 1))
def test_windows_are_the_maximal_runs_of_hours_at_or_above_the_threshold(
        idle: list[int], offline: list[int], threshold: float, hour: int) -> None:
    """Test, for any profile, that the windows cover exactly the hours whose share is at least the
    threshold, never touch each other, and expect the sum of their hours' shares."""
    buckets = empty_buckets()
    for i, bucket in enumerate(buckets):
        bucket[State.IDLE], bucket[State.OFFLINE] = float(idle[i]), float(offline[i])
        bucket[State.BUSY] = float(3600 - max(idle[i], offline[i]))
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC) + dt.timedelta(hours=hour, minutes=17)
    result = forecast(buckets, now, threshold)
    free = {i for i, s in enumerate(result.shares) if s is not None and s >= threshold}
    covered: set[int] = set()
    for w in result.windows:
        first = int((w.start - result.start).total_seconds()) // 3600
        last = int((w.end - result.start).total_seconds()) // 3600
        hours = set(range(first, last))
        assert hours <= free and not hours & covered and first - 1 not in free and last not in free
        assert abs(w.expected_free_hours - sum(result.shares[i] or 0.0 for i in hours)) < 1e-9
        covered |= hours
    assert covered == free
    for i, share in enumerate(result.shares):  # the shares are those of the hour of the week they stand for
        bucket = buckets[(hour + i) % HOURS_PER_WEEK]
        known = bucket[State.IDLE] + bucket[State.BUSY]
        assert share == (None if known == 0 else bucket[State.IDLE] / known)


def test_kept_forecast_follows_new_rollups() -> None:
    """Test that the service's kept forecast is rebuilt when a roll-up of its machine arrives,
    and that roll-ups of a machine that is not public are not kept at all."""
    from collector.capacity.service import Capacity
    from collector.capacity_settings import CapacitySettings

    capacity = Capacity(CapacitySettings(), None)
    t = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    assert capacity._forecast("lathe-01", _ns(t)).shares[0] is None
    seconds = dict.fromkeys(State, 0)
    seconds[State.IDLE] = 3600 * NS_PER_S
    hidden = MachineInfo("hidden", "plant-1")
    capacity.on_output([Interval(m, _ns(t), _ns(t + dt.timedelta(hours=1)), seconds, State.IDLE)
                        for m in (LATHE, hidden)])
    assert capacity._forecast("lathe-01", _ns(t)).shares[0] == 1.0
    assert set(capacity.store.buckets) == {"lathe-01"}


def test_a_rollup_replayed_after_a_crash_counts_once(tmp_path: Path) -> None:
    """Test that roll-ups handed over again (a crash between the profile's write and the outbox
    commit makes the trackers emit them anew) leave the profile and the recent idle hours as
    they were, across a reopen of the store too, while the next new roll-up still counts."""
    start = dt.datetime(2026, 1, 5, tzinfo=BERLIN)
    rollups = history(start, 1, step_s=60)[:600]  # ten hours of one-minute roll-ups
    store = ProfileStore(tmp_path / "capacity.sqlite", BERLIN, decay=0.8)
    store.add(rollups[:400])
    store.close()
    store = ProfileStore(tmp_path / "capacity.sqlite", BERLIN, decay=0.8)  # the restart
    store.add(rollups[350:])  # the trackers resume from an earlier commit: 50 again, then new ones
    once = ProfileStore(None, BERLIN, decay=0.8)
    once.add(rollups)
    assert store.profile("lathe-01") == once.profile("lathe-01") and store.replayed == 50
    since = _ns(start)
    assert store.idle_hours_since("lathe-01", since) == once.idle_hours_since("lathe-01", since) == 6.0


def test_the_first_rollup_after_an_interval_change_counts(tmp_path: Path) -> None:
    """Test that a roll-up overlapping the last one added without being a replay (a restart with
    a longer `tracker.interval` starts its first interval before the last roll-up's end) counts."""
    start = dt.datetime(2026, 1, 5, 10, tzinfo=BERLIN)
    store = ProfileStore(tmp_path / "capacity.sqlite", BERLIN, decay=1.0)
    store.add(history(start, 1, step_s=60)[:7])  # ten past ten: seven one-minute roll-ups
    seconds = dict.fromkeys(State, 0)
    seconds[State.BUSY] = 900 * NS_PER_S
    store.add([Interval(LATHE, _ns(start), _ns(start + dt.timedelta(minutes=15)), seconds, State.BUSY)])
    assert store.replayed == 0
    assert store.profile("lathe-01")[10][State.BUSY] == 7 * 60 + 900
