"""``type: mtconnect``: one MTConnect agent, read over HTTP (its REST API) or MQTT (its MQTT sink)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.base import SourceConfig
from adapters.mqtt.config import Tls
from collector.core.durations import Duration
from collector.core.strict import Strict

STATE_TYPES = ["AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "FUNCTIONAL_MODE", "EMERGENCY_STOP"]
_TEMPLATE = re.compile(r"\{([^}]*)\}")


class MtConnectBroker(Strict):
    host: str = Field(description="Broker host name or address.", examples=["broker.local"])
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; default 1883, or 8883 with `tls`.")
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(None, description="Client id; stable, so the broker keeps the session across restarts. Default `collector-<source id>`.")
    clean_start: bool = Field(False, description="Start a fresh session. Off: the broker keeps QoS 1 messages while the collector is away.")
    session_expiry: Duration = Field(86400.0, description="MQTT 5: how long the broker keeps the session after a disconnect.")
    qos: Literal[0, 1, 2] = Field(1, description="Subscription QoS.")
    keepalive: Duration = Field(30.0, ge=5, description="Keepalive; a broker silent for 1.5x this long counts as lost.")
    connect_timeout: Duration = Field(10.0, gt=0, description="Time allowed to connect and be acknowledged.")
    username: str | None = Field(None, description="User name.")
    password: SecretStr | None = Field(None, description="Password. Use `${MQTT_PASSWORD}` or `${file:/run/secrets/mqtt}`.")
    tls: Tls | None = Field(None, description="TLS settings; without them the connection is plain TCP.")
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

    def redelivers(self) -> bool:
        # HTTP: the agent's buffer is the kept session (the next sequence is stored after each
        # commit); MQTT: the broker's persistent session.
        if self.transport == "mqtt":
            assert self.mqtt is not None
            return not self.mqtt.clean_start and self.mqtt.qos >= 1
        return True
