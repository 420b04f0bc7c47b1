"""For ``collector check`` on MQTT: what is published on the broker that no subscription of the
source matches. A wrong topic template gets no message at all, so the adapter cannot see the
mistake; a second client subscribed to ``#`` can (``$SYS`` and Sparkplug commands aside)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Any

import paho.mqtt.client as paho

from adapters.mqtt.client import Broker, make_client
from adapters.mqtt.config import MqttSource
from adapters.mqtt.topics import TopicTemplate

MAX_TOPICS = 10_000  # a busy broker's topic tree is not kept whole; a few names make the point
SHOWN = 5


class TopicSpy:
    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.topics: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._broker = Broker.of(source)
        client = self._client = make_client(self._broker, f"collector-check-spy-{os.getpid()}",
                                            f"check of source {source.id}", protocol="3.1.1", clean_session=True)
        client.on_connect = lambda c, *_: c.subscribe("#", qos=0)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message

    async def start(self, wait_s: float = 5.0) -> None:
        self._client.connect_async(*self._broker.address, keepalive=30)
        self._client.loop_start()
        await asyncio.to_thread(self._subscribed.wait, wait_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            if len(self.topics) < MAX_TOPICS:
                with contextlib.suppress(UnicodeDecodeError):
                    self.topics.add(msg.topic)

    def unmatched(self) -> list[str]:
        templates = [TopicTemplate(s.topic) for s in self.source.subscriptions]
        templates += [TopicTemplate(s.topic) for s in self.source.status]
        with self._lock:
            topics = sorted(self.topics)
        return [t for t in topics
                if not any(tp.match(t.split("/")) is not None for tp in templates)
                and not t.startswith("$") and "/NCMD/" not in t and "/DCMD/" not in t]

    def unmatched_hint(self) -> str:
        """One line: the broker's topics that no subscription matches, or '' when none were seen."""
        topics = self.unmatched()
        if not topics:
            return ""
        shown = ", ".join(topics[:SHOWN]) + (f" … ({len(topics)} in all)" if len(topics) > SHOWN else "")
        wanted = ", ".join(s.topic for s in self.source.subscriptions)
        return f"topics on the broker that no subscription matches: {shown}; the subscriptions are: {wanted}"
