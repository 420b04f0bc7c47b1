"""Hold and sort (collector/reorder.py): the buffer alone, and through the engine's trackers, where
any order of arrival within the window gives the history of in-order delivery (no services)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collector.configfile import load_config_text
from collector.core.model import Connectivity, Interval, Output, Reading, Sample, StateChange
from collector.engine import Engine
from collector.reorder import CHUNK, KEY, Reorder, Window

S = 1_000_000_000
MS = 1_000_000


def sample(ts_s: float, busy: bool = True, machine: str = "m1") -> Sample:
    return Sample(machine, {"execution": "ACTIVE" if busy else "READY"}, int(ts_s * S))


def stamps(events: list[Any]) -> list[int]:
    return [e.ts_ns for e in events]


# -- the buffer --------------------------------------------------------------------------------

def test_readings_wait_for_the_window_and_come_out_in_time_order() -> None:
    """Test that a reading is held until its arrival plus the window, then released with every
    held reading of its machine stamped no later, in time order."""
    r = Reorder()
    r.configure({"src": Window(window=10 * S)})
    assert r.take("src", [sample(5)], 0) == []
    assert r.take("src", [sample(3), sample(7)], 2 * S) == []
    assert r.due(9 * S) == []
    assert stamps(r.due(10 * S)) == [3 * S, 5 * S]  # 5 s is due; 3 s is older: it goes with it
    assert r.holding() == {"m1"}
    assert stamps(r.due(12 * S)) == [7 * S]
    assert r.holding() == set() and r.held() == 0


def test_a_reading_older_than_one_released_is_late_and_goes_on_at_once() -> None:
    """Test that past the window a reading is not held: the tracker places it as it would without a
    buffer (and counts it)."""
    r = Reorder()
    r.configure({"src": Window(window=S)})
    r.take("src", [sample(5)], 0)
    assert stamps(r.due(S)) == [5 * S]
    assert stamps(r.take("src", [sample(4)], 2 * S)) == [4 * S]
    assert stamps(r.take("src", [sample(5, busy=False)], 2 * S)) == [5 * S]  # as old as released: late too


def test_a_duplicate_of_a_held_reading_is_dropped_and_counted() -> None:
    """Test that the same machine, stamp and values again (a QoS 1 redelivery) is dropped once, and
    that another value at the same stamp is kept, after the first."""
    r = Reorder()
    r.configure({"src": Window(window=S)})
    r.take("src", [sample(5), sample(5)], 0)
    r.take("src", [sample(5, busy=False), sample(5)], 0)
    assert r.duplicates == 2
    released = r.due(S)
    assert released == [sample(5), sample(5, busy=False)]


def test_an_in_order_source_passes_through_untouched() -> None:
    """Test that without a window nor a catch-up the batch itself goes on (nothing held, no copy)."""
    r = Reorder()
    r.configure({"src": Window()})
    events: list[Any] = [sample(5), sample(3)]
    assert r.take("src", events, 0) is events
    assert r.checkpoint() == {}


def test_the_catch_up_window_holds_until_it_ends_and_a_redelivery_extends_it() -> None:
    """Test that after a resumed session readings wait until the catch-up window's end (however
    early they came), that a redelivered message seen meanwhile keeps it open a little longer, and
    that after it a source without a window passes through again."""
    r = Reorder()
    r.configure({"src": Window(catch_up=30 * S, persist=True)})
    r.connected("src", 0, resumed=True)
    assert r.catching_up(S) == {"src"}
    assert r.take("src", [sample(20)], S) == []
    assert r.take("src", [sample(10)], 28 * S, redelivered=1) == []  # the late one, marked DUP
    assert r.redeliveries == {"src": 1}
    assert r.due(30 * S) == []  # 28 s + 5 s of grace
    assert stamps(r.due(33 * S)) == [10 * S, 20 * S]
    assert r.catching_up(33 * S) == set()
    events: list[Any] = [sample(40)]
    assert r.take("src", events, 34 * S) is events


def test_a_connectivity_event_releases_its_machines_first() -> None:
    """Test that offline comes after the readings held before it, as the source sent them."""
    r = Reorder()
    r.configure({"src": Window(window=10 * S)})
    r.take("src", [sample(5), sample(6, machine="m2")], 0)
    lost = Connectivity("src", False, 7 * S, "gone", ("m1",))
    assert r.take("src", [lost], S) == [sample(5), lost]
    assert r.holding() == {"m2"}


def test_held_readings_survive_a_restart_through_the_checkpoint() -> None:
    """Test that a redelivering source's held readings are in the checkpoint, come back held after a
    restart (until the catch-up window ends), and that their redelivered copies are duplicates."""
    r = Reorder()
    r.configure({"src": Window(catch_up=30 * S, persist=True)})
    r.connected("src", 0, resumed=True)
    r.take("src", [Reading("m1", "exec", "ACTIVE", 4 * S), sample(5)], S)
    saved = {mid: (snap, 0) for mid, snap in r.checkpoint().items()}
    saved["m1"] = ({"tracker": "state"}, 0)
    again = Reorder()
    again.configure({"src": Window(catch_up=30 * S, persist=True)})
    again.restore(saved, 100 * S)
    assert list(saved) == ["m1"]  # the trackers' own entries are left for them
    assert again.take("src", [sample(5)], 101 * S) == [] and again.duplicates == 1
    assert again.due(129 * S) == []
    assert again.due(130 * S) == [Reading("m1", "exec", "ACTIVE", 4 * S), sample(5)]
    assert again.checkpoint()[KEY + "m1\x000"]["held"] == []  # released: the entry is emptied


def test_a_commit_rewrites_only_the_chunks_that_changed() -> None:
    """Test that a long hold is kept in chunks of CHUNK readings, that a new reading dirties only the
    open chunk, and that all of them come back after a restart."""
    r = Reorder()
    r.configure({"src": Window(catch_up=30 * S, persist=True)})
    r.connected("src", 0, resumed=True)
    r.take("src", [sample(1 + i / 1000) for i in range(CHUNK * 2 + 10)], S)
    first = r.checkpoint()
    assert sorted(first) == [f"{KEY}m1\x00{n}" for n in range(3)]
    r.take("src", [sample(0.5)], 2 * S)
    assert list(r.checkpoint()) == [f"{KEY}m1\x002"]
    again = Reorder()
    again.configure({"src": Window(catch_up=30 * S, persist=True)})
    saved = {k: (v, 0) for k, v in first.items()}
    again.restore(saved, 0)
    assert again.held() == CHUNK * 2 + 10 and saved == {}


def test_readings_of_machines_another_shard_tracks_are_not_held() -> None:
    """Test that with `shard:` the readings of machines this collector does not track pass through
    (the engine counts them) instead of filling the buffer and the checkpoint."""
    r = Reorder(owns=lambda machine: machine == "m1")
    r.configure({"src": Window(window=S)})
    assert r.take("src", [sample(5), sample(5, machine="m2")], 0) == [sample(5, machine="m2")]
    assert r.holding() == {"m1"}


def test_a_source_that_does_not_redeliver_keeps_nothing_in_the_checkpoint() -> None:
    """Test that held readings of a source that would not deliver them again are not stored (a crash
    loses them like anything read and not committed; the time is then written offline)."""
    r = Reorder()
    r.configure({"src": Window(window=S)})
    r.take("src", [sample(5)], 0)
    assert r.checkpoint() == {}


# -- through the engine: any order within the window, the in-order history ------------------------

WINDOW_S = 10
CONFIG = """
site: {plant: ex}
data_dir: %s
http: {enabled: false}
influx: {url: 'http://127.0.0.1:1', api: v1, database: x}
tracker: {interval: 1s}
sources:
  - id: line
    type: mqtt
    host: 127.0.0.1
    reorder_window: %ds
    subscriptions:
      - topic: 'ex/{machine}/status'
        payload: json
        signals: {execution: exec, spindle_rpm: spindle, alarm: alarm}
        timestamp: ts
        timestamp_format: us
profiles:
  lathe:
    rules:
      - {state: down, when: "alarm"}
      - {state: busy, when: "execution == 'ACTIVE'"}
      - {state: idle}
machines:
  - {id: m1, source: line, profile: lathe%s}
"""


class Sim:
    """The engine with both its clocks in the test's hand: readings handed over as a source would,
    the ticker run every 250 ms, and every output kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start_ns: int, window_s: int = WINDOW_S,
                 machine: str = "") -> None:
        self.now = start_ns  # the wall clock; the monotonic clock is the same line here
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_config_text(CONFIG % (tmp, window_s, machine), base_dir=Path(tmp))
        self.engine = Engine(loaded, object(), clock=lambda: self.now)  # type: ignore[arg-type]  # never written
        monkeypatch.setattr("collector.engine.time.monotonic_ns", lambda: self.now)
        self.out: list[Output] = []

    def run_until(self, t: int) -> None:
        while self.now + 250 * MS <= t:
            self.now += 250 * MS
            self.out += self.engine._tick()
        self.now = max(self.now, t)

    def deliver(self, events: list[Sample]) -> None:
        self.out += self.engine._process_all(self.engine.fleet.reorder.take("line", list(events), self.now))
        self.engine._next_due = 0  # as a commit does (_enqueue): the trackers may be due earlier now

    def history(self, until_ns: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        changes = [(o.ts_ns, o.state, o.previous, o.previous_ns) for o in self.out if isinstance(o, StateChange)]
        rollups = sorted((o.start_ns, tuple(sorted(o.seconds_ns.items()))) for o in self.out
                         if isinstance(o, Interval) and o.end_ns <= until_ns)
        return changes, rollups


START = 1_700_000_000 * S
values = st.sampled_from([("READY", False), ("ACTIVE", False), ("READY", True)])


def play(monkeypatch: pytest.MonkeyPatch, readings: list[Sample], arrivals: list[int], end: int,
         window_s: int = WINDOW_S) -> Sim:
    sim = Sim(monkeypatch, START, window_s)
    for t, r in sorted(zip(arrivals, readings, strict=True), key=lambda p: p[0]):
        sim.run_until(t)
        sim.deliver([r])
    sim.run_until(end)
    return sim


def stream(draw: Any) -> list[Sample]:
    n = draw(st.integers(2, 25))
    gaps = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))  # ms between stamps
    vals = draw(st.lists(values, min_size=n, max_size=n))
    ts, out = START + S, []
    for gap, (ex, alarm) in zip(gaps, vals, strict=True):
        ts += gap * MS
        out.append(Sample("m1", {"execution": ex, "alarm": alarm}, ts))
    return out


@st.composite
def within_window(draw: Any) -> tuple[list[Sample], list[int]]:
    readings = stream(draw)
    delays = draw(st.lists(st.integers(0, WINDOW_S * 1000 - 300), min_size=len(readings), max_size=len(readings)))
    return readings, [r.ts_ns + d * MS for r, d in zip(readings, delays, strict=True)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(within_window())
def test_any_order_within_the_window_stores_the_in_order_history(monkeypatch: pytest.MonkeyPatch,
                                                                 case: tuple[list[Sample], list[int]]) -> None:
    """Test that readings delayed by anything up to the window, so arriving in any order it allows,
    give exactly the state changes (times, states, previous durations) and the roll-ups of the
    same readings delivered in order, and nothing is counted late."""
    readings, arrivals = case
    end = max(arrivals) + (WINDOW_S + 5) * S
    last = readings[-1].ts_ns
    in_order = play(monkeypatch, readings, [r.ts_ns for r in readings], end).history(last)
    shuffled = play(monkeypatch, readings, arrivals, end)
    assert shuffled.history(last) == in_order
    assert set(shuffled.engine.late_readings().values()) == {0}


@st.composite
def one_past_the_window(draw: Any) -> tuple[list[Sample], int]:
    readings = stream(draw)
    assume(len(readings) >= 3)
    k = draw(st.integers(0, len(readings) - 2))
    state = ["down" if r.values["alarm"] else "busy" if r.values["execution"] == "ACTIVE" else "idle" for r in readings]
    assume(state[k + 1] != (state[k - 1] if k else "offline"))  # the next reading starts a state of its own
    return readings, k


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(one_past_the_window())
def test_a_reading_later_than_the_window_is_dropped_as_docs_say(monkeypatch: pytest.MonkeyPatch,
                                                                case: tuple[list[Sample], int]) -> None:
    """Test the documented behaviour past the window: a reading that arrives after a newer one that
    started a state was released is older than that state, so it is counted `out_of_order` and
    ignored; the history is the in-order one of the other readings."""
    readings, k = case
    arrivals = [r.ts_ns for r in readings]
    arrivals[k] = readings[k + 1].ts_ns + (WINDOW_S + 1) * S  # after its successor was released
    end = max(arrivals) + (WINDOW_S + 5) * S
    last = readings[-1].ts_ns
    others = readings[:k] + readings[k + 1:]
    want = play(monkeypatch, others, [r.ts_ns for r in others], end).history(last)
    late = play(monkeypatch, readings, arrivals, end)
    assert late.history(last)[0] == want[0]
    assert late.engine.late_readings()["out_of_order"] == 1


def test_without_a_window_nothing_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that with the default (no window) a change is out of the engine the moment its reading is
    handed over: in-order sources pay no latency."""
    sim = Sim(monkeypatch, START, window_s=0)
    sim.run_until(START + S)
    sim.deliver([Sample("m1", {"execution": "ACTIVE", "alarm": False}, START + S)])
    assert [o.state for o in sim.out if isinstance(o, StateChange)] == ["busy"]


def test_a_machine_with_held_readings_is_not_judged_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that staleness waits while a source catches up: a machine (`stale_after: 3s`) whose next
    reading is held for the catch-up window (35 s) is not made offline meanwhile, although its
    last released reading is older than that; once released, it goes stale from its last reading."""
    sim = Sim(monkeypatch, START, window_s=0, machine=", stale_after: 3s")
    sim.run_until(START + S)
    sim.deliver([Sample("m1", {"execution": "ACTIVE", "alarm": False}, START + S)])  # no window: at once
    sim.engine.fleet.reorder.connected("line", sim.now, resumed=True)  # a reconnect: the catch-up window opens
    sim.run_until(START + 2 * S)
    sim.deliver([Sample("m1", {"execution": "ACTIVE", "alarm": False}, START + 2 * S)])
    sim.run_until(START + 30 * S)
    assert [(o.state, o.ts_ns - START) for o in sim.out if isinstance(o, StateChange)] == [("busy", S)]
    sim.run_until(START + 60 * S)
    changes = [(o.state, o.ts_ns - START) for o in sim.out if isinstance(o, StateChange)]
    assert changes == [("busy", S), ("offline", 2 * S)]


def test_metrics_show_held_readings_duplicates_and_redeliveries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that /metrics says how many readings are held, how many duplicates were dropped and how
    many messages the broker marked as redelivered, per source."""
    from collector.metrics import metrics_text

    sim = Sim(monkeypatch, START)
    reading = Sample("m1", {"execution": "ACTIVE", "alarm": False}, START)
    sim.engine.fleet.reorder.take("line", [reading, reading], sim.now, redelivered=2)
    text = metrics_text(sim.engine).decode()
    assert "collector_readings_held 1.0" in text
    assert 'collector_late_readings_total{why="duplicate"} 1.0' in text
    assert 'collector_mqtt_redeliveries_total{source="line"} 2.0' in text
