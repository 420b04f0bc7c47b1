"""The ``influx:`` and ``outbox:`` sections of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from collector.core.durations import Duration
from collector.core.strict import Strict


class InfluxSettings(Strict):

    url: str = Field(description="Base URL of the InfluxDB server.", examples=["http://localhost:8086"])
    api: Literal["v2", "v1"] = Field(
        "v2", description="`v2`: InfluxDB 2.x, 3.x, Cloud and 1.8+ (`/api/v2/write`, token, org, bucket). `v1`: InfluxDB 1.x (`/write`, database, user/password).")
    org: str = Field("", description="v2: organization.")
    bucket: str = Field("", description="v2: bucket (on 1.8+: `database/retention_policy`).")
    token: SecretStr | None = Field(None, description="v2: API token. Use `${INFLUX_TOKEN}` or `${file:/run/secrets/influx}`.")
    create_bucket: bool = Field(False, description="v2: create the bucket at start-up if it does not exist (needs a token allowed to).")
    database: str = Field("", description="v1: database.")
    retention_policy: str = Field("", description="v1: retention policy (empty: the database's default).")
    username: str = Field("", description="v1: user name (empty: no authentication).")
    password: SecretStr | None = Field(None, description="v1: password.")
    create_database: bool = Field(False, description="v1: `CREATE DATABASE` at start-up (idempotent; needs admin rights when auth is on).")
    precision: Literal["ns", "us", "ms", "s"] = Field("ns", description="Timestamp precision sent; timestamps are rounded down to it.")
    gzip: bool = Field(False, description="Compress request bodies (worth it over a slow WAN; costs CPU on the gateway).")
    timeout: Duration = Field(10.0, gt=0, description="Timeout of one write request.")


class OutboxSettings(Strict):

    path: Path = Field(Path("data/outbox.sqlite"), description="SQLite file of the outbox (WAL mode). Default: `outbox.sqlite` in `data_dir`. Relative: to the config file's folder.")
    max_mb: float = Field(512.0, gt=0, description="Size bound of the stored points; past it the oldest points are dropped, counted and logged.")
    flush_interval: Duration = Field(1.0, gt=0, description="The sender drains at least this often: a point reaches InfluxDB within one flush interval while the link is up.")
    commit_delay: Duration = Field(1.0, ge=0, description="At a trickle, a commit waits for the sender's next send (this long at most) and takes every message that came meanwhile: one transaction and fsync per send, not per message; the points reach InfluxDB with the same send. Under load commits group by themselves. Messages are acknowledged to the broker after their commit, so a crash loses nothing the broker redelivers; from a source that cannot redeliver (OPC UA, the simulator) it loses at most this much. 0: commit every batch at once.")
    batch_size: int = Field(5000, gt=0, description="Points per write request.")
    sync: Literal["full", "normal"] = Field("full", description="`full`: every append is fsynced (survives power loss). `normal`: survives a crash of the process, not of the machine; faster on slow flash.")
    retry_initial: Duration = Field(1.0, gt=0, description="First retry delay after a failed write; doubles per failure, with jitter.")
    retry_max: Duration = Field(60.0, gt=0, description="Cap of the retry delay.")
    stop_deadline: Duration = Field(5.0, description="On stop, keep draining for at most this long; the rest stays on disk for the next start.")
