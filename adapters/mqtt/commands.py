"""What the sans-I/O parts of the MQTT adapter ask the transport to publish."""

from __future__ import annotations

from typing import NamedTuple


class Publish(NamedTuple):
    """A message the transport should publish: a Sparkplug rebirth request (QoS 0), a primary
    host's STATE (QoS 1, retained)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
