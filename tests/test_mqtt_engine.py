"""MQTT end to end: YAML config -> engine (supervisor, rules, tracker) -> state changes, against a
real mosquitto, including a broker restart mid-stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from collector.configfile import load_config_text
from collector.core.model import NS_PER_S, Output, State, StateChange
from collector.engine import Engine
from collector.sinks import NullSink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures._sparkplug import INT64, STRING, M, payload
from tests.fixtures.mosquitto import Mosquitto

T0 = (time.time_ns() // NS_PER_S - 3600) * NS_PER_S  # engine start: an hour ago, on a whole second
S = NS_PER_S

CONFIG = """
site: {{plant: sz}}
data_dir: {data_dir}
tracker: {{max_future: 2h}}  # the engine's clock is held an hour back; arrival stamps are real time
sources:
  - id: line-2
    type: mqtt
    host: 127.0.0.1
    port: {port}
    client_id: collector-e2e
    redelivery_window: 0  # mosquitto sends again at once what was in flight (nats-server: tests/test_exactness_nats.py)
    subscriptions:
      - topic: "factory/{{plant}}/{{line}}/{{machine}}/status"
        payload: json
        signals: {{execution: exec, alarm: alarm}}
        timestamp: ts
      - topic: "plc/{{machine}}/{{signal}}"
        payload: value
      - topic: "spBv1.0/{{group}}/#"
        payload: sparkplug_b
profiles:
  lathe:
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle}}
  press:
    rules:
      - {{state: down, when: "fault"}}
      - {{state: busy, when: "running"}}
      - {{state: idle}}
machines:
  - {{id: cnc-07, line: turning, source: line-2, profile: lathe}}
  - {{id: press-1, line: pressing, source: line-2, profile: press}}
  - {{id: mill-3, line: milling, source: line-2, profile: lathe}}
"""


class Clock:
    """The engine's clock, held at ``T0`` (so that payload timestamps decide every duration)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@asynccontextmanager
async def engine_running(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[tuple[Engine, list[StateChange], Clock]]:
    loaded = load_config_text(CONFIG.format(port=broker.port, data_dir=tmp_path), "test.yaml")
    changes: list[StateChange] = []

    def on_output(out: Sequence[Output]) -> None:
        changes.extend(o for o in out if isinstance(o, StateChange))

    clock = Clock()
    engine = Engine(loaded, NullSink(), clock=clock, tick_s=0.05, backoff_initial_s=0.05, backoff_cap_s=0.5,
                    on_output=on_output)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await until(lambda: engine.stats.source_online.get("line-2") is True, what="source connected")
    try:
        yield engine, changes, clock
    finally:
        stop.set()
        await task


def of(changes: list[StateChange], machine: str) -> list[StateChange]:
    return [c for c in changes if c.machine.id == machine]


async def test_json_and_value_topics_drive_states_with_exact_durations(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that JSON topics (with payload timestamps) and plain-value topics drive machines through
    idle/busy/down, each state change carrying the exact duration of the state it ends."""
    pub = Publisher(mosquitto)
    try:
        async with engine_running(mosquitto, tmp_path) as (_engine, changes, clock):
            for offset_ms, exec_, alarm in [(1000, "READY", False), (4000, "ACTIVE", False), (10_000, "ACTIVE", True),
                                            (12_500, "READY", False)]:
                pub.publish("factory/sz/turning/cnc-07/status",
                            json.dumps({"exec": exec_, "alarm": alarm, "ts": (T0 // 1_000_000) + offset_ms}))
            sent: list[int] = []
            for signal, value in [("running", "1"), ("running", "0"), ("fault", "true")]:
                await asyncio.sleep(0.2)  # value topics are stamped on arrival: let the states last a little
                sent.append(time.time_ns())
                pub.publish(f"plc/press-1/{signal}", value)
            await until(lambda: len(of(changes, "cnc-07")) == 4 and len(of(changes, "press-1")) == 3,
                        what="seven state changes")
            clock.now = time.time_ns()
    finally:
        pub.close()
    cnc = of(changes, "cnc-07")[:4]  # then the collector's stop takes it offline
    assert [(c.state, c.ts_ns - T0, c.previous, c.previous_ns) for c in cnc] == [
        (State.IDLE, 1 * S, State.OFFLINE, 1 * S),
        (State.BUSY, 4 * S, State.IDLE, 3 * S),
        (State.DOWN, 10 * S, State.BUSY, 6 * S),
        (State.IDLE, 12_500_000_000, State.DOWN, 2_500_000_000),
    ]
    press = of(changes, "press-1")[:3]
    assert [c.state for c in press] == [State.BUSY, State.IDLE, State.DOWN]
    for change, published in zip(press, sent, strict=True):
        assert published <= change.ts_ns <= clock.now  # stamped on arrival
    assert press[1].previous_ns == press[1].ts_ns - press[0].ts_ns >= 200_000_000
    assert press[2].previous_ns == press[2].ts_ns - press[1].ts_ns >= 200_000_000


async def test_sparkplug_ddeath_takes_the_machine_offline_at_its_timestamp(mosquitto: Mosquitto,
                                                                         tmp_path: Path) -> None:
    """Test that through the engine a Sparkplug device goes busy from its DDATA and offline exactly at
    the DDEATH payload's timestamp."""
    ms = T0 // 1_000_000
    pub = Publisher(mosquitto)
    try:
        async with engine_running(mosquitto, tmp_path) as (_engine, changes, _clock):
            pub.publish("spBv1.0/plant/NBIRTH/edge1",
                        payload([M("bdSeq", datatype=INT64, value=0)], seq=0, timestamp=ms))
            pub.publish("spBv1.0/plant/DBIRTH/edge1/mill-3", payload(
                [M("execution", 1, STRING, "READY"), M("alarm", 2, 11, False)], seq=1, timestamp=ms + 2000))
            pub.publish("spBv1.0/plant/DDATA/edge1/mill-3",
                        payload([M(alias=1, value="ACTIVE")], seq=2, timestamp=ms + 5000))
            pub.publish("spBv1.0/plant/DDEATH/edge1/mill-3", payload([], seq=3, timestamp=ms + 65_000))
            await until(lambda: len(of(changes, "mill-3")) == 3, what="three state changes")
    finally:
        pub.close()
    assert [(c.state, c.ts_ns - T0, c.previous_ns) for c in of(changes, "mill-3")[:3]] == [
        (State.IDLE, 2 * S, 2 * S), (State.BUSY, 5 * S, 3 * S), (State.OFFLINE, 65 * S, 60 * S)]
    assert "DDEATH" in of(changes, "mill-3")[-1].reason


async def test_broker_restart_mid_stream_loses_no_state_change(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that when mosquitto (persistence on) stops and starts mid-stream, every state change
    published with QoS 1 before, during and after the restart reaches the engine."""
    n = 300
    states = ["ACTIVE" if i % 2 else "READY" for i in range(n)]
    ms = T0 // 1_000_000
    pub = Publisher(mosquitto, "restart-publisher", persistent=True)
    pub.client.reconnect_delay_set(0.05, 0.5)

    def send(i: int) -> None:
        pub.publish("factory/sz/turning/cnc-07/status",
                    json.dumps({"exec": states[i], "alarm": False, "ts": ms + 1000 * (i + 1)}), wait=False)

    try:
        async with engine_running(mosquitto, tmp_path) as (engine, changes, _clock):
            for i in range(100):
                send(i)
            await asyncio.to_thread(mosquitto.stop)  # what is not delivered yet stays in the publisher or on disk
            for i in range(100, 200):  # the broker is down: the publisher queues them
                send(i)
            await asyncio.to_thread(mosquitto.start)
            for i in range(200, n):
                send(i)
            last = T0 + n * S
            await until(lambda: engine.trackers["cnc-07"].last_reading_ns == last, within=30,
                        what="the last message")
            assert engine.stats.reconnects.get("line-2", 0) >= 1
    finally:
        pub.close()
    seen = {(c.ts_ns, c.state) for c in of(changes, "cnc-07")}
    expected = {(T0 + (i + 1) * S, State.BUSY if states[i] == "ACTIVE" else State.IDLE) for i in range(n)}
    assert expected - seen == set()


async def _late_by_one_second(broker: Mosquitto, tmp_path: Path, lateness: str) -> tuple[int, StateChange, int]:
    """Run the engine on the real clock, let it roll time up to now, then publish a change stamped
    a second ago (a slow network, a publisher clock behind ours)."""
    text = CONFIG.format(port=broker.port, data_dir=tmp_path).replace(
        # 100 ms roll-ups: every tick closes intervals, so rolled-up time is final right behind it
        "tracker: {max_future: 2h}", f"tracker: {{max_future: 2h, lateness: {lateness}, interval: 100ms}}")
    changes: list[StateChange] = []
    engine = Engine(load_config_text(text, "test.yaml"), NullSink(), tick_s=0.05,
                    on_output=lambda out: changes.extend(o for o in out if isinstance(o, StateChange)))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    pub = Publisher(broker)
    try:
        await until(lambda: engine.stats.source_online.get("line-2") is True, what="source connected")
        await asyncio.sleep(1.5)  # ticks roll time up close to now (and past the stamp, with no lateness)
        stamp_ms = time.time_ns() // 1_000_000 - 1000
        pub.publish("factory/sz/turning/cnc-07/status", json.dumps({"exec": "ACTIVE", "alarm": False, "ts": stamp_ms}))
        await until(lambda: bool(of(changes, "cnc-07")), what="the change")
    finally:
        pub.close()
        stop.set()
        await task
    return stamp_ms * 1_000_000, of(changes, "cnc-07")[0], engine.late_readings()["clamped"]


async def test_a_source_stamped_reading_within_the_lateness_counts_at_its_own_time(mosquitto: Mosquitto,
                                                                                   tmp_path: Path) -> None:
    """Test that a reading arriving a second after its payload stamp changes the state at that stamp
    when `tracker.lateness` (default 2 s) allows it, and is clamped and counted when it does not."""
    stamp, change, clamped = await _late_by_one_second(mosquitto, tmp_path / "a", "2s")
    assert (change.state, change.ts_ns, clamped) == (State.BUSY, stamp, 0)
    stamp, change, clamped = await _late_by_one_second(mosquitto, tmp_path / "b", "0s")
    assert change.state is State.BUSY and change.ts_ns > stamp + 500_000_000 and clamped == 1
