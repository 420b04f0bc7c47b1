"""The Sparkplug primary host role through a real mosquitto: the retained STATE birth once
subscribed, the will on a connection that dies without DISCONNECT, the death on a clean stop (MQTT
5 and 3.1.1, Sparkplug 3.0 and 2.2); and end to end, an edge node of another library
(pysparkplug, own venv) that waits for its primary host: it sends nothing until the collector's
birth, then its births and data, whose state history lands in InfluxDB, and ends its session
when the collector's will says the host is gone."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.configfile import load_config_text
from collector.engine import Engine
from collector.influx import make_sink
from collector.sinks import NullSink
from tests.fixtures._foreign import PYSPARKPLUG, foreign_python
from tests.fixtures._mqtt import make_adapter, make_source, running
from tests.fixtures._ports import until, wait_for
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto
from tests.test_sparkplug_names import PACKML, PLANT, plant_config

SUB = {"topic": "spBv1.0/{group}/#", "payload": "sparkplug_b"}
EDGE = Path(__file__).resolve().parent / "independent" / "spb_waiting_edge.py"
MS = 1_000_000


class Watch:
    """A paho client that records ``(topic, payload, retain)`` of what it receives, in order."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_for(subscribed.is_set, 10, f"subscribed to {topic}")

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def retained(broker: Mosquitto, topic: str) -> bytes:
    """The message the broker keeps on ``topic``, read by a new subscriber (it comes flagged retained).
    A message published just after the subscription comes live, without the flag: then a new
    subscriber asks again (a message that is not retained at all never reaches it: the wait fails)."""
    while True:
        watch = await asyncio.to_thread(Watch, broker, topic)  # not blocking the loop: the adapter writes on it
        try:
            await until(lambda w=watch: bool(w.messages), 10, f"the retained message on {topic}")
            if watch.messages[0][2]:
                return watch.messages[0][1]
        finally:
            watch.close()


def kill_connection(adapter: Any) -> None:
    """End the TCP connection without an MQTT DISCONNECT, as a crash or a cut cable would."""
    sock = adapter._client.socket()
    sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_state_birth_retained_then_will_on_a_killed_connection(mosquitto: Mosquitto, protocol: str) -> None:
    """Test that once connected the source has published `{"online": true, "timestamp": T}` retained
    on `spBv1.0/STATE/<host_id>`, T the connect time, and that when its connection dies without a
    DISCONNECT the broker publishes the will `{"online": false, "timestamp": T}` (same T), retained."""
    topic = "spBv1.0/STATE/plant-3"
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB], host_id="plant-3", protocol=protocol))
    watch = Watch(mosquitto, topic)
    before = time.time_ns() // MS
    try:
        async with running(adapter):
            after = time.time_ns() // MS
            birth = json.loads(await retained(mosquitto, topic))
            assert birth["online"] is True and before <= birth["timestamp"] <= after
            kill_connection(adapter)
            await until(lambda: any(b'"online":false' in p for p in watch.payloads(topic)), 10, "the will")
    finally:
        watch.close()
    assert json.loads(await retained(mosquitto, topic)) == {"online": False, "timestamp": birth["timestamp"]}


@pytest.mark.parametrize(("version", "topic", "online", "offline"), [
    ("3.0", "spBv1.0/STATE/h", b'{"online":true,', b'{"online":false,'),
    ("2.2", "STATE/h", b"ONLINE", b"OFFLINE"),
])
async def test_clean_stop_publishes_offline_and_a_reconnect_a_new_birth(
        mosquitto: Mosquitto, version: str, topic: str, online: bytes, offline: bytes) -> None:
    """Test that a clean stop publishes the offline STATE before its DISCONNECT (which discards the will)
    and the next connect a new birth; in 3.0 each connection's birth and death share its connect time."""
    cfg = make_source(mosquitto, subscriptions=[SUB], host_id="h", sparkplug_version=version)
    watch = Watch(mosquitto, topic)
    try:
        for _ in range(2):
            async with running(make_adapter(cfg)):
                await until(lambda: bool(watch.payloads(topic)) and watch.payloads(topic)[-1].startswith(online),
                            10, "the birth")
            await until(lambda: watch.payloads(topic)[-1].startswith(offline), 10, "the death")
    finally:
        watch.close()
    # Consecutive repeats collapsed: the retained offline of the connection before may reach the host
    # just after its birth, which it then publishes once more (the same message: nothing changes).
    states = [p for i, p in enumerate(watch.payloads(topic)) if i == 0 or p != watch.payloads(topic)[i - 1]]
    assert [p.startswith(online) for p in states] == [True, False, True, False]
    if version == "3.0":
        stamps = [json.loads(p)["timestamp"] for p in states]
        assert stamps[0] == stamps[1] < stamps[2] == stamps[3]
    assert (await retained(mosquitto, topic)).startswith(offline)


async def test_an_offline_state_of_an_earlier_connection_is_answered_with_the_birth(mosquitto: Mosquitto) -> None:
    """Test that when an older offline STATE lands on the host's topic while it runs (a will the broker
    published late), the host publishes its birth again, so the retained STATE says online."""
    topic = "spBv1.0/STATE/h"
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB], host_id="h"))
    stale = paho.Client(CallbackAPIVersion.VERSION2)
    stale.connect(mosquitto.host, mosquitto.port)
    stale.loop_start()
    try:
        async with running(adapter):
            birth = json.loads(await retained(mosquitto, topic))
            old = {"online": False, "timestamp": birth["timestamp"] - 60_000}
            stale.publish(topic, json.dumps(old), qos=1, retain=True).wait_for_publish(10)
            deadline = time.monotonic() + 10
            while json.loads(await retained(mosquitto, topic)) != birth:
                assert time.monotonic() < deadline, "the birth was not published again"
    finally:
        stale.disconnect()
        stale.loop_stop()


class EdgeProcess:
    """tests/independent/spb_waiting_edge.py in pysparkplug's venv; its JSON lines collected by a thread."""

    def __init__(self, python: Path, *args: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.proc = subprocess.Popen([str(python), str(EDGE), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def seen(self, **fields: Any) -> bool:
        return any(all(line.get(k) == v for k, v in fields.items()) for line in self.lines)

    def explain(self) -> str:
        err = "" if self.proc.poll() is None or self.proc.stderr is None else self.proc.stderr.read()[-2000:]
        return f"edge node said {self.lines}; {err}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def test_an_edge_node_that_waits_for_its_primary_host_starts_sending(mosquitto: Mosquitto, influxd: InfluxD,
                                                                           tmp_path: Path) -> None:
    """Test config/sparkplug-plant.yaml (with its `host_id`) against a pysparkplug edge node configured to
    wait for that host: subscribed and silent until the collector's STATE birth, then NBIRTH, DBIRTH and
    DDATA, whose device's state history lands in InfluxDB exactly (times, states, previous states,
    durations); when the collector's connection dies, the will reaches the edge node, which ends its session."""
    python = await asyncio.to_thread(foreign_python, PYSPARKPLUG)
    loaded = load_config_text(plant_config(mosquitto, influxd, tmp_path, "spb_host"), str(PLANT))
    host_id = loaded.config.sources[0].host_id  # type: ignore[union-attr]
    assert host_id, "config/sparkplug-plant.yaml shows `host_id`"
    state_topic = f"spBv1.0/STATE/{host_id}"
    states = [4, 6, 11, 4, 6, 2]
    watch = Watch(mosquitto, "spBv1.0/#")
    edge = EdgeProcess(python, mosquitto.host, str(mosquitto.port), host_id, "plant3", "gw-7", "filler-9",
                       ",".join(map(str, states)))
    engine = Engine(loaded, make_sink(loaded.config))
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await until(lambda: edge.seen(event="waiting"), 60, "the edge node subscribed to STATE", explain=edge.explain)
        task = asyncio.create_task(engine.run(stop))
        await until(lambda: edge.seen(event="sent"), 30, "the edge node's births and data", explain=edge.explain)

        def rows() -> list[dict[str, Any]]:
            return influxd.rows("SELECT state, previous, previous_s FROM machine_state WHERE machine = 'filler-9'",
                                "spb_host")

        await until(lambda: len(rows()) >= len(states), 30, "the device's state changes in InfluxDB")
        birth = json.loads(watch.payloads(state_topic)[0])
        assert edge.lines[1] == {"event": "state", "online": True, "timestamp": birth["timestamp"]}
        topics = [t for t, _, _ in watch.messages]
        assert topics.index(state_topic) < topics.index("spBv1.0/plant3/NBIRTH/gw-7"), "a birth before the host's"
        assert await retained(mosquitto, state_topic) == watch.payloads(state_topic)[0]

        kill_connection(engine._adapters["spb"])
        await until(lambda: edge.seen(event="stopped"), 30, "the edge node ending its session", explain=edge.explain)
        assert edge.seen(event="state", online=False, timestamp=birth["timestamp"])  # the will, as the edge saw it
        assert "spBv1.0/plant3/NDEATH/gw-7" in [t for t, _, _ in watch.messages]
    finally:
        stop.set()
        if task is not None:
            await task
        edge.stop()
        watch.close()
    stamps = [line["ts_ms"] * MS for line in edge.lines if "ts_ms" in line]
    stored = [(r["time"], r["state"], r["previous"], r["previous_s"]) for r in rows() if r["time"] <= stamps[-1]]
    expected = []
    for i, (ts, number) in enumerate(zip(stamps, states, strict=True)):
        previous = "offline" if i == 0 else PACKML[states[i - 1]]
        expected.append((ts, PACKML[number], previous, None if i == 0 else (ts - stamps[i - 1]) / 1e9))
    assert [row[:3] for row in stored] == [row[:3] for row in expected]
    for got, want in zip(stored[1:], expected[1:], strict=True):
        assert abs(got[3] - want[3]) < 1e-9
    assert engine.bad_input.counts == {}


SHARDED = """
site: {{plant: p}}
data_dir: {data_dir}
shard: {{index: {index}, count: 2}}
sources:
  - {{id: spb, type: mqtt, host: 127.0.0.1, port: {port}, client_id: collector-shard-{index}, host_id: h,
     subscriptions: [{{topic: "spBv1.0/{{group}}/#", payload: sparkplug_b}}]}}
machines: [{{id: m-1, source: spb, profile: packml}}]
"""


@pytest.mark.parametrize("index", [0, 1])
async def test_only_shard_zero_of_an_engine_is_the_primary_host(mosquitto: Mosquitto, tmp_path: Path,
                                                                index: int) -> None:
    """Test that an engine that is shard 0 runs its source as the primary host (its birth is retained on
    the broker) and one that is shard 1 runs the same source without the role."""
    loaded = load_config_text(SHARDED.format(data_dir=tmp_path, port=mosquitto.port, index=index), "shard.yaml")
    engine = Engine(loaded, NullSink())
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await until(lambda: engine.stats.source_online.get("spb") is True, what="source connected")
        host = engine._adapters["spb"].decoder.host  # type: ignore[attr-defined]
        if index == 0:
            assert host is not None and json.loads(await retained(mosquitto, "spBv1.0/STATE/h"))["online"] is True
        else:
            assert host is None and not engine._adapters["spb"].decoder.config.rebirth  # type: ignore[attr-defined]
    finally:
        stop.set()
        await task
