"""MTConnect end to end: a test agent keeping the protocol's sequence rules (HTTP) or cppagent's
MQTT sink topics through mosquitto -> the engine -> the outbox -> a real influxd, asserting the
state history that lands there (times, states, durations)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.configfile import load_config_text
from collector.core.model import NS_PER_S
from collector.engine import Engine
from collector.influx import make_sink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.mtconnect_agent import MtConnectAgent, vmc

S = NS_PER_S
MS = 1_000_000
MACHINE = "mtc-vmc-01"  # the device's uuid: the default machine id
DB = "mtc"


def config(tmp: Path, influxd: InfluxD, source: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "site": {"plant": "p"}, "data_dir": str(tmp / "data"), "http": {"enabled": False},
        "influx": {"url": influxd.url, "api": "v1", "database": DB, "create_database": True},
        "outbox": {"path": str(tmp / "outbox.sqlite"), "flush_interval": 0.1},
        "sources": [{"id": "agent", "type": "mtconnect", **source}], "machines": []})


@asynccontextmanager
async def collector(text: str) -> AsyncIterator[Engine]:
    loaded = load_config_text(text)
    engine = Engine(loaded, make_sink(loaded.config), tick_s=0.05, backoff_initial_s=0.1, backoff_cap_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await until(lambda: task.done() or MACHINE in engine.trackers, 15, "the device found")
        if task.done():
            task.result()
        yield engine
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def history(influxd: InfluxD, since: int) -> list[tuple[int, str]]:
    rows = influxd.rows(f"SELECT state, previous_s FROM machine_state WHERE machine = '{MACHINE}' AND time >= {since}",
                        DB) if _db(influxd) else []
    return [(r["time"] - since, r["state"]) for r in rows]


def _db(influxd: InfluxD) -> bool:
    return any(DB in v for s in influxd.query("SHOW DATABASES") for v in s.get("values", []))


async def settled(influxd: InfluxD, since: int, want: list[tuple[int, str]]) -> list[tuple[int, str]]:
    await until(lambda: len(history(influxd, since)) >= len(want), 20, f"{len(want)} changes in influxd",
                explain=lambda: str(history(influxd, since)))
    return history(influxd, since)


def soon() -> int:
    """A stamp a little ahead, on a whole millisecond (agents write microseconds)."""
    return (time.time_ns() // MS + 500) * MS


CYCLE = [  # (offset in ms, data item, value), and the state it gives
    (0, "vmc_avail", "AVAILABLE"), (0, "vmc_exec", "READY"), (1000, "vmc_exec", "ACTIVE"),
    (2000, "vmc_fmode", "SETUP"), (3000, "vmc_system", "FAULT"), (4000, "vmc_system", "NORMAL"),
    (5000, "vmc_fmode", "PRODUCTION"), (6000, "vmc_avail", "UNAVAILABLE"),
]
CYCLE_STATES = [(0, "idle"), (1000, "busy"), (2000, "setup"), (3000, "down"), (4000, "setup"), (5000, "busy"),
                (6000, "offline")]


def ms(pairs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(t * MS, s) for t, s in pairs]


async def test_http_scripted_cycle_lands_as_the_state_history(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that Availability, Execution, FunctionalMode and a fault condition read over HTTP land in
    influxd as exactly the expected states at the observations' own times."""
    agent = MtConnectAgent([vmc()])
    with agent.serving() as url:
        async with collector(config(tmp_path, influxd, {"url": url, "interval": 0.1})):
            t0 = soon()
            agent.script([(item, value, t0 + off * MS) for off, item, value in CYCLE])
            got = await settled(influxd, t0, ms(CYCLE_STATES))
    assert got[:len(CYCLE_STATES)] == ms(CYCLE_STATES)
    rows = influxd.rows(f"SELECT previous_s, reason FROM machine_state WHERE machine = '{MACHINE}' AND time > {t0}", DB)
    assert [r["previous_s"] for r in rows[:6]] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert rows[2]["reason"] == "fault condition"


async def test_http_agent_restart_and_buffer_overflow_lose_nothing_the_agent_has(influxd: InfluxD,
                                                                                tmp_path: Path) -> None:
    """Test that after an agent restart every change of the new instance is read (not only its
    current values), and that a buffer that went round while the collector waited is read from
    its oldest observation on (the gap counted once)."""
    agent = MtConnectAgent([vmc()], buffer_size=16)
    with agent.serving() as url:
        async with collector(config(tmp_path, influxd, {"url": url, "interval": 0.1, "timeout": 5})) as engine:
            t0 = soon()
            agent.script([("vmc_avail", "AVAILABLE", t0), ("vmc_exec", "ACTIVE", t0 + 100 * MS)])
            await settled(influxd, t0, ms([(100, "busy")]))
            await until(lambda: time.time_ns() > t0 + 200 * MS, 5, "the busy stamp in the past")
            # The restart: the new instance starts UNAVAILABLE and goes through three states before
            # the collector's next poll; /current alone would show the last one only.
            r0, restarted_at = soon(), time.time_ns()
            agent.restart([("vmc_avail", "AVAILABLE", r0 + 1000 * MS), ("vmc_exec", "READY", r0 + 1000 * MS),
                           ("vmc_exec", "ACTIVE", r0 + 2000 * MS), ("vmc_exec", "READY", r0 + 3000 * MS)])
            restarted = [(1000, "idle"), (2000, "busy"), (3000, "idle")]
            got = await settled(influxd, r0, ms(restarted))
            assert got[:3] == ms(restarted)
            got = history(influxd, restarted_at)
            assert got[0][1] == "offline" and restarted_at + got[0][0] < r0  # the new instance's UNAVAILABLE
            # The overflow: 40 changes pass through a buffer of 16 between two polls (at once, under
            # the agent's lock), so the collector's next `from` is no longer in the buffer.
            g0 = soon() + 4000 * MS
            seqs = agent.script([("vmc_exec", "ACTIVE" if i % 2 == 0 else "READY", g0 + i * 100 * MS)
                                 for i in range(40)])
            kept = [i for i, seq in enumerate(seqs) if seq >= agent.first_seq]
            assert kept and kept[0] > 0  # the oldest of them are gone from the agent
            want = ms([(i * 100, "busy" if i % 2 == 0 else "idle") for i in kept])
            got = await settled(influxd, g0 + kept[0] * 100 * MS, want)
            assert got[:len(want)] == [(t - kept[0] * 100 * MS, s) for t, s in want]
            assert engine.bad_input.counts[("agent", "sequence_gap")] == 1


async def test_http_agent_outage_within_the_hold_is_filled_from_its_buffer(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that the changes an agent took while it was unreachable are read from its buffer when
    it answers again (the session's next sequence is kept), so the machine's history has no hole."""
    agent = MtConnectAgent([vmc()])
    with agent.serving() as url:
        async with collector(config(tmp_path, influxd, {"url": url, "interval": 0.1, "timeout": 1})) as engine:
            t0 = soon()
            agent.script([("vmc_avail", "AVAILABLE", t0), ("vmc_exec", "READY", t0)])
            await settled(influxd, t0, ms([(0, "idle")]))
            agent.stop()
            await until(lambda: engine.stats.source_online.get("agent") is False, 10, "the source lost")
            agent.script([("vmc_exec", "ACTIVE", t0 + 1000 * MS), ("vmc_exec", "READY", t0 + 1500 * MS)])
            agent.start()
            got = await settled(influxd, t0, ms([(0, "idle"), (1000, "busy"), (1500, "idle")]))
    assert got[:3] == ms([(0, "idle"), (1000, "busy"), (1500, "idle")])


async def test_http_collector_restart_reads_what_the_agent_kept_meanwhile(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that a collector stopped and started again goes on from the stored session: the changes
    the agent took while the collector was away land at their own times (after the stop's offline),
    weighed against the alarms still active (a warning does not end a fault)."""
    agent = MtConnectAgent([vmc()])
    with agent.serving() as url:
        text = config(tmp_path, influxd, {"url": url, "interval": 0.1})
        async with collector(text):
            t0 = soon()
            agent.script([("vmc_avail", "AVAILABLE", t0), ("vmc_exec", "READY", t0)])
            agent.set("vmc_system", "FAULT", t0 + 100 * MS, code="E1")
            await settled(influxd, t0, ms([(0, "idle"), (100, "down")]))
            await until(lambda: time.time_ns() > t0 + 200 * MS, 5, "the fault's stamp in the past")
        stopped = time.time_ns()
        away = (stopped // MS + 300) * MS
        agent.set("vmc_system", "WARNING", away, code="W2")
        agent.set("vmc_system", "NORMAL", away + 500 * MS, code="E1")
        async with collector(text):
            got = await settled(influxd, t0, ms([(0, "idle"), (0, "down"), (0, "offline"), (0, "down"), (0, "idle")]))
    assert [s for _, s in got[:5]] == ["idle", "down", "offline", "down", "idle"]
    assert t0 + got[2][0] >= stopped - 1000 * MS and [t0 + t for t, _ in got[3:5]] == [away, away + 500 * MS]
    second = agent.requests.index("/probe", 1)
    assert agent.requests[second + 1:second + 3] == ["/current?at=10", "/sample?from=11&count=1000"]  # resumed


async def test_http_agent_gone_past_the_hold_is_offline_from_the_loss(influxd: InfluxD, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that an agent that stays unreachable past the engine's hold takes its machines offline
    from the moment it was lost, with the reason saying so."""
    monkeypatch.setattr("collector.engine.HOLD_MAX_S", 0.5)
    agent = MtConnectAgent([vmc()])
    with agent.serving() as url:
        async with collector(config(tmp_path, influxd, {"url": url, "interval": 0.1, "timeout": 1})):
            t0 = soon()
            agent.script([("vmc_avail", "AVAILABLE", t0), ("vmc_exec", "ACTIVE", t0)])
            await settled(influxd, t0, ms([(0, "busy")]))
            await until(lambda: time.time_ns() > t0 + 100 * MS, 5, "the busy stamp in the past")
            lost = time.time_ns()
            agent.stop()
            await settled(influxd, t0, ms([(0, "busy"), (0, "offline")]))
    row = influxd.rows(f"SELECT state, reason FROM machine_state WHERE machine = '{MACHINE}' AND time > {t0}", DB)[0]
    assert row["state"] == "offline" and "unreachable" in row["reason"] and row["time"] >= lost


# -- MQTT: cppagent's MQTT sink (documents, JSON version 2), through mosquitto ----------------------

async def test_mqtt_documents_and_last_will_land_as_the_state_history(mosquitto: Mosquitto, influxd: InfluxD,
                                                                      tmp_path: Path) -> None:
    """Test the scripted cycle published as cppagent's MQTT sink does it (retained Probe and
    Current, Sample documents, the agent's last will): the same history as over HTTP, a Current
    repeating known observations changes nothing, and the last will takes the machine offline."""
    agent = MtConnectAgent([vmc()])
    device = agent.devices[0]
    pub = Publisher(mosquitto)
    try:
        pub.publish("MTConnect/Probe/Agent_test-agent-uuid/Availability", "AVAILABLE", retain=True)
        pub.publish(f"MTConnect/Probe/{device.uuid}", agent.probe_json(device), retain=True)
        obs, nxt = agent.current()
        pub.publish(f"MTConnect/Current/{device.uuid}", agent.streams_json(device, obs, nxt), retain=True)
        source = {"transport": "mqtt", "mqtt": {"host": mosquitto.host, "port": mosquitto.port,
                                                "client_id": "collector-mtc"}}
        async with collector(config(tmp_path, influxd, source)):
            t0 = soon()
            start = agent.next_seq
            half = len(CYCLE) // 2
            agent.script([(item, value, t0 + off * MS) for off, item, value in CYCLE[:half]])
            obs, nxt = agent.sample_since(start)
            pub.publish(f"MTConnect/Sample/{device.uuid}", agent.streams_json(device, obs, nxt), retain=True)
            obs, nxt2 = agent.current()  # a periodic Current: nothing new in it
            pub.publish(f"MTConnect/Current/{device.uuid}", agent.streams_json(device, obs, nxt2), retain=True)
            agent.script([(item, value, t0 + off * MS) for off, item, value in CYCLE[half:-1]])
            obs, nxt3 = agent.sample_since(nxt)
            pub.publish(f"MTConnect/Sample/{device.uuid}", agent.streams_json(device, obs, nxt3), retain=True)
            want = ms(CYCLE_STATES[:-1])
            got = await settled(influxd, t0, want)
            assert got[:len(want)] == want
            lost = time.time_ns()
            pub.publish("MTConnect/Probe/Agent_test-agent-uuid/Availability", "UNAVAILABLE", retain=True)
            got = await settled(influxd, t0, [*want, (0, "offline")])
            assert got[len(want)][1] == "offline" and got[len(want)][0] + t0 >= lost
    finally:
        pub.close()


async def test_mqtt_entity_topics_land_as_the_state_history(mosquitto: Mosquitto, influxd: InfluxD,
                                                            tmp_path: Path) -> None:
    """Test the scripted cycle published one observation per topic, as cppagent's MqttEntitySink
    does (no documents, no probe): the same history, the machine named by its uuid."""
    agent = MtConnectAgent([vmc()])
    device = agent.devices[0]
    pub = Publisher(mosquitto)
    try:
        source = {"transport": "mqtt", "mqtt": {"host": mosquitto.host, "port": mosquitto.port,
                                                "client_id": "collector-mtc-entity"}}
        loaded = config(tmp_path, influxd, source)
        pub.publish("MTConnect/Probe/Agent_test-agent-uuid/Availability", "AVAILABLE", retain=True)
        first = agent.buffer[0]  # the device's first UNAVAILABLE: announces it before the engine waits for it
        pub.publish(f"MTConnect/Devices/{device.uuid}/Observations/{first.item.id}", agent.entity_json(first),
                    retain=True)
        async with collector(loaded):
            t0 = soon()
            start = agent.next_seq
            agent.script([(item, value, t0 + off * MS) for off, item, value in CYCLE])
            for o in agent.sample_since(start)[0]:
                pub.publish(f"MTConnect/Devices/{device.uuid}/Observations/{o.item.id}", agent.entity_json(o))
            got = await settled(influxd, t0, ms(CYCLE_STATES))
    finally:
        pub.close()
    assert got[:len(CYCLE_STATES)] == ms(CYCLE_STATES)


def test_readme_example_is_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that the YAML example in adapters/mtconnect/README.md loads as config (with a site added)."""
    import re

    from adapters.mtconnect.config import MtConnectSource

    monkeypatch.setenv("MQTT_PASSWORD", "from-the-environment")
    readme = (Path(__file__).resolve().parent.parent / "adapters" / "mtconnect" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) == 1
    loaded = load_config_text("site: {plant: p}\n" + blocks[0], "README.md")
    assert [s.transport for s in loaded.config.sources if isinstance(s, MtConnectSource)] == ["http", "mqtt"]


def test_config_needs_the_transport_it_names() -> None:
    """Test that `transport: http` without `url` and a machine_id without a device field are refused."""
    from adapters.mtconnect.config import MtConnectSource

    with pytest.raises(ValueError, match="needs `url`"):
        MtConnectSource.model_validate({"id": "a", "type": "mtconnect"})
    with pytest.raises(ValueError, match="needs `mqtt`"):
        MtConnectSource.model_validate({"id": "a", "type": "mtconnect", "transport": "mqtt"})
    with pytest.raises(ValueError, match="machine_id"):
        MtConnectSource.model_validate({"id": "a", "type": "mtconnect", "url": "http://x", "machine_id": "{id}"})
