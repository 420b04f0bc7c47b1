"""``type: mtconnect``: one MTConnect agent, read over HTTP (its REST API) or MQTT (its MQTT sink)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from adapters.base import SourceConfig
from adapters.mqtt.config import MqttBroker
from collector.core.durations import Duration

STATE_TYPES = ["AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "FUNCTIONAL_MODE", "EMERGENCY_STOP"]
_TEMPLATE = re.compile(r"\{([^}]*)\}")


class MtConnectBroker(MqttBroker):
    """The broker an agent's MQTT sink publishes to: an MQTT source's connection settings."""

    topic_prefix: str = Field(
        "MTConnect", description=("First topic level of the agent's MQTT sink: `<prefix>/Probe/<uuid>`, `<prefix>/Current/<uuid>`, "
                                  "`<prefix>/Sample/<uuid>` (JSON documents), `<prefix>/Devices/<uuid>/Observations/<id>` "
                                  "(entity sink) and the agent's last will `<prefix>/Probe/Agent_<uuid>/Availability`. "
                                  "One agent per source: its last will takes every machine of the source offline."),
        pattern=r"^[^#+]+$")


class MtConnectSource(SourceConfig):
    type: Literal["mtconnect"] = Field(description="An MTConnect agent (e.g. cppagent): every device it describes is a machine.")
    transport: Literal["http", "mqtt"] = Field("http", description="`http`: the agent's REST API (`url`); `mqtt`: the documents and observations its MQTT sink publishes (`mqtt`).")
    url: str | None = Field(None, description="`http`: the agent's base URL (`/probe`, `/current`, `/sample` are appended).",
                            examples=["http://agent.local:5000"], pattern=r"^https?://")
    interval: Duration = Field(1.0, gt=0, description="`http`: time between two `/sample` polls when the agent has nothing more (a backlog is read at once).")
    count: int = Field(1000, ge=1, le=100_000, description="`http`: most observations asked for per `/sample` request.")
    timeout: Duration = Field(10.0, gt=0, description="`http`: how long one request may take; an agent that does not answer in time is gone (the source reconnects).")
    max_document: int = Field(16 * 1024 * 1024, gt=0, description="Largest document (bytes) read; larger ones are bad input `document_too_large`.")
    mqtt: MtConnectBroker | None = Field(None, description="`mqtt`: the broker the agent's MQTT sink publishes to.")
    devices: list[str] = Field(
        default_factory=list,
        description="Globs over device names or uuids (`VMC-*`); only matching devices are machines. Empty: every device of the agent (never the `Agent` device).",
        examples=[["VMC-*", "M12346"]])
    machine_id: str = Field(
        "{uuid}", description=("Machine id of a device: `{uuid}` (default: the one name every transport carries, and unique "
                               "across agents) or `{name}` (unique within one agent), with any fixed text around them."),
        examples=["cell-a-{name}"])
    types: list[str] = Field(
        STATE_TYPES,
        description=("Data item types read as signals, each named in snake case (`EXECUTION` -> `execution`); every "
                     "Condition is read into one signal `condition` (the worst active level). Add e.g. `PART_COUNT` or "
                     "`SPINDLE_SPEED` for rules of your own."))

    @model_validator(mode="after")
    def _check(self) -> MtConnectSource:
        if self.transport == "http" and self.url is None:
            raise ValueError("transport `http` needs `url` (the agent's base URL)")
        if self.transport == "mqtt" and self.mqtt is None:
            raise ValueError("transport `mqtt` needs `mqtt` (the broker the agent publishes to)")
        names = _TEMPLATE.findall(self.machine_id)
        if not names or any(n not in ("uuid", "name") for n in names):
            raise ValueError(f"machine_id {self.machine_id!r}: use `{{uuid}}` and/or `{{name}}`")
        self.types = [t.upper() for t in self.types]
        return self

    def silence_detected_by(self) -> tuple[str, ...]:
        # The agent marks a device's data UNAVAILABLE when it loses the machine, and the agent's own
        # loss (HTTP unreachable, its MQTT last will) takes the source's machines offline.
        return ("mtconnect_availability",)

    def catch_up_window(self) -> float:
        return self.mqtt.redelivery_window if self.mqtt is not None and self.transport == "mqtt" and self.redelivers() else 0.0

    def redelivers(self) -> bool:
        # HTTP: the agent's buffer is the kept session (the next sequence is stored after each
        # commit); MQTT: the broker's persistent session.
        if self.transport == "mqtt":
            assert self.mqtt is not None
            return not self.mqtt.clean_start and self.mqtt.qos >= 1
        return True
