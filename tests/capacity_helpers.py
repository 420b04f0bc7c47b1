"""A small MQTT plant for the capacity tests: two public machines and one that is not, read
from a real mosquitto, with the capacity API, page and feed running on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from collector.capacity.feed import Feed, run_feed
from collector.capacity.service import Capacity
from collector.configfile import load_config_text
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto

PLANT = "plant-9"
PREFIX = "cap"
PUBLIC = ("pub-lathe", "pub-mill")
# Everything of the machine that is not public; none of it may appear in any capacity output.
PRIVATE_ID = "hidden-grinder-77"
PRIVATE_STRINGS = (PRIVATE_ID, "Secret Grinder", "coolant leak on the secret line", "secret_probe", "grinder")

CONFIG = """
site: {{plant: {plant}}}
data_dir: {data_dir}
sources:
  - id: line-1
    type: mqtt
    host: 127.0.0.1
    port: {port}
    client_id: collector-capacity-test
    clean_start: true
    subscriptions:
      - topic: "shop/{{machine}}/status"
        payload: json
        signals: {{execution: exec, alarm: alarm, secret_probe: probe}}
profiles:
  cnc:
    capabilities: {{process: turning}}
    rules:
      - {{state: down, when: "alarm", reason: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle}}
  grinder:
    rules:
      - {{state: down, when: "secret_probe > 1", reason: "coolant leak on the secret line"}}
      - {{state: idle}}
machines:
  - {{id: pub-lathe, name: Public Lathe, kind: lathe, public: true, source: line-1, profile: cnc,
     capabilities: {{max_diameter_mm: 300, materials: [steel]}}}}
  - {{id: pub-mill, name: Public Mill, kind: mill, public: true, source: line-1, profile: cnc,
     capabilities: {{process: milling}}}}
  - {{id: {private}, name: Secret Grinder, kind: grinder, source: line-1, profile: grinder}}
capacity:
  timezone: Europe/Berlin
  feed: {{enabled: {feed}, broker: line-1, topic_prefix: {prefix}, period: {period}}}
tracker: {{interval: 1s}}
http: {{host: 127.0.0.1, port: 0}}
"""


@dataclass
class Running:
    engine: Engine
    capacity: Capacity
    base: str
    feed: Feed | None
    publisher: Publisher

    def set_state(self, machine: str, **payload: object) -> None:
        self.publisher.publish(f"shop/{machine}/status", json.dumps(payload))


@asynccontextmanager
async def plant_running(broker: Mosquitto, tmp_path: Path, *, feed: bool = True,
                        period: str = "60s") -> AsyncIterator[Running]:
    loaded = load_config_text(CONFIG.format(plant=PLANT, data_dir=tmp_path, port=broker.port, private=PRIVATE_ID,
                                            feed=str(feed).lower(), prefix=PREFIX, period=period), "capacity.yaml")
    capacity = Capacity(loaded.config.capacity, tmp_path / "capacity.sqlite")
    engine = Engine(loaded, NullSink(), tick_s=0.05, backoff_initial_s=0.05, backoff_cap_s=0.5,
                    on_output=capacity.on_output)
    capacity.bind(engine)
    stop = asyncio.Event()
    publisher = Publisher(broker)
    async with serve_status(engine, loaded.config.http, capacity=capacity) as port, \
            run_feed(capacity, loaded.config) as running_feed:
        task = asyncio.create_task(engine.run(stop))
        await until(lambda: engine.stats.source_online.get("line-1") is True, what="source connected")
        try:
            yield Running(engine, capacity, f"http://127.0.0.1:{port}", running_feed, publisher)
        finally:
            stop.set()
            await task
            publisher.close()
    capacity.close()
