"""The paho-mqtt range in pyproject.toml is the range the private names the MQTT adapter uses exist in."""

from __future__ import annotations

import importlib.metadata

import paho.mqtt.client as paho


def test_the_private_paho_names_the_adapter_uses_exist() -> None:
    """Test that every private paho name pyproject.toml's comment lists is there in the installed paho,
    and that the installed version is inside the pinned range (2.1.0 lacks paho.mqtt._packet)."""
    import paho.mqtt._packet as packet

    version = tuple(int(p) for p in importlib.metadata.version("paho-mqtt").split(".")[:2])
    assert (2, 2) <= version < (2, 3)
    assert callable(packet.decode_publish) and hasattr(packet, "Properties")
    for name in ("_handle_publish", "_sock_recv", "_packet_queue"):
        assert callable(getattr(paho.Client, name)), name
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    assert hasattr(client, "_in_packet") and hasattr(client, "_protocol")
    assert hasattr(paho.MQTTMessage(), "_topic")
    import adapters.mqtt.adapter  # noqa: F401 (the import that failed with 2.1.0)
