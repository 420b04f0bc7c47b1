"""The thin transport: paho's network thread receives, the event loop applies each message to
the index (``call_soon_threadsafe``), so the index is only ever touched on the loop.

A clean session and a client id of its own per instance: the exchange keeps nothing across a
restart, the broker sends every retained offer on subscribe, and several exchanges never take
over each other's session.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.exchange.app import Exchange

log = logging.getLogger(__name__)
QOS = 1
RESUBSCRIBE_S = 2.0


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    prefix: str = "capacity"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # TLS when set (or when cert_file is)
    cert_file: str | None = None
    key_file: str | None = None
    protocol: str = "5"  # or "3.1.1"
    client_id: str | None = None


class Subscriber:
    def __init__(self, exchange: Exchange, settings: BrokerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.exchange = exchange
        self.settings = settings
        self.loop = loop
        self.topic = f"{settings.prefix}/+/+"
        protocol = paho.MQTTv311 if settings.protocol == "3.1.1" else paho.MQTTv5
        client_id = settings.client_id or f"exchange-{uuid.uuid4().hex[:12]}"
        if protocol == paho.MQTTv311:
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                      clean_session=True)
        else:  # MQTT 5: clean start is connect()'s (its default, MQTT_CLEAN_START_FIRST_ONLY, is clean)
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if settings.username is not None:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.ca_file is not None or settings.cert_file is not None:
            context = ssl.create_default_context(cafile=settings.ca_file)
            if settings.cert_file is not None:
                context.load_cert_chain(settings.cert_file, settings.key_file)
            self.client.tls_set_context(context)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._refused = False

    def _set(self, subscribed: bool) -> None:
        self.exchange.subscribed = subscribed

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("exchange: broker %s:%d refused the connection: %s", self.settings.host, self.settings.port,
                        reason)
            return
        log.info("exchange: connected to mqtt://%s:%d, subscribing to %s", self.settings.host, self.settings.port,
                 self.topic)
        # Deletions made while we were away are not replayed: start from nothing and let the broker
        # send every retained offer again (until the SUBACK, /healthz says not ready).
        self.loop.call_soon_threadsafe(self.exchange.index.clear)
        client.subscribe(self.topic, qos=QOS)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            # An ACL that forbids it, or a clustered broker still electing the leader of the stream
            # behind it (nats-server right after a node was lost): asked again until it is granted.
            if not self._refused:
                log.error("exchange: the broker refused the subscription to %s: %s (the ACL must let this user read "
                          "it); asking again every %g s", self.topic, failed[0], RESUBSCRIBE_S)
            self._refused = True
            self.loop.call_soon_threadsafe(self.loop.call_later, RESUBSCRIBE_S, self._resubscribe, client)
            return
        if self._refused:
            log.info("exchange: subscribed to %s", self.topic)
        self._refused = False
        self.loop.call_soon_threadsafe(self._set, True)

    def _resubscribe(self, client: paho.Client) -> None:
        if client.is_connected():
            client.subscribe(self.topic, qos=QOS)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        log.warning("exchange: disconnected from the broker (%s); reconnecting", reason)
        self.loop.call_soon_threadsafe(self._set, False)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.exchange.index.apply, msg.topic, bytes(msg.payload), time.time_ns())

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
