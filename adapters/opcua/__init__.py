"""The ``opcua`` source type: OPC UA servers over ``asyncua`` (subscriptions, security,
OPC 40001 machine discovery). See README.md in this folder."""

from adapters.base import AdapterFactory, AdapterSpec
from adapters.opcua.config import OpcUaSource


def _load() -> AdapterFactory:
    from adapters.opcua.adapter import OpcUaAdapter

    return OpcUaAdapter


SPEC = AdapterSpec(type="opcua", config=OpcUaSource, load=_load)
