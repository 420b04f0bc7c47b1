"""paho's MQTT 5 ``Properties``, without its per-packet set-up cost.

paho builds a ``Properties`` object for every PUBLISH it decodes: the constructor rebuilds two
tables of 27 property names and types, and ``unpack`` first clears every name with a string
replace and a ``hasattr`` each. That was about a quarter of the MQTT drain's time
(bench/mqtt_ingest.py, cProfile) for packets that, from most publishers, carry no property at
all. ``LeanProperties`` shares the tables (they are constants), clears only what is set, and
reads an empty property block in one step; anything else goes to paho's own code, unchanged.

paho's packet decoder looks the class up as ``paho.mqtt._packet.Properties``; ``install``
points it here. paho is pinned below 3 (pyproject.toml), and tests/test_mqtt_lean_properties.py
fails if that lookup or the results change.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt._packet as paho_packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_PRIVATE = frozenset({"packetType", "types", "names", "properties"})
_TEMPLATE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class LeanProperties(Properties):
    def __init__(self, packetType: int) -> None:
        set_ = object.__setattr__
        set_(self, "packetType", packetType)
        set_(self, "types", _TEMPLATE.types)
        set_(self, "names", _TEMPLATE.names)
        set_(self, "properties", _TEMPLATE.properties)

    def clear(self) -> None:
        for name in [n for n in vars(self) if n not in _PRIVATE]:
            delattr(self, name)

    def unpack(self, buffer: Any) -> tuple[Properties, int]:
        if buffer[:1] == b"\x00":  # no properties: a length of 0 in one byte
            self.clear()
            return self, 1
        result: tuple[Properties, int] = super().unpack(buffer)  # type: ignore[no-untyped-call]
        return result


def install() -> None:
    """Make paho's packet decoder build ``LeanProperties`` (idempotent)."""
    if getattr(paho_packet, "Properties", None) is not LeanProperties:
        setattr(paho_packet, "Properties", LeanProperties)  # noqa: B010 (not exported: mypy refuses the plain form)
