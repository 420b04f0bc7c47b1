"""MTConnect over MQTT: what cppagent's MQTT sinks publish, read with the MQTT adapter's client.

The connection, its TLS and credentials, the persistent session, acknowledgements after the
commit, backpressure and catching up are the MQTT adapter's (``adapters/mqtt/adapter.py``),
unchanged: this subclass only subscribes to ``<topic_prefix>/#`` and hands each message to the
MTConnect decoder instead of the topic-template one. Topics (cppagent 2.x):

- ``<prefix>/Probe/<uuid>``: the device's MTConnectDevices (JSON): announces the machine.
- ``<prefix>/Current/<uuid>`` (every 10 s) and ``<prefix>/Sample/<uuid>`` (every 500 ms):
  MTConnectStreams (JSON, version 1 or 2). Each observation counts once, by its sequence.
- ``<prefix>/Devices/<uuid>/Observations/<dataItemId>``: one observation (MqttEntitySink).
- ``<prefix>/Probe/Agent_<uuid>/Availability``: the agent's last will: ``UNAVAILABLE`` takes
  every machine of the source offline, ``AVAILABLE`` brings the source back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from adapters.base import AdapterContext, BoundMachine, SourceConfig
from adapters.mqtt.adapter import MqttAdapter
from adapters.mqtt.config import MqttBroker, MqttSource, Subscription
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.decoder import MtConnectDecoder
from collector.core.model import now_ns


def broker_source(config: MtConnectSource) -> MqttSource:
    """The MQTT source the MQTT adapter connects with: the broker settings of ``config.mqtt``."""
    b = config.mqtt
    assert b is not None
    return MqttSource(
        id=config.id, type="mqtt", max_machines=config.max_machines, max_payload=config.max_document,
        **{name: getattr(b, name) for name in MqttBroker.model_fields},
        # Subscribed to as it is (`<prefix>/#`), never used to decode (see _on_publish).
        subscriptions=[Subscription(topic=f"{b.topic_prefix.rstrip('/')}/#", payload="value", signal="mtconnect",
                                    machine_id="agent")])


class MtConnectMqttAdapter(MqttAdapter):
    def __init__(self, config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> None:
        if not isinstance(config, MtConnectSource) or config.mqtt is None:
            raise TypeError("MtConnectMqttAdapter needs an MtConnectSource with `mqtt`")
        super().__init__(broker_source(config), machines, context)
        self.mtconnect = MtConnectDecoder(config, machines, context.bad_input)
        self.prefix = config.mqtt.topic_prefix.rstrip("/")

    async def __aenter__(self) -> Self:
        self.mtconnect.opened_ns = now_ns()
        await super().__aenter__()
        return self

    def _feed(self, topic: str, payload: bytes) -> None:
        """Each message to the MTConnect decoder, not the topic templates."""
        if len(payload) > self.config.max_payload:
            self.mtconnect.report("payload_too_large", f"{topic}: {len(payload)} bytes")
            return
        events = self.mtconnect.feed_mqtt(topic, bytes(payload), now_ns())
        if events:
            self.events.extend(events)
