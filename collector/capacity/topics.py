"""The capacity feed's topic names, shared by the plant side (``feed``) and the platform side
(``collector.exchange``), which must agree on them and must not import the feed's MQTT client."""

from __future__ import annotations

import re

STATUS = "_status"  # the last level of a plant's status topic
_TOPIC_UNSAFE = re.compile(r"[/+#\x00]")


def level(text: str) -> str:
    """One topic level: ``/``, ``+``, ``#`` would split it or make it a wildcard."""
    return _TOPIC_UNSAFE.sub("_", text) or "_"


def machine_topic(prefix: str, plant: str, machine: str) -> str:
    return f"{prefix}/{level(plant)}/{level(machine)}"


def status_topic(prefix: str, plant: str) -> str:
    return f"{prefix}/{level(plant)}/{STATUS}"
