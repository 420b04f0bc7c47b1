"""The configuration models: one YAML file, every field declared once with its description.

The README's config reference (docs/CONFIG.md) and the JSON Schema (`collector schema`) are
generated from these models. Loading, `${VAR}` substitution and error messages with file and
line live in ``collector.configfile``.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters import REGISTRY
from adapters.base import SourceConfig
from collector.capacity_settings import Capability, CapacitySettings
from collector.core.durations import Duration
from collector.core.model import State
from collector.core.strict import Strict
from collector.influx.config import InfluxSettings, OutboxSettings, OutputSettings, as_output, keyed
from dashboards.config import DashboardSettings

# The `type` field discriminates the registered source models (see adapters/__init__.py).
# Built from the registry at import time; mypy sees the common base class.
if TYPE_CHECKING:
    SourceSettings = SourceConfig
else:
    SourceSettings = Annotated[Union[tuple(spec.config for spec in REGISTRY.values())],  # noqa: UP007
                               Field(discriminator="type")]




class Site(Strict):
    plant: str = Field(description="Plant name: the `plant` tag of every machine unless a machine sets its own.",
                       examples=["shenzhen-1"])
    name: str = Field("", description="Human-readable site name, for logs and boards.")


class Rule(Strict):
    state: State = Field(description="The state this rule yields.")
    when: str | None = Field(
        None,
        description=("Condition over the machine's signals (safe expression: `and`, `or`, `not`, "
                     "comparisons, `in [...]`). Omit it on the last rule: the default."),
        examples=["execution == 'ACTIVE' or spindle_rpm > 50"])
    reason: str | None = Field(None, description="Reason written with the change; default: the rule and the values it saw.")

    @field_validator("when")
    @classmethod
    def _parses(cls, when: str | None) -> str | None:
        from collector.rules import compile_rule

        if when is not None:
            compile_rule(State.IDLE, when)  # raises RuleError (a ValueError) with what is wrong
        return when


class Profile(Strict):
    extends: str | None = Field(
        None, description="A built-in (`opc40001`, `packml`, `mtconnect`) or another profile whose rules and signals this one starts from.")
    signals: dict[str, str] = Field(
        default_factory=dict,
        description=("Signal name -> source address template. `{id}`, `{name}`, `{line}` and the "
                     "machine's `vars` are filled in per machine."),
        examples=[{"execution": "nsu=urn:acme:cnc;s={node}.Execution"}])
    rules: list[Rule] | None = Field(None, description="Ordered rules, first match wins; the last should have no `when`.")
    debounce: Duration | None = Field(None, description="Overrides `tracker.debounce` for machines of this profile.")
    stale_after: Duration | None = Field(None, description="Overrides `tracker.stale_after` for machines of this profile.")
    capabilities: dict[str, Capability] = Field(default_factory=dict, description="What machines of this profile offer (free-form; a machine's own keys win). Shared in the capacity feed of public machines.",
                                                examples=[{"process": "turning", "max_diameter_mm": 300}])


class Machine(Strict):
    id: str = Field(description="Machine id: the `machine` tag.", examples=["cnc-07"])
    name: str = Field("", description="Display name.")
    plant: str | None = Field(None, description="Plant tag; default `site.plant`.")
    line: str = Field("", description="Line tag.")
    cell: str = Field("", description="Optional cell tag.")
    kind: str = Field("", description="Machine type shown on the capacity board (e.g. `lathe`).")
    nameplate: dict[str, str] = Field(
        default_factory=dict, description="What the machine is, for buyers and the Digital Nameplate: `manufacturer`, `model`, `serial_number`, `product_instance_uri`... OPC UA discovery fills it from the machine's DI `Identification`.",
        examples=[{"manufacturer": "ACME", "model": "VMC 500", "serial_number": "SN-1001"}])
    public: bool = Field(False, description="May appear by name on the shared capacity board, the capacity API, page and MQTT feed. Nothing of a machine without it leaves the collector through them.")
    capabilities: dict[str, Capability] = Field(default_factory=dict, description="What the machine offers, for buyers to filter on (`?capability.process=turning`); added to its profile's.",
                                                examples=[{"process": "turning", "max_diameter_mm": 300, "materials": ["steel", "aluminium"]}])
    source: str = Field(description="Id of the source that reads this machine.")
    profile: str = Field(description="Profile name: one of `profiles` or a built-in.")
    vars: dict[str, str] = Field(default_factory=dict, description="Values for the profile's signal templates.",
                                 examples=[{"node": "CNC07"}])
    signals: dict[str, str] = Field(default_factory=dict, description="Signal addresses that override or add to the profile's.")
    debounce: Duration | None = Field(None, description="Overrides the profile's and `tracker.debounce`.")
    stale_after: Duration | None = Field(None, description="Overrides the profile's and `tracker.stale_after`.")


class TrackerSettings(Strict):
    debounce: Duration = Field(0.0, description="A new state counts once it held this long; its start stays the moment it began.")
    stale_after: Duration | None = Field(
        None, description="No reading for this long makes a machine `offline` from its last reading on. Off by default: OPC UA subscriptions only report changes; set it for sources that publish periodically.")
    interval: Duration = Field(60.0, gt=0, description="Roll-up interval of `machine_availability`, aligned to the wall clock.")
    lateness: Duration = Field(2.0, ge=0, description="How late a reading stamped by its source (payload `timestamp`, Sparkplug, OPC UA source time) may arrive and still count at its own time: for such sources, debounce, staleness and roll-ups wait this long behind the clock (state changes are written at once). Covers transit and clock skew; a later reading is placed at the time already rolled up and counted as `clamped`.")
    max_future: Duration = Field(300.0, ge=0, description="A source timestamp further ahead of the collector's clock than this is bad input `future_timestamp`: the reading is taken at arrival time (a gateway whose clock runs ahead stays tracked; see docs/RELIABILITY.md).")
    max_past: Duration | None = Field(604800.0, gt=0, description="A source timestamp older than this (default 7 days) is bad input `too_old` and dropped: the tracker has moved past it. `null`: no bound.")
    max_gap: Duration = Field(86400.0, gt=0, description="Time without any tracking longer than this (a long stop, a clock jump) is bridged in one step: the machine goes `offline` at the gap's start and roll-ups are written only for the gap's last `max_gap`, so no gap costs work or memory in proportion to its length.")


class HttpSettings(Strict):
    enabled: bool = Field(True, description="Serve /healthz, /readyz, /metrics and /api/v1/machines.")
    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(9180, ge=0, le=65535, description="Listen port (0: any free port).")
    token: SecretStr | None = Field(None, description="When set, every /api/* request needs `Authorization: Bearer <token>`. Use `${API_TOKEN}`.")


class ClockSettings(Strict):
    require_sync: bool | None = Field(
        None, description=("Wait until the kernel reports the clock synchronized (NTP; `adjtimex`, as `timedatectl` "
                           "shows it) before reading any source, so nothing is written dated at a boot clock's guess. "
                           "Meanwhile /readyz answers 503 with the reason. `null`: on when started as a systemd "
                           "notify service (`$NOTIFY_SOCKET` set, as deploy/machine-collector.service does on a "
                           "gateway), off otherwise."))
    sync_timeout: Duration = Field(
        300.0, ge=0, description=("How long `require_sync` waits. Past it the collector starts anyway and says so "
                                  "(log, /readyz body, `collector_clock_synchronized` 0); a later sync is a clock "
                                  "step like any other."))
    step_threshold: Duration = Field(
        0.5, gt=0, description=("A change of the wall clock against the monotonic clock larger than this is a step: "
                                "logged, counted (`collector_clock_steps_total`) and never taken as elapsed time. "
                                "Smaller ones are slewed (500 ppm at most)."))

    def sync_required(self, environ: Mapping[str, str]) -> bool:
        """``require_sync``, with ``null`` decided by whether systemd started us as its unit does.
        (Not ``$INVOCATION_ID``: every process a service starts inherits it, a CI runner's too.)"""
        if self.require_sync is not None:
            return self.require_sync
        return bool(environ.get("NOTIFY_SOCKET"))


class Shard(Strict):
    """One of ``count`` collectors that split a plant between them by machine: each keeps the
    machines whose id hashes to its ``index`` (CRC-32 of the id, modulo ``count``). Every
    collector reads every message and drops those of other shards, so a machine's readings,
    and a Sparkplug edge node's births, aliases and sequence numbers, are never split."""

    index: int = Field(ge=0, description="This collector's shard, 0 to count-1.")
    count: int = Field(ge=1, description="How many collectors share the plant (the same number on each).")

    @model_validator(mode="after")
    def _in_range(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(f"index: {self.index} is not below count {self.count} (shards are 0 to count-1)")
        return self

    def owns(self, machine: str) -> bool:
        return zlib.crc32(machine.encode()) % self.count == self.index


class Config(BaseSettings):
    """The whole configuration. Values come from the YAML file; environment variables
    ``COLLECTOR_<SECTION>__<FIELD>`` override them (e.g. ``COLLECTOR_INFLUX__TOKEN``)."""

    model_config = SettingsConfigDict(env_prefix="COLLECTOR_", env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init values), not the other way round.
        return env_settings, init_settings

    site: Site = Field(description="Where this collector runs.")
    sources: list[SourceSettings] = Field(description="Where machine signals come from; `type` picks the adapter.")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="Named signal->state mappings, written once, used by many machines.")
    machines: list[Machine] = Field(default_factory=list, description="The machines to track.")
    tracker: TrackerSettings = Field(default_factory=TrackerSettings, description="State tracking defaults.")
    influx: InfluxSettings | None = Field(None, description="InfluxDB to write to: the shorthand for one output named `influx` that gets every point. Without it or `outputs`, `run` needs `--print`.")
    outputs: list[OutputSettings] = Field(default_factory=list, description="InfluxDB-compatible destinations (InfluxDB 1.x/2.x, VictoriaMetrics), each with a machine filter, a field policy and its own queue in the outbox: one commit stores a point once and each output drains it at its own pace. Instead of `influx`.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="The durable on-disk buffer in front of InfluxDB.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The status HTTP server.")
    dashboards: DashboardSettings = Field(default_factory=DashboardSettings,
                                          description="Grafana boards: data source, folder, capacity-sharing boards.")
    clock: ClockSettings = Field(default_factory=ClockSettings, description="The collector's clock: start on a synchronized clock, and what a step of it is.")
    shard: Shard | None = Field(None, description="Scale out: this collector's share of the machines, by a hash of the machine id. Every collector of the plant subscribes to everything and keeps its own machines.")
    capacity: CapacitySettings = Field(default_factory=CapacitySettings, description="Sharing the public machines' capacity: forecast and MQTT feed.")
    data_dir: Path = Field(Path("data"), description="Where the collector keeps state (outbox, certificates). Relative paths are relative to the config file.")

    @model_validator(mode="after")
    def _outbox_in_data_dir(self) -> Config:
        """Everything the collector keeps lives under ``data_dir`` unless set otherwise: setting
        ``data_dir`` alone must not leave the outbox behind."""
        if "path" not in self.outbox.model_fields_set:
            self.outbox.path = self.data_dir / "outbox.sqlite"
        return self

    def output_list(self) -> list[OutputSettings]:
        """The outputs to write to: ``outputs``, or ``influx`` as one output named ``influx``."""
        if self.outputs:
            return [keyed(o, f"outputs[{i}]") for i, o in enumerate(self.outputs)]
        return [as_output(self.influx)] if self.influx is not None else []

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Cross-references between sections. Each problem is one line ``path: message`` so
        the loader can point at the YAML line."""
        from collector.profiles import BUILTIN

        problems: list[str] = []
        source_ids = [s.id for s in self.sources]
        for i, sid in enumerate(source_ids):
            if sid in source_ids[:i]:
                problems.append(f"sources[{i}].id: duplicate source id {sid!r}")
        machine_ids = [m.id for m in self.machines]
        for i, mid in enumerate(machine_ids):
            if mid in machine_ids[:i]:
                problems.append(f"machines[{i}].id: duplicate machine id {mid!r}")
        known_profiles = sorted(set(self.profiles) | set(BUILTIN))
        for name, profile in self.profiles.items():
            if profile.extends is not None and profile.extends not in known_profiles:
                problems.append(f"profiles.{name}.extends: unknown profile {profile.extends!r}"
                                f"{_did_you_mean(profile.extends, known_profiles)}; known: {', '.join(known_profiles)}")
        for i, m in enumerate(self.machines):
            if m.source not in source_ids:
                problems.append(f"machines[{i}].source: unknown source {m.source!r}"
                                f"{_did_you_mean(m.source, source_ids)}; known: {', '.join(source_ids) or 'none'}")
            if m.profile not in known_profiles:
                problems.append(f"machines[{i}].profile: unknown profile {m.profile!r}"
                                f"{_did_you_mean(m.profile, known_profiles)}; known: {', '.join(known_profiles)}")
        if self.influx is not None and self.outputs:
            problems.append("outputs: set together with `influx`; use one (`influx` is the shorthand for one output "
                            "named influx with no filter: move it into `outputs`)")
        names = [o.name for o in self.outputs]
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append(f"outputs[{i}].name: duplicate output name {name!r}")
        broker = self.capacity.feed.broker
        if broker is not None and not any(s.id == broker and s.type == "mqtt" for s in self.sources):
            mqtt_ids = [s.id for s in self.sources if s.type == "mqtt"]
            problems.append(f"capacity.feed.broker: no mqtt source {broker!r}"
                            f"{_did_you_mean(broker, mqtt_ids)}; mqtt sources: {', '.join(mqtt_ids) or 'none'}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "CapacitySettings",
    "Config",
    "HttpSettings",
    "InfluxSettings",
    "Machine",
    "OutboxSettings",
    "OutputSettings",
    "Profile",
    "Rule",
    "Site",
    "SourceSettings",
    "TrackerSettings",
]
