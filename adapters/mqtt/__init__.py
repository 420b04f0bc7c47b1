"""The ``mqtt`` source type: JSON, plain-value and Sparkplug B topics over MQTT 3.1.1 / 5."""

from adapters.base import AdapterFactory, AdapterSpec
from adapters.mqtt.config import MqttSource


def _load() -> AdapterFactory:
    from adapters.mqtt.adapter import MqttAdapter

    return MqttAdapter


SPEC = AdapterSpec(type="mqtt", config=MqttSource, load=_load)
