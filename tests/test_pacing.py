"""Commits paced to the outbox's sender, end to end: mosquitto -> engine -> outbox -> influxd."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from collector.configfile import load_config_text
from collector.engine import Engine
from collector.influx import make_sink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto

NS_PER_MS = 1_000_000

CONFIG = """
site: {{plant: p1}}
data_dir: {tmp}
http: {{enabled: false}}
influx: {{url: '{url}', api: v1, database: pace, create_database: true}}
outbox: {{path: {tmp}/outbox.sqlite}}
sources:
  - id: line
    type: mqtt
    host: 127.0.0.1
    port: {port}
    client_id: pace-test
    subscriptions:
      - topic: 'factory/{{plant}}/{{line}}/{{machine}}/status'
        payload: json
        signals: {{execution: exec}}
        timestamp: ts
profiles:
  cnc:
    rules:
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle}}
machines:
  - {{id: m1, line: l1, source: line, profile: cnc}}
"""


async def test_a_trickle_is_committed_a_send_at_a_time_and_lands_exactly(mosquitto: Mosquitto, influxd: InfluxD,
                                                                         tmp_path: Path) -> None:
    """Test that state changes arriving one by one, 50 ms apart, are stored by a few commits
    (each waits for the sender's next send, which commits it first), every one of them at its
    own time with the right state, and nothing waits past a send."""
    loaded = load_config_text(CONFIG.format(tmp=tmp_path, url=influxd.url, port=mosquitto.port), "pace.yaml")
    engine = Engine(loaded, make_sink(loaded.config))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    pub = Publisher(mosquitto)
    sent: list[tuple[int, str]] = []
    try:
        await until(lambda: engine.stats.source_online.get("line") is True, what="source connected")
        commits_before = engine.stats.commits
        for i in range(20):
            ts_ms = time.time_ns() // NS_PER_MS
            state = "busy" if i % 2 == 0 else "idle"
            pub.publish("factory/p1/l1/m1/status", json.dumps({"exec": "ACTIVE" if state == "busy" else "READY",
                                                               "ts": ts_ms}), wait=False)
            sent.append((ts_ms * NS_PER_MS, state))
            await asyncio.sleep(0.05)

        def stored() -> list[tuple[int, str]]:
            rows = influxd.rows("SELECT state FROM machine_state WHERE state != 'offline'", db="pace")
            return [(r["time"], r["state"]) for r in rows]

        await until(lambda: len(stored()) >= 20, 30, "the twenty changes in influxd")
        commits = engine.stats.commits - commits_before
    finally:
        pub.close()
        stop.set()
        await task
    assert stored() == sent
    # one commit per message without pacing; the sender sends once a second
    assert 1 <= commits <= 6, commits
