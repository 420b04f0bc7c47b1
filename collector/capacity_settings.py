"""The ``capacity:`` section of the config (the forecast's parameters and the MQTT feed), in the
config layer: the config and the machines import it, and nothing of the capacity package."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from adapters.mqtt.config import Tls
from collector.core.durations import Duration
from collector.core.strict import Strict
from collector.core.zones import TimeZoneName

# A capability value a buyer filters on: a word, a number, a flag, or a list of those.
Scalar = str | int | float | bool
Capability = Scalar | list[Scalar]


class FeedSettings(Strict):
    enabled: bool = Field(False, description="Publish one retained JSON message per public machine on `<topic_prefix>/<plant>/<machine>`.")
    broker: str | None = Field(None, description="Id of an `mqtt` source whose broker (host, port, credentials, TLS) the feed uses. Without it: `host`/`port` below.", examples=["line-2"])
    host: str = Field("127.0.0.1", description="Broker host when `broker` is not set.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port when `broker` is not set; default 1883.")
    username: str | None = Field(None, description="User name when `broker` is not set.")
    password: SecretStr | None = Field(None, description="Password when `broker` is not set. Use `${MQTT_PASSWORD}`.")
    tls: Tls | None = Field(None, description="TLS when `broker` is not set: e.g. straight to a platform broker's TLS listener (its CA in `ca_file`); the port then defaults to 8883.")
    topic_prefix: str = Field("capacity", description="First topic level(s) of the feed; no wildcards.")
    period: Duration = Field(120.0, gt=0, description="Every machine's message is published again at least this often (besides on every state change).")
    client_id: str | None = Field(None, description="MQTT client id; default `collector-capacity-<plant>`.")

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("expected topic levels without wildcards (+, #) or a leading/trailing '/', e.g. capacity")
        return prefix


class CapacitySettings(Strict):
    timezone: TimeZoneName = Field("UTC", description="IANA time zone whose hours of the week the forecast uses (the plant's), e.g. `Europe/Berlin`.", examples=["Europe/Berlin"])
    decay: float = Field(0.8, gt=0, le=1, description="Weight of each older week in the hour-of-week profile relative to the week after it (1: all weeks count alike).")
    threshold: float = Field(0.5, ge=0, le=1, description="An hour of the week is in a free window when the machine was idle at least this share of its known time in that hour.")
    feed: FeedSettings = Field(default_factory=FeedSettings, description="The MQTT capacity feed.")
    history_url: str | None = Field(None, description="An InfluxDB 1.x `/query` URL, with `db=`, where buyers can read the public machines' roll-ups (e.g. the platform output's database). Linked in each machine's Asset Administration Shell (its Time Series Data submodel); unset: the shell links only to this collector's capacity API.", examples=["https://platform.example/influx/query?db=platform"])

