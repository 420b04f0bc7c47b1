"""The ``influx:``, ``outputs:`` and ``outbox:`` sections of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from collector.core.durations import Duration
from collector.core.strict import Strict


class InfluxSettings(Strict):

    url: str = Field(description="Base URL of the InfluxDB server.", examples=["http://localhost:8086"])
    api: Literal["v2", "v1", "victoriametrics"] = Field(
        "v2", description="`v2`: InfluxDB 2.x, 3.x, Cloud and 1.8+ (`/api/v2/write`, token, org, bucket). `v1`: InfluxDB 1.x (`/write`, database, user/password). `victoriametrics`: VictoriaMetrics' InfluxDB endpoint (`<url>/write`; `url` may carry a path: `http://vm:8428/influx`, or a cluster's tenant `http://vminsert:8480/insert/42/influx`; `database` becomes the `db` label when set).")
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
    max_mb: float = Field(512.0, gt=0, description="Size bound of each output's backlog (compressed points it has not delivered; an output's `max_mb` overrides it); past it that output's oldest points are dropped for it, counted and logged. The file holds at most the largest backlog.")
    flush_interval: Duration = Field(1.0, gt=0, description="The sender drains at least this often: a point reaches InfluxDB within one flush interval while the link is up.")
    commit_delay: Duration = Field(1.0, ge=0, description="At a trickle, a commit waits for the sender's next send (this long at most) and takes every message that came meanwhile: one transaction and fsync per send, not per message; the points reach InfluxDB with the same send. Under load commits group by themselves. Messages are acknowledged to the broker after their commit, so a crash loses nothing the broker redelivers; from a source that cannot redeliver (OPC UA, the simulator) it loses at most this much. 0: commit every batch at once.")
    batch_size: int = Field(5000, gt=0, description="Points per write request.")
    sync: Literal["full", "normal"] = Field("full", description="`full`: every append is fsynced (survives power loss). `normal`: survives a crash of the process, not of the machine; faster on slow flash.")
    retry_initial: Duration = Field(1.0, gt=0, description="First retry delay after a failed write; doubles per failure, with jitter.")
    retry_max: Duration = Field(60.0, gt=0, description="Cap of the retry delay.")
    stop_deadline: Duration = Field(5.0, description="On stop, keep draining for at most this long; the rest stays on disk for the next start.")


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class MachineFilter(Strict):
    """Which machines' points an output gets. Every condition set must hold (and); a point
    whose machine matches none of an output's filter stays off that output."""

    public: bool = Field(False, description="Only machines with `public: true` in the running config (a machine the config does not name, e.g. discovered, is not public).")
    ids: list[str] = Field(default_factory=list, description="Machine ids or globs (`cnc-*`, `press-0[1-4]`); empty: any id.",
                           examples=[["cnc-*", "lathe-07"]])
    tags: dict[str, str] = Field(default_factory=dict, description="Tag -> value or glob that the point's tag must match (`plant`, `line`, `cell`); a tag the point lacks does not match.",
                                 examples=[{"line": "L1", "plant": "shenzhen-*"}])

    @property
    def everything(self) -> bool:
        return not (self.public or self.ids or self.tags)


class OutputSettings(InfluxSettings):
    """One destination of ``outputs:``: an InfluxDB-compatible server with its own queue (a
    cursor in the outbox), retries, dead-letter, bound and metrics."""

    name: str = Field(description="Names the output in logs, metrics (`output` label) and the outbox's cursors; keep it when editing the config, or the output starts again from the oldest stored point.",
                      pattern=NAME_PATTERN, examples=["plant", "platform"])
    machines: MachineFilter = Field(default_factory=MachineFilter, description="Which machines' points this output gets (default: all). Applied when the output sends, with the running config.")
    drop_fields: list[str] = Field(default_factory=list, description="Fields removed from every point sent to this output (e.g. `reason`, which can carry alarm texts and signal values). A point left with no field is not sent.",
                                   examples=[["reason"]])
    max_mb: float | None = Field(None, gt=0, description="Bound of this output's backlog (compressed points it has not delivered); past it its oldest points are dropped for it alone, counted. Default: `outbox.max_mb`.")

    # where the output sits in the YAML (`influx` or `outputs[1]`), for messages that name the key
    _config_key: str = PrivateAttr("influx")

    @property
    def config_key(self) -> str:
        return self._config_key

    @field_validator("drop_fields")
    @classmethod
    def _no_empty(cls, fields: list[str]) -> list[str]:
        if any(not f for f in fields):
            raise ValueError("an empty field name")
        return fields


def as_output(influx: InfluxSettings, name: str = "influx") -> OutputSettings:
    """``influx:``, the shorthand: one output named ``influx`` with no filter and no field policy."""
    return OutputSettings(name=name, **influx.model_dump())


def keyed(output: OutputSettings, key: str) -> OutputSettings:
    """A copy of ``output`` that knows its YAML key (the config's own stays as loaded: pydantic
    compares private attributes too, and a reload compares the outputs)."""
    copy = output.model_copy()
    copy._config_key = key
    return copy
