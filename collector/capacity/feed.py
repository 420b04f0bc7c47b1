"""The MQTT capacity feed: one retained JSON message per public machine on
``<prefix>/<plant>/<machine>``, QoS 1, on every state change of the machine and at least every
``period``; and ``<prefix>/<plant>/_status`` = ``{"online": true|false}``, retained, whose
``false`` is also the connection's last will, so a subscriber learns that the feed is gone.

paho's own network thread keeps the connection and reconnects (a publisher with nothing to
read needs no more); publishing from the event loop is thread-safe in paho 2. Messages made
while the broker is away wait in paho's queue (bounded) and go out on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho

from adapters.mqtt.client import Broker, make_client
from collector.capacity.records import iso
from collector.capacity.schema import FeedStatus
from collector.capacity.service import Capacity
from collector.capacity.topics import level, machine_topic, status_topic
from collector.config import Config

log = logging.getLogger(__name__)
QOS = 1
QUEUE_MAX = 2_000


def _status(plant: str, online: bool) -> bytes:
    return FeedStatus(plant=plant, online=online, updated=iso(time.time_ns())).model_dump_json().encode()


def _client(config: Config, client_id: str) -> tuple[paho.Client, str, int]:
    feed = config.capacity.feed
    broker = Broker(feed.host, feed.port, feed.username, feed.password, feed.tls)
    if feed.broker is not None:  # that source's broker, credentials, TLS and protocol
        broker = Broker.of(next(s for s in config.sources if s.id == feed.broker))  # type: ignore[arg-type]
    client = make_client(broker, client_id, "capacity feed")
    client.reconnect_delay_set(1, 30)
    client.max_queued_messages_set(QUEUE_MAX)
    return client, *broker.address


class Feed:
    def __init__(self, capacity: Capacity, config: Config) -> None:
        self.capacity = capacity
        self.settings = config.capacity.feed
        self.plant = config.site.plant
        self.prefix = self.settings.topic_prefix
        self.client, self.host, self.port = _client(
            config, self.settings.client_id or f"collector-capacity-{level(self.plant)}")
        # The will covers the site's plant; machines of other plants share this connection.
        self.client.will_set(status_topic(self.prefix, self.plant), _status(self.plant, False), qos=QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.published = 0
        self.refused = 0

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("capacity feed: broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        log.info("capacity feed on mqtt://%s:%d/%s/", self.host, self.port, self.prefix)
        for plant in {self.plant, *self.capacity.plants()}:
            client.publish(status_topic(self.prefix, plant), _status(plant, True), qos=QOS, retain=True)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # MQTT 5 says why a QoS 1 message was refused (3.1.1 cannot: the broker drops it silently).
        # A platform broker's ACL refuses a plant's offers under a name that is not its login:
        # without this line the plant would just be missing at the exchange.
        if getattr(reason, "is_failure", False):
            self.refused += 1
            if self.refused == 1:
                log.error("capacity feed: broker %s:%d refused a message: %s (is the MQTT user allowed to "
                          "publish under %s/%s/? on a platform broker the user must be the plant's name)",
                          self.host, self.port, reason, self.prefix, level(self.plant))

    def publish(self, only: set[str] | None = None) -> None:
        for rec in self.capacity.records(only):
            self.client.publish(machine_topic(self.prefix, rec["plant"], rec["machine"]),
                                json.dumps(rec, separators=(",", ":")).encode(), qos=QOS, retain=True)
            self.published += 1

    async def run(self) -> None:
        period = self.settings.period
        next_full = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= next_full:
                self.publish()
                next_full = loop.time() + period
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the task's cancellation.
                async with asyncio.timeout(max(0.0, next_full - loop.time())):
                    await self.capacity.changed.wait()
            except TimeoutError:
                continue
            self.capacity.changed.clear()
            changed, self.capacity.changed_machines = self.capacity.changed_machines, set()
            self.publish(changed)

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """A clean goodbye: the status says offline (a clean disconnect sends no will)."""
        for plant in {self.plant, *self.capacity.plants()}:
            info = self.client.publish(status_topic(self.prefix, plant), _status(plant, False), qos=QOS, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def run_feed(capacity: Capacity, config: Config) -> AsyncIterator[Feed | None]:
    """Publish while the block runs (nothing when ``capacity.feed.enabled`` is off)."""
    if not config.capacity.feed.enabled:
        yield None
        return
    feed = Feed(capacity, config)
    feed.start()
    task = asyncio.create_task(feed.run(), name="capacity-feed")
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        feed.publish()  # the final states (offline after the engine's stop) go out before the goodbye
        await asyncio.to_thread(feed.stop)
