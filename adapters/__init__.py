"""The adapter registry: the config's ``type`` -> (config model, adapter).

One explicit table, no import-time magic. To add a protocol: create ``adapters/<type>/`` with a
config model and an adapter, export ``SPEC`` from its ``__init__``, and list it here.
"""

from __future__ import annotations

from adapters.base import AdapterSpec
from adapters.mqtt import SPEC as MQTT
from adapters.mtconnect import SPEC as MTCONNECT
from adapters.opcua import SPEC as OPCUA
from adapters.simulate import SPEC as SIMULATE

REGISTRY: dict[str, AdapterSpec] = {spec.type: spec for spec in (SIMULATE, OPCUA, MQTT, MTCONNECT)}

__all__ = ["REGISTRY", "AdapterSpec"]
