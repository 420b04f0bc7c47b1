"""The ``influx:`` and ``outbox:`` sections of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from collector.durations import Duration


class InfluxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the InfluxDB server.", examples=["http://localhost:8086"])
    api: Literal["v2", "v1"] = Field(
        "v2", description="`v2` (InfluxDB 2.x, 3.x, Cloud, 1.8+) or `v1` (`/write`, InfluxDB 1.x).")
    org: str = Field("", description="v2: organization.")
    bucket: str = Field("", description="v2: bucket.")
    token: SecretStr | None = Field(None, description="v2: API token. Use `${INFLUX_TOKEN}` or `${file:/run/secrets/influx}`.")
    database: str = Field("", description="v1: database.")
    retention_policy: str = Field("", description="v1: retention policy (empty: the default).")
    username: str = Field("", description="v1: user name.")
    password: SecretStr | None = Field(None, description="v1: password.")
    timeout: Duration = Field(10.0, description="Timeout of one write request.")


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(Path("data/outbox.sqlite"), description="SQLite file of the outbox (WAL mode).")
    max_mb: float = Field(512.0, gt=0, description="Size bound; past it the oldest points are dropped and counted.")
    flush_interval: Duration = Field(1.0, description="How often the sender drains the outbox.")
    batch_size: int = Field(5000, gt=0, description="Points per write request.")
