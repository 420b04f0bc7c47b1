"""The ``mtconnect`` source type: an MTConnect agent over HTTP (its REST API) or MQTT (its MQTT sinks)."""

from collections.abc import Sequence

from adapters.base import Adapter, AdapterContext, AdapterFactory, AdapterSpec, BoundMachine, SourceConfig
from adapters.mtconnect.config import MtConnectSource


def _open(config: SourceConfig, machines: Sequence[BoundMachine], context: AdapterContext) -> Adapter:
    assert isinstance(config, MtConnectSource)
    if config.transport == "mqtt":
        from adapters.mtconnect.agent_mqtt import MtConnectMqttAdapter

        return MtConnectMqttAdapter(config, machines, context)
    from adapters.mtconnect.agent_http import MtConnectHttpAdapter

    return MtConnectHttpAdapter(config, machines, context)


def _load() -> AdapterFactory:
    return _open


SPEC = AdapterSpec(type="mtconnect", config=MtConnectSource, load=_load)
