"""The collector's clock (collector/core/clock.py), a tracker's time line moved by a step, and
starting on a synchronized clock (`clock.require_sync`, collector/timekeeping.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
from hypothesis import given
from hypothesis import strategies as st

from collector.configfile import load_config_text
from collector.core.clock import SLEW_PPM, AdjtimexProbe, Clock, FixedProbe
from collector.core.model import Interval, MachineInfo, Output, Reading, State, StateChange
from collector.engine import Engine
from collector.http import serve_status
from collector.rules import RuleSet, compile_rule
from collector.tracker import Tracker
from tests.fixtures._ports import until

S = 1_000_000_000
EPOCH = 1_764_000_000 * S


class FakeTime:
    """A wall clock and a monotonic clock the test moves: ``advance`` both, ``step`` the wall only."""

    def __init__(self) -> None:
        self.mono = 1_000 * S
        self.offset = EPOCH

    def wall(self) -> int:
        return self.mono + self.offset

    def monotonic(self) -> int:
        return self.mono

    def clock(self) -> Clock:
        return Clock(wall=self.wall, mono=self.monotonic)


def test_a_step_is_detected_with_its_size_and_drift_is_slewed() -> None:
    """Test that the clock moves with the monotonic clock only, re-anchors at a step above the threshold
    (counted, with its size and place), and slews a smaller difference at 500 ppm at most."""
    t = FakeTime()
    clock = t.clock()
    start = clock.now_ns()
    t.offset -= 3600 * S  # the wall clock steps back an hour: nothing moves until the check
    t.mono += 2 * S
    assert clock.now_ns() == start + 2 * S
    step = clock.check()
    assert step is not None and step.delta_ns == -3600 * S and step.at_ns == start + 2 * S
    assert step.describe() == "back by 1.00h" and clock.steps == 1
    assert clock.now_ns() == start + 2 * S - 3600 * S
    t.offset += 100_000_000  # 0.1 s: drift, below the threshold
    for _ in range(4):
        before = clock.now_ns()
        t.mono += S
        assert clock.check() is None
        assert clock.now_ns() - before == S + S * SLEW_PPM // 1_000_000  # runs a little fast, never back
    assert clock.steps == 1 and 0 < clock.error_ns() < 100_000_000


@given(st.lists(st.tuples(st.integers(1, 2 * S), st.integers(-400_000_000, 400_000_000)), max_size=60))
def test_labels_never_run_backward_without_a_step(moves: list[tuple[int, int]]) -> None:
    """Test that any drift below the threshold leaves the labels increasing with real time."""
    t = FakeTime()
    clock = t.clock()
    last = clock.now_ns()
    for elapsed, drift in moves:
        t.mono += elapsed
        t.offset = EPOCH + drift
        assert clock.check() is None
        now = clock.now_ns()
        assert now > last
        last = now


def test_stamps_from_before_a_step_are_moved_onto_the_new_line() -> None:
    """Test that an arrival stamp taken before the step and handed over after it is translated, in
    both directions, and a stamp taken after the step is left alone."""
    for delta in (3600 * S, -3600 * S, 2 * S, -2 * S):
        t = FakeTime()
        clock = t.clock()
        before = clock.now_ns()  # stamped, then held in an adapter's buffer
        t.mono += 10_000_000
        t.offset += delta
        assert clock.check() is not None
        t.mono += 5_000_000
        after = clock.now_ns()
        assert clock.translate(before) == before + delta
        assert clock.translate(after) == after


def test_the_kernel_is_asked_without_privileges() -> None:
    """Test that the adjtimex probe answers (True or False on Linux) without changing anything."""
    assert AdjtimexProbe().synchronized() in (True, False)


RULES = RuleSet([compile_rule(State.BUSY, "spindle > 50"), compile_rule(State.IDLE, None)])


@given(st.lists(st.integers(100_000_000, 2 * S), min_size=2, max_size=40), st.integers(1, 39),
       st.integers(-7200 * S, 7200 * S).filter(lambda d: abs(d) > S))
def test_a_shifted_tracker_counts_no_step_as_time(gaps: list[int], at: int, delta: int) -> None:
    """Test that a tracker whose time line moves by a step mid-stream (readings every < 2 s, stale after
    3 s) never goes stale, its changes' durations are the real time between readings, and its
    roll-ups each add up to the time they span, all together to the time tracked without the step."""
    t = Tracker(MachineInfo("m", "p"), RULES, start_ns=EPOCH, interval_ns=60 * S, stale_after_ns=3 * S)
    out: list[Output] = []
    now, shift = EPOCH, 0
    for i, gap in enumerate(gaps):
        if i == min(at, len(gaps) - 1):
            out += t.shift(delta)
            shift = delta
        now += gap
        out += t.tick(now + shift)
        out += t.reading(Reading("m", "spindle", 100 * (i % 2), now + shift))
    out += t.tick(now + shift + 60 * S)  # roll the last interval up (stale now: the readings stopped)
    changes = [o for o in out if isinstance(o, StateChange)]
    offline = [c for c in changes if c.state is State.OFFLINE]
    assert all(c.ts_ns >= (now + shift) for c in offline), offline  # only after the last reading
    assert all(c.previous_ns <= 2 * S for c in changes[1:] if c.state is not State.OFFLINE)
    rollups = [o for o in out if isinstance(o, Interval)]
    assert all(sum(r.seconds_ns.values()) == r.end_ns - r.start_ns for r in rollups)
    # Aligned to the wall clock but for the interval the step closed and the one it opened.
    assert sum(r.end_ns % (60 * S) != 0 for r in rollups) <= 1
    assert sum(r.start_ns % (60 * S) != 0 for r in rollups) <= 1
    # The time tracked is the real time: the old line up to the step, the new one after it.
    tracked = sum(t.totals.values())
    assert tracked == t.acc_pos_ns - delta - EPOCH
    assert sum(sum(r.seconds_ns.values()) for r in rollups) + sum(t.acc.values()) == tracked


# -- clock.require_sync -------------------------------------------------------------------------

CONFIG = """
site: {{plant: p}}
data_dir: {data_dir}
clock: {{require_sync: {require}, sync_timeout: {timeout}}}
http: {{port: 0}}
sources: [{{id: sim, type: simulate, seed: 1, publish_every: 0.1}}]
profiles:
  cnc:
    signals: {{execution: execution}}
    rules: [{{state: busy, when: "execution == 'ACTIVE'"}}, {{state: idle}}]
machines: [{{id: m1, source: sim, profile: cnc}}]
"""


class RecordingSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.lines += lines


async def test_require_sync_waits_not_ready_with_the_reason_then_starts_once_synchronized(tmp_path: Path) -> None:
    """Test that with an unsynchronized clock /readyz answers 503 saying why, nothing is read or
    written, /metrics says it waits; once the kernel reports the clock synchronized the collector
    starts and /readyz answers 200."""
    loaded = load_config_text(CONFIG.format(data_dir=tmp_path, require="true", timeout="1h"), "t.yaml")
    probe = FixedProbe(False)
    sink = RecordingSink()
    engine = Engine(loaded, sink, sync_probe=probe, tick_s=0.05)
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        runner = asyncio.create_task(engine.run(stop))
        await until(lambda: engine.sync.reason is not None, 5, "the wait for a synchronized clock")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "waiting for the system clock to be synchronized" in ready.text
        metrics = (await client.get("/metrics")).text
        assert "collector_clock_waiting_for_sync 1.0" in metrics and "collector_clock_synchronized 0.0" in metrics
        await asyncio.sleep(0.3)  # the wait polls: nothing may be read or written meanwhile
        assert engine.stats.events == 0 and sink.lines == [] and not engine.stats.source_online
        probe.answer = True
        await until(lambda: engine.stats.source_online.get("sim") is True, 5, "the source started")
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.text == "ok\n"
        await until(lambda: engine.stats.state_changes > 0, 10, "a state change")
        stop.set()
        await runner
    assert sink.lines


async def test_past_the_wait_the_collector_starts_anyway_and_says_so(tmp_path: Path) -> None:
    """Test that when the clock never synchronizes the collector starts after `sync_timeout`, and
    /readyz, while ready, warns that the times may be wrong."""
    loaded = load_config_text(CONFIG.format(data_dir=tmp_path, require="true", timeout="0.2s"), "t.yaml")
    engine = Engine(loaded, RecordingSink(), sync_probe=FixedProbe(False), tick_s=0.05)
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        runner = asyncio.create_task(engine.run(stop))
        await until(lambda: engine.stats.source_online.get("sim") is True, 5, "the source started")
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and "started without a synchronized clock" in ready.text
        stop.set()
        await runner


def test_require_sync_by_default_only_under_systemd() -> None:
    """Test that `require_sync: null` is on when systemd starts the collector as its notify service."""
    loaded = load_config_text(CONFIG.format(data_dir="/tmp", require="null", timeout="1s"), "t.yaml")
    assert loaded.config.clock.sync_required({"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert not loaded.config.clock.sync_required({"INVOCATION_ID": "abc"})


async def test_a_boot_clock_a_day_behind_writes_nothing_dated_at_the_guess(tmp_path: Path) -> None:
    """Test that with `require_sync` a collector started on a clock a day behind waits, and once the
    clock is synchronized (a step forward of a day) starts its machines on the synchronized clock:
    no point is dated at the boot clock's guess, and the step is counted."""
    behind = [-86_400 * S]
    clock = Clock(wall=lambda: time.time_ns() + behind[0], mono=time.monotonic_ns)
    loaded = load_config_text(CONFIG.format(data_dir=tmp_path, require="true", timeout="1h"), "t.yaml")
    probe = FixedProbe(False)
    sink = RecordingSink()
    engine = Engine(loaded, sink, clock=clock, sync_probe=probe, tick_s=0.05)
    stop = asyncio.Event()
    runner = asyncio.create_task(engine.run(stop))
    await until(lambda: engine.sync.reason is not None, 5, "the wait for a synchronized clock")
    synced_at = time.time_ns()
    behind[0] = 0  # NTP steps the clock and the kernel reports it synchronized
    probe.answer = True
    await until(lambda: engine.stats.state_changes > 0, 10, "a state change")
    stop.set()
    await runner
    assert clock.steps == 1
    stamps = [int(line.rsplit(" ", 1)[1]) for line in sink.lines]
    assert stamps and min(stamps) >= synced_at - 60 * S  # an interval start at most: aligned to the minute
    first_change = next(line for line in sink.lines if line.startswith("machine_state"))
    assert int(first_change.rsplit(" ", 1)[1]) >= synced_at


def test_a_stamp_taken_before_a_step_and_processed_after_it_keeps_its_place(tmp_path: Path) -> None:
    """Test that the engine moves an arrival stamp of the old line, handed over after the ticker saw
    the step, onto the new line: the readings before and after the step keep their order, none is
    out of order, and the changes' durations are the real time between them."""
    t = FakeTime()
    clock = t.clock()
    loaded = load_config_text(f"""
site: {{plant: p}}
data_dir: {tmp_path}
sources: [{{id: line, type: mqtt, host: 127.0.0.1, subscriptions: [{{topic: "a/{{machine}}", payload: json}}]}}]
profiles:
  m: {{signals: {{state: state}}, rules: [{{state: busy, when: "state == 'busy'"}}, {{state: idle}}]}}
machines: [{{id: m1, source: line, profile: m}}]
""", "t.yaml")
    engine = Engine(loaded, RecordingSink(), clock=clock)
    out: list[Output] = []
    t.mono += S
    out += engine._process(Reading("m1", "state", "busy", clock.now_ns()))
    t.mono += S
    held = Reading("m1", "state", "idle", clock.now_ns())  # read, still in the adapter's buffer
    t.mono += 100_000_000
    t.offset += 3600 * S  # NTP steps the wall clock forward an hour
    out += engine._tick()  # the ticker sees the step
    out += engine._process(held)
    t.mono += S
    out += engine._process(Reading("m1", "state", "busy", clock.now_ns()))
    changes = [o for o in out if isinstance(o, StateChange)]
    assert [(c.state, c.previous_ns) for c in changes[1:]] == [(State.IDLE, S), (State.BUSY, S + 100_000_000)]
    assert changes[-1].ts_ns - changes[0].ts_ns == 3600 * S + 2 * S + 100_000_000
    assert engine.late_readings() == {"clamped": 0, "out_of_order": 0, "replayed": 0, "duplicate": 0}
