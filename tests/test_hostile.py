"""Hostile input through a real mosquitto into a running collector: a wrong clock, a discovery
flood, odd machine ids. Each must leave the collector running, bounded and scrapeable (the
/metrics text parsed by prometheus-client's own parser)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from collector.configfile import LoadedConfig, load_config_text
from collector.core.model import State
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto

CONFIG = """
site: {{plant: p}}
data_dir: {data_dir}
http: {{port: 0}}
sources:
  - id: line
    type: mqtt
    host: 127.0.0.1
    port: {port}
    client_id: collector-hostile
    clean_start: true
    qos: 0
    {extra}
    subscriptions:
      - topic: "factory/{{plant}}/{{line}}/{{machine}}/status"
        payload: json
        signals: {{execution: exec, spindle: spindle.speed, alarm: alarm}}
        timestamp: ts
        discover: [{{match: "*", profile: cnc}}]
profiles:
  cnc:
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE' or spindle > 50"}}
      - {{state: idle}}
{machines}
"""


@dataclass
class Running:
    engine: Engine
    http: httpx.AsyncClient
    pub: Publisher

    async def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """/metrics parsed by prometheus-client: family name -> (labels, value) of each sample."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out

    async def alive(self) -> None:
        assert (await self.http.get("/healthz")).status_code == 200
        assert self.engine.stats.source_online.get("line") is True


@asynccontextmanager
async def collector(broker: Mosquitto, tmp_path: Path, extra: str = "", machines: str = "") -> AsyncIterator[Running]:
    text = CONFIG.format(port=broker.port, data_dir=tmp_path, extra=extra, machines=machines)
    loaded = load_config_text(text, "hostile.yaml")
    engine = Engine(loaded, NullSink())
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http) as port:
        task = asyncio.create_task(engine.run(stop))
        pub = Publisher(broker)
        try:
            await until(lambda: engine.stats.source_online.get("line") is True, what="source connected")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                yield Running(engine, http, pub)
            assert not task.done(), "the collector stopped by itself"
        finally:
            pub.close()
            stop.set()
            await task


def message(exec_: str, ts: object = None) -> str:
    body: dict[str, object] = {"exec": exec_, "spindle": {"speed": 1}, "alarm": False}
    if ts is not None:
        body["ts"] = ts
    return json.dumps(body)


async def test_a_year_2100_and_a_1e23_timestamp_are_taken_at_arrival(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that readings stamped 2100-01-01 (ms), 1e23 (a float) and 99999999999999999999999 (an
    integer past 64 bits) cost nothing: counted, the first two taken at arrival time, and memory
    and the tracker's work stay flat."""
    rss = psutil.Process().memory_info().rss
    async with collector(mosquitto, tmp_path) as run:
        before = time.time_ns()
        run.pub.publish("factory/p/l/m1/status", message("ACTIVE", 4102444800000))
        await until(lambda: "m1" in run.engine.trackers and run.engine.trackers["m1"].state is State.BUSY,
                    what="m1 busy")
        run.pub.publish("factory/p/l/m1/status", message("READY", 1e23))
        await until(lambda: run.engine.trackers["m1"].state is State.IDLE, what="m1 idle")
        run.pub.publish("factory/p/l/m1/status", '{"exec": "ACTIVE", "alarm": false, "ts": 99999999999999999999999}')
        run.pub.publish("factory/p/l/m1/status", message("ACTIVE", time.time_ns() // 1_000_000))
        await until(lambda: run.engine.trackers["m1"].state is State.BUSY, what="m1 busy again")
        await asyncio.sleep(0.5)  # ticks roll the tracker on: nothing may be left to roll to 2100
        after = time.time_ns()
        await run.alive()
        tracker = run.engine.trackers["m1"]
        assert before <= tracker.since_ns <= after and tracker.acc_pos_ns <= after
        assert tracker.gaps_bridged == 0
        counts = run.engine.bad_input.counts
        assert counts[("line", "future_timestamp")] == 3  # orjson reads the 77-bit integer as a float
        metrics = await run.scrape()
        assert ({"source": "line", "kind": "future_timestamp"}, 3.0) in metrics["collector_bad_input_total"]
        assert ({"machine": "m1", "state": "busy"}, 1.0) in metrics["collector_machine_state"]
    assert psutil.Process().memory_info().rss - rss < 50 * 2**20


async def test_a_discovery_flood_of_100000_ids_stops_at_max_machines(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that 100,000 made-up machine ids, each a well-formed message, register `max_machines`
    machines and count the rest as `too_many_machines`; memory stays bounded, /metrics parses."""
    cap, flood = 2_000, 100_000
    rss = psutil.Process().memory_info().rss
    async with collector(mosquitto, tmp_path, extra=f"max_machines: {cap}") as run:
        body = message("READY")
        for i in range(flood):
            info = run.pub.publish(f"factory/p/l/id-{i}/status", body, qos=0, wait=False)
            if i % 5_000 == 4_999:
                # The test's own publisher queues what it has not sent yet in this process; let it
                # flush now and then, so the memory measured below is the collector's, not that queue.
                await asyncio.to_thread(info.wait_for_publish, 30)
        counts = run.engine.bad_input.counts
        await until(lambda: len(run.engine.trackers) + counts[("line", "too_many_machines")] >= flood, 120,
                    "every id registered or refused")
        await run.alive()
        assert len(run.engine.trackers) == cap
        assert counts[("line", "too_many_machines")] == flood - cap
        adapter_state = len(run.engine.machines)
        assert adapter_state == cap
        metrics = await run.scrape()
        assert ({"source": "line"}, float(cap)) in metrics["collector_machines"]
        assert len(metrics["collector_machine_state"]) == cap * len(State)
    assert psutil.Process().memory_info().rss - rss < 100 * 2**20


ODD_IDS = ['m"8\\,x=y z', "back\\slash", "a,b c", 'q"u"o"t"e"s', "ünï cödé", "x=1 y=2"]
# Mosquitto refuses topics with control characters (it drops the publisher), but an id may hold
# them all the same: from the YAML, or an OPC UA browse name. Configured here.
CONFIGURED_ODD_IDS = ["new\nline", "tab\there", 'all"\\, \n= of=them']


async def test_odd_machine_ids_are_tracked_and_scrapeable(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that machine ids with quotes, backslashes, commas, spaces, `=`, newlines and tabs are
    tracked, and /metrics stays valid Prometheus text that carries each id exactly as a label value."""
    machines = "machines:\n" + "".join(f"  - {{id: {json.dumps(m)}, source: line, profile: cnc}}\n"
                                        for m in CONFIGURED_ODD_IDS)
    async with collector(mosquitto, tmp_path, machines=machines) as run:
        for mid in ODD_IDS:
            run.pub.publish(f"factory/p/l/{mid}/status", message("ACTIVE"))
        await until(lambda: all(m in run.engine.trackers for m in ODD_IDS), what="every odd id tracked")
        await until(lambda: all(run.engine.trackers[m].state is State.BUSY for m in ODD_IDS), what="all busy")
        await run.alive()
        metrics = await run.scrape()
        busy = {labels["machine"] for labels, value in metrics["collector_machine_state"]
                if labels["state"] == "busy" and value == 1.0}
        assert busy == set(ODD_IDS)
        offline = {labels["machine"] for labels, value in metrics["collector_machine_state"]
                   if labels["state"] == "offline" and value == 1.0}
        assert offline == set(CONFIGURED_ODD_IDS)  # no data yet
        listed = (await run.http.get("/api/v1/machines")).json()
        assert {m["machine"] for m in listed} == set(ODD_IDS) | set(CONFIGURED_ODD_IDS)


def test_the_engine_caps_discovered_machines_per_source(tmp_path: Path) -> None:
    """Test that the engine itself refuses a discovered machine past the source's `max_machines`
    (configured machines count), whichever adapter found it: counted as `too_many_machines`."""
    from collector.core.model import MachineFound

    text = CONFIG.format(port=1, data_dir=tmp_path, extra="max_machines: 3",
                         machines="machines:\n  - {id: cfg-1, source: line, profile: cnc}\n")
    engine = Engine(load_config_text(text, "cap.yaml"), NullSink())
    for i in range(5):
        engine._process(MachineFound(machine=f"found-{i}", source="line", profile="cnc"))
    assert sorted(engine.trackers) == ["cfg-1", "found-0", "found-1"]
    assert engine.bad_input.counts[("line", "too_many_machines")] == 3


async def test_a_reload_applies_new_limits_and_rules_to_discovered_machines(tmp_path: Path) -> None:
    """Test that after a reload, `max_machines`, `tracker.max_future` and a profile's new rules apply
    to machines discovered from then on, and removed machines no longer count against the cap."""
    from collector.core.model import MachineFound

    def loaded(cap: int, when: str, machines: str, max_future: str) -> LoadedConfig:
        text = CONFIG.format(port=1, data_dir=tmp_path, extra=f"max_machines: {cap}", machines=machines)
        text = text.replace("execution == 'ACTIVE' or spindle > 50", when) + f"tracker: {{max_future: {max_future}}}\n"
        return load_config_text(text, "reload.yaml")

    configured = "machines:\n  - {id: cfg-1, source: line, profile: cnc}\n  - {id: cfg-2, source: line, profile: cnc}\n"
    engine = Engine(loaded(2, "execution == 'ACTIVE'", configured, "5m"), NullSink())
    engine._process(MachineFound(machine="found-0", source="line", profile="cnc"))
    assert "found-0" not in engine.trackers  # 2 configured machines fill the cap of 2
    await engine.apply(loaded(3, "spindle > 50", "", "1h"))  # both configured machines removed
    engine._process(MachineFound(machine="found-1", source="line", profile="cnc"))
    assert sorted(engine.trackers) == ["found-1"]
    assert engine.machines["found-1"].rules.rules[1].when == "spindle > 50"
    assert engine.fleet.time_bounds.max_future_ns == 3600 * 10**9
