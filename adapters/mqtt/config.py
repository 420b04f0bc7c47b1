"""``type: mqtt``: the config model of an MQTT source (broker connection and subscriptions)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.base import SourceConfig
from collector.core.durations import Duration
from collector.core.strict import Strict

_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
SPARKPLUG_FIELDS = frozenset({"group", "edge_node", "device", "machine"})
log = logging.getLogger(__name__)




class Tls(Strict):
    ca_file: Path | None = Field(None, description="CA certificate(s) (PEM) that signed the broker's certificate; default: the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM), for brokers that require one.")
    key_file: Path | None = Field(None, description="Private key (PEM) of `cert_file`.")
    insecure: bool = Field(False, description="Skip the broker certificate and host name checks. Labs only: logged loudly as a warning at every connect.")

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: `cert_file` and `key_file` go together")
        return self


class Discover(Strict):
    match: str = Field(description="Glob over the machine id from the topic (`cnc-*`, `*`).", examples=["cnc-*"])
    profile: str = Field(description="Profile of machines whose id matches.", examples=["lathe"])


class Subscription(Strict):
    topic: str = Field(
        description=("Topic template: `{name}` segments match one level and name it (`{machine}` is the machine "
                     "id; `{line}`, `{cell}` become tags; `{signal}` names the signal of a `value` payload), `+` "
                     "matches a level without naming it, `#` at the end matches the rest. For `sparkplug_b`: "
                     "`spBv1.0/{group}/+/{edge_node}/#` or narrower; the machine is the device (else the edge node)."),
        examples=["factory/{plant}/{line}/{machine}/status"])
    payload: Literal["json", "value", "sparkplug_b"] = Field(
        "json", description="`json` (signals picked by path), `value` (the payload is one number, boolean or string), `sparkplug_b`.")
    signals: dict[str, str] = Field(
        default_factory=dict,
        description=("Signal name -> where its value is: `json`: a JMESPath path (`exec`, `spindle.speed`, "
                     "`alarms[0]`); `sparkplug_b`: the metric name. Empty: `json` uses the machine's profile "
                     "signals as paths, `sparkplug_b` passes every metric under its own name."),
        examples=[{"execution": "exec", "spindle_rpm": "spindle.speed", "alarm": "alarms[0]"}])
    signal: str | None = Field(None, description="`value` payloads: the signal name, when the topic has no `{signal}` segment.")
    machine_id: str = Field("{machine}", description="Machine id built from the topic's named segments.",
                            examples=["{plant}-{machine}"])
    timestamp: str | None = Field(None, description="`json`: path of the source timestamp; without it (or when it is missing) the arrival time counts.",
                                  examples=["ts"])
    timestamp_format: Literal["auto", "s", "ms", "us", "ns", "iso"] = Field(
        "auto", description="Unit of `timestamp`: `auto` tells epoch s/ms/us/ns apart by size and reads strings as ISO 8601.")
    discover: list[Discover] = Field(
        default_factory=list,
        description=("Register machines seen in topics automatically, the first matching pattern choosing the "
                     "profile. Empty: only the machines the config lists under this source; others count as "
                     "bad input `unknown_machine`."))

    def fields(self) -> list[str]:
        return [m.group(1) for seg in self.topic.split("/") if (m := _FIELD.match(seg))]

    @model_validator(mode="after")
    def _check(self) -> Subscription:
        segments = self.topic.split("/")
        for i, seg in enumerate(segments):
            if "#" in seg and (seg != "#" or i != len(segments) - 1):
                raise ValueError(f"topic {self.topic!r}: `#` only as the whole last level")
            if "+" in seg and seg != "+":
                raise ValueError(f"topic {self.topic!r}: `+` only as a whole level")
            if ("{" in seg or "}" in seg) and not _FIELD.match(seg):
                raise ValueError(f"topic {self.topic!r}: a named level is a whole level like `{{machine}}`")
        names = self.fields()
        if len(set(names)) != len(names):
            raise ValueError(f"topic {self.topic!r}: a name appears twice")
        if self.payload == "sparkplug_b":
            if not segments or segments[0] != "spBv1.0":
                raise ValueError(f"topic {self.topic!r}: Sparkplug B topics start with `spBv1.0/`")
        elif "machine" not in names and self.machine_id == "{machine}":
            raise ValueError(f"topic {self.topic!r}: name the machine level `{{machine}}` (or set `machine_id`)")
        known = set(names) | (SPARKPLUG_FIELDS if self.payload == "sparkplug_b" else set())
        for name in re.findall(r"\{([^}]*)\}", self.machine_id):
            if name not in known:
                raise ValueError(f"machine_id {self.machine_id!r}: {{{name}}} is not a named level of the topic "
                                 f"(named: {', '.join(sorted(known)) or 'none'})")
        if self.payload == "value" and self.signal is None and "signal" not in names:
            raise ValueError("payload `value`: set `signal` or name a topic level `{signal}`")
        if self.payload == "json" and self.discover and not self.signals:
            raise ValueError("`discover` with payload `json` needs `signals`: discovered machines have no configured paths")
        if self.payload != "json" and self.timestamp is not None:
            raise ValueError("`timestamp` is a JSON path: only for payload `json`")
        return self


class StatusTopic(Strict):
    topic: str = Field(description="Topic template of a status / last-will topic; `{machine}` (or `machine_id`) names the machine. Without a machine level, every machine of the source.",
                       examples=["factory/{plant}/{line}/{machine}/lwt"])
    machine_id: str = Field("{machine}", description="Machine id built from the topic's named levels.")
    online: list[str] = Field(["online", "ONLINE", "1", "true"], description="Payloads that mean online.")
    offline: list[str] = Field(["offline", "OFFLINE", "0", "false"], description="Payloads that mean offline (the machine goes `offline` at once). A Sparkplug 3.0 STATE payload (`{\"online\": false, ...}`) is understood as well.")


class MqttBroker(Strict):
    """Where and how to connect to an MQTT broker: every source that reads one has these."""

    host: str = Field(description="Broker host name or address.", examples=["broker.local"])
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; default 1883, or 8883 with `tls`.")
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(None, description="Client id; stable, so the broker keeps the session across restarts. Default `collector-<source id>`.")
    clean_start: bool = Field(False, description="Start a fresh session. Off: the broker keeps subscriptions and queues QoS 1 messages while the collector is away.")
    session_expiry: Duration = Field(86400.0, description="MQTT 5: how long the broker keeps the session after a disconnect.")
    qos: Literal[0, 1, 2] = Field(1, description="Subscription QoS; 1 so no message is lost across reconnects.")
    redelivery_window: Duration = Field(35.0, description=(
        "With a kept session (`clean_start` off, `qos` 1 or 2): after each connect that resumes the session, readings "
        "are held and sorted this long (and 5 s past the last redelivered message seen meanwhile), because that is "
        "when a broker delivers again what it sent before a crash or a lost connection, after newer messages: "
        "NATS does so only once its `ack_wait` (30 s by default) has passed. 35 s covers NATS's default; mosquitto "
        "redelivers at once and needs none. Costs this much in time to visible after a reconnect, nothing otherwise. "
        "Only for readings with payload timestamps (arrival-stamped ones are dated when read, held or not). "
        "0: none (a late redelivery is then counted `out_of_order` and lost). Set it above your broker's redelivery "
        "delay (NATS: `mqtt.ack_wait`)."))
    keepalive: Duration = Field(30.0, ge=5, description="Keepalive; a broker silent for 1.5x this long counts as lost.")
    connect_timeout: Duration = Field(10.0, gt=0, description="Time allowed to connect and be acknowledged.")
    username: str | None = Field(None, description="User name.")
    password: SecretStr | None = Field(None, description="Password. Use `${MQTT_PASSWORD}` or `${file:/run/secrets/mqtt}`.")
    tls: Tls | None = Field(None, description="TLS settings; without them the connection is plain TCP.")


class MqttSource(MqttBroker, SourceConfig):
    type: Literal["mqtt"] = Field(description="An MQTT broker: JSON, plain-value and Sparkplug B topics.")
    shared_group: str | None = Field(
        None, description="Refused: a shared subscription splits each machine's messages across collectors (the broker hands the messages of one topic to the members in turn). Scale out with the top-level `shard:` instead.")
    max_payload: int = Field(262_144, gt=0, description="Payloads larger than this many bytes are dropped as bad input `payload_too_large`.")
    rebirth: bool = Field(False, description="Sparkplug B: after a sequence gap or an unknown alias, ask the edge node for a rebirth (NCMD `Node Control/Rebirth`). Always on with `host_id`.")
    host_id: str | None = Field(
        None, description=("Sparkplug B: act as the Primary Host Application with this id, for edge nodes that wait "
                           "for their primary host before they send a birth. Once subscribed the collector publishes "
                           "its STATE birth (retained, QoS 1; a new one at every connect), with a will that marks it "
                           "offline if it vanishes, and publishes offline itself on a clean stop; it asks for rebirths "
                           "as `rebirth` does. With `shard:`, only shard 0 takes the role (a STATE topic holds one "
                           "value: another shard's stop would tell every edge node the host is gone). `collector "
                           "check` never takes it. No `/`, `+` or `#`."),
        examples=["plant-3-availability"])
    sparkplug_version: Literal["3.0", "2.2"] = Field(
        "3.0", description=("The STATE form of `host_id`: `3.0` publishes `{\"online\": true|false, \"timestamp\": <ms of "
                            "the connect>}` on `spBv1.0/STATE/<host_id>`; `2.2` publishes `ONLINE`/`OFFLINE` on "
                            "`STATE/<host_id>`, for edge nodes of the older spec. One form, not both: a connection "
                            "has one will, and a form without a will would stay online when the collector dies. "
                            "Decoding is the same for both."))
    subscriptions: list[Subscription] = Field(min_length=1, description="Topic trees to read, each with its payload kind and signal mapping.")
    status: list[StatusTopic] = Field(default_factory=list, description="Status / last-will topics that take machines offline at once.")

    @model_validator(mode="after")
    def _check(self) -> MqttSource:
        if self.shared_group is not None:
            raise ValueError(
                "shared_group: a shared subscription splits a machine across collectors (the broker hands the "
                "messages of one topic to the group's members in turn, so each sees part of every machine's "
                "changes); remove it and give each collector `shard: {index: N, count: M}` instead")
        if self.host_id is not None:
            if not self.host_id or any(c in self.host_id for c in "/+#\0"):
                raise ValueError(f"host_id {self.host_id!r}: one topic level, so not empty and without `/`, `+`, `#`")
            if not any(s.payload == "sparkplug_b" for s in self.subscriptions):
                raise ValueError("host_id: the Sparkplug host role needs a `sparkplug_b` subscription")
        return self

    def in_shard(self, index: int) -> MqttSource:
        """The source as shard ``index`` runs it: the primary host role stays with shard 0."""
        if index == 0 or self.host_id is None:
            return self
        log.info("source %s: shard %d leaves the Sparkplug primary host role (host_id %r) to shard 0",
                 self.id, index, self.host_id)
        return self.model_copy(update={"host_id": None})

    def redelivers(self) -> bool:
        return not self.clean_start and self.qos >= 1

    def catch_up_window(self) -> float:
        return self.redelivery_window if self.redelivers() else 0.0

    def stamps_at_source(self) -> bool:
        return any(s.timestamp is not None or s.payload == "sparkplug_b" for s in self.subscriptions)

    def silence_detected_by(self) -> tuple[str, ...]:
        # A status / last-will topic, or Sparkplug's NDEATH/DDEATH when every subscription is
        # Sparkplug (with JSON ones too, a machine may be one of those: nothing to go by).
        found: tuple[str, ...] = ("status_topic",) if self.status else ()
        if self.subscriptions and all(s.payload == "sparkplug_b" for s in self.subscriptions):
            found += ("sparkplug_death",)
        return found
