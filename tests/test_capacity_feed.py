"""The MQTT capacity feed against a real mosquitto, read by a plain paho subscriber and checked
against the published JSON Schema (docs/capacity-feed.schema.json)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.capacity.schema import feed_schema
from tests.capacity_helpers import PLANT, PREFIX, PRIVATE_ID, plant_running
from tests.fixtures._ports import until, wait_for
from tests.fixtures.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "capacity-feed.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()),
                                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


class Subscriber:
    """A plain paho client on ``<prefix>/#``, recording (topic, payload, retained) in order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda client, *a: client.subscribe(f"{PREFIX}/#", qos=1)
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, 10, "subscription")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for t, m, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_schema_file_is_up_to_date() -> None:
    """Test that docs/capacity-feed.schema.json is what `python -m collector.capacity.schema` prints."""
    assert json.loads(SCHEMA_FILE.read_text()) == feed_schema(), \
        "stale: .venv/bin/python -m collector.capacity.schema > docs/capacity-feed.schema.json"


async def test_feed_publishes_retained_schema_valid_messages_on_changes_with_a_last_will(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test the feed end to end: retained per-machine messages valid against the JSON Schema, a
    state change published at once (the period is a minute), nothing about the non-public
    machine, the status retained online, the last will when the connection dies, a clean
    offline on stop."""
    lathe, status = f"{PREFIX}/{PLANT}/pub-lathe", f"{PREFIX}/{PLANT}/_status"
    async with plant_running(mosquitto, tmp_path, period="60s") as plant:
        assert plant.feed is not None
        plant.set_state("pub-lathe", exec="READY")
        plant.set_state("pub-mill", exec="ACTIVE")
        plant.set_state(PRIVATE_ID, probe=5)
        await until(lambda: plant.engine.snapshot()["pub-lathe"].state.value == "idle", 10, "lathe idle")
        sub = Subscriber(mosquitto)  # joins late: what it first gets is retained
        await until(lambda: any(m["state"] == "idle" for m in sub.on(lathe)), 10, "the retained idle lathe")
        # what it first gets on the lathe's topic is the retained message (a live message of
        # another topic may come first: the mill's change or the status can race the subscription)
        assert next(retained for topic, _, retained in list(sub.messages) if topic == lathe) is True
        plant.set_state("pub-lathe", exec="ACTIVE")
        await until(lambda: any(m["state"] == "busy" for m in sub.on(lathe)), 5, "the change to busy")
        assert any(m["online"] is True for m in sub.on(status))

        # The connection dies without a DISCONNECT: the broker publishes the will.
        sock = plant.feed.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        await until(lambda: any(m["online"] is False for m in sub.on(status)), 10, "the last will")
        await until(lambda: sub.on(status)[-1]["online"] is True, 15, "online again after the reconnect")
    try:
        await until(lambda: sub.on(status)[-1]["online"] is False, 10, "offline after a clean stop")
        assert sub.on(lathe)[-1]["state"] == "offline"  # the final states went out before the goodbye
        topics = {t for t, _, _ in sub.messages}
        assert topics == {lathe, f"{PREFIX}/{PLANT}/pub-mill", status}
        for topic, message, _ in sub.messages:
            VALIDATOR.validate(message)
            assert PRIVATE_ID not in json.dumps(message), topic
    finally:
        sub.close()
