"""The MTConnect decoder: agent documents in, events out; sans-I/O, with the session inside.

    decoder = MtConnectDecoder(source, machines, bad_input)
    events = decoder.devices(probe_doc)                       # MachineFound per new device
    events = decoder.streams(current_doc, snapshot=True, floor_ns=opened)
    events = decoder.streams(sample_doc)                      # Readings, in sequence order
    events = decoder.feed_mqtt(topic, payload, arrival_ns)    # cppagent's MQTT sink

Every device of the agent (matching ``devices``) is a machine, its id made from ``machine_id``
(default the uuid, the one name every transport carries). Data items of the configured types
become signals in snake case (``FUNCTIONAL_MODE`` -> ``functional_mode``); when a device has
several of a type (a two-path lathe has two Executions), the first one (probe order, else the
first seen) is ``execution`` and the others ``execution_<dataItemId>``. A machine's configured
``signals`` (signal -> data item id or name) take precedence. Every Condition data item feeds
one signal ``condition``: the worst active level over them (FAULT, WARNING, else NORMAL, or
UNAVAILABLE when none is known), kept per native code as the standard's activation rules say
(a Normal without a code clears the data item, with one clears that alarm).

Time: an observation's timestamp is source time. One device's readings go out in sequence
order with non-decreasing times; a snapshot (``/current``) says how things stand, so its
values are stamped no earlier than the device's last reading and ``floor_ns`` (the open: the
machine's history before it is not known).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.base import BoundMachine
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.documents import (
    Devices,
    DocumentError,
    Errors,
    Observation,
    Streams,
    parse,
    parse_entity,
)
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, Event, MachineFound, Reading

PROFILE = "mtconnect"
MAX_CODES = 256  # active alarms kept per condition data item (bounded whatever the input)
MAX_ITEMS = 10_000  # data items remembered per device
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_LEVELS = ("FAULT", "WARNING")


def snake(type_: str) -> str:
    return type_.lower()


@dataclass(slots=True)
class _Device:
    machine: str
    name: str
    uuid: str
    owners: dict[str, str] = field(default_factory=dict)  # type -> the data item id that is the signal
    seqs: dict[str, int] = field(default_factory=dict)  # data item id -> last sequence handed over
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)  # item -> code -> level
    unavailable: set[str] = field(default_factory=set)  # condition items reported UNAVAILABLE
    last_ts: int = 0
    instance: int | None = None  # MQTT documents: the agent instance its sequences belong to
    overrides: dict[str, str] = field(default_factory=dict)  # data item id or name -> signal

    def condition(self) -> str:
        levels = {level for codes in self.conditions.values() for level in codes.values()}
        for level in _LEVELS:
            if level in levels:
                return level
        known = set(self.conditions) | self.unavailable
        return "UNAVAILABLE" if known and known <= self.unavailable else "NORMAL"


class MtConnectDecoder:
    def __init__(self, config: MtConnectSource, machines: Sequence[BoundMachine], bad_input: BadInput) -> None:
        self.config = config
        self.source = config.id
        self.bad_input = bad_input
        self.types = frozenset(config.types)
        self.known: set[str] = {m.id for m in machines}  # configured or already announced
        self._overrides = {m.id: {address: signal for signal, address in m.signals.items()} for m in machines}
        self.by_uuid: dict[str, _Device] = {}
        self.by_name: dict[str, str] = {}  # device name -> uuid
        self.ignored: set[str] = set()  # uuids (or names) not matching `devices`
        self.opened_ns = 0  # MQTT: when the transport connected (the floor of a Current's stamps)

    # -- documents --------------------------------------------------------------------------------

    def parse(self, body: bytes, what: str) -> Devices | Streams | Errors | None:
        """A document, or None after counting it as bad input."""
        if len(body) > self.config.max_document:
            self.report("document_too_large", f"{what}: {len(body)} bytes")
            return None
        try:
            return parse(body)
        except DocumentError as exc:
            self.report(exc.kind, f"{what}: {exc}")
            return None

    def devices(self, doc: Devices) -> list[Event]:
        """A probe: every matching device becomes a machine; data items in probe order decide
        which of several of one type is the signal."""
        events: list[Event] = []
        self.ignored.update(doc.agents)  # the agent's own device streams its availability too: no machine
        for device in doc.devices:
            dev = self._device(device.uuid, device.name, events)
            if dev is None:
                continue
            for item in device.data_items:
                if item.category != "CONDITION" and item.type in self.types:
                    dev.owners.setdefault(item.type, item.id)
        return events

    def streams(self, doc: Streams, *, snapshot: bool = False, floor_ns: int = 0) -> list[Event]:
        """Observations of a /current (``snapshot``) or /sample document -> readings."""
        events: list[Event] = []
        if snapshot:  # the document lists every active condition: start the devices' lists afresh
            for uuid in {o.device_uuid for o in doc.observations}:
                dev = self.by_uuid.get(uuid)
                if dev is not None:
                    dev.conditions.clear()
                    dev.unavailable.clear()
        for obs in doc.observations:
            dev = self._device(obs.device_uuid, obs.device_name, events)
            if dev is not None:
                self._observe(dev, obs, events, snapshot=snapshot, floor_ns=floor_ns)
        return events

    def restarted(self) -> None:
        """The agent restarted: sequence numbers start again, so none seen so far counts."""
        for dev in self.by_uuid.values():
            dev.seqs.clear()

    # -- MQTT (cppagent's MqttService documents and MqttEntitySink observations) ------------------

    def feed_mqtt(self, topic: str, payload: bytes, arrival_ns: int) -> list[Event]:
        assert self.config.mqtt is not None
        prefix = self.config.mqtt.topic_prefix.rstrip("/") + "/"
        if not topic.startswith(prefix):
            return []
        levels = topic[len(prefix):].split("/")
        kind = levels[0]
        if kind == "Probe" and len(levels) == 3 and levels[2] == "Availability":  # the agent's last will
            return self._agent_availability(payload, arrival_ns)
        if kind in ("Probe", "Current", "Sample") and len(levels) == 2:
            if levels[1].startswith("Agent_"):
                return []  # the agent's own device: not a machine
            doc = self.parse(payload, topic)
            if isinstance(doc, Devices) and kind == "Probe":
                return self.devices(doc)
            if isinstance(doc, Streams) and kind in ("Current", "Sample"):
                return self._mqtt_streams(doc, snapshot=kind == "Current", arrival_ns=arrival_ns)
            if doc is not None:
                self.report("unexpected_document", f"{topic}: a {type(doc).__name__} document")
            return []
        if kind == "Devices" and len(levels) == 4 and levels[2] == "Observations":
            if levels[1].startswith("Agent_"):
                return []
            try:
                obs = parse_entity(payload, levels[1])
            except DocumentError as exc:
                self.report(exc.kind, f"{topic}: {exc}")
                return []
            events: list[Event] = []
            dev = self._device(levels[1], "", events)
            if dev is not None:
                self._observe(dev, obs, events, dedupe=True)
            return events
        return []  # assets and anything else of the agent's

    def _agent_availability(self, payload: bytes, arrival_ns: int) -> list[Event]:
        text = payload.decode(errors="replace").strip()
        if text == "AVAILABLE":
            # (Re)connected: after a restart its sequence numbers begin anew, and its first
            # messages are the current values again (the trackers skip what they have).
            self.restarted()
            return [Connectivity(self.source, True, arrival_ns, "agent available")]
        if text == "UNAVAILABLE":
            return [Connectivity(self.source, False, arrival_ns, "agent gone (its MQTT last will)")]
        self.report("bad_availability", f"agent availability {text[:40]!r}")
        return []

    def _mqtt_streams(self, doc: Streams, *, snapshot: bool, arrival_ns: int) -> list[Event]:
        """A document of the MQTT sink: the header's instanceId tells a restarted agent; each
        observation goes out once (a data item's sequence must grow), whether it came in a
        Sample or a periodic Current."""
        events: list[Event] = []
        instance = doc.header.instance_id
        for obs in doc.observations:
            dev = self._device(obs.device_uuid, obs.device_name, events)
            if dev is None:
                continue
            if dev.instance != instance:
                dev.instance = instance
                dev.seqs.clear()
                dev.conditions.clear()
                dev.unavailable.clear()
            self._observe(dev, obs, events, dedupe=True, snapshot=snapshot, floor_ns=self.opened_ns)
        return events

    # -- the per-observation path -----------------------------------------------------------------

    def _observe(self, dev: _Device, obs: Observation, events: list[Event], *, snapshot: bool = False,
                 floor_ns: int = 0, dedupe: bool = False) -> None:
        if dedupe:
            if obs.sequence <= dev.seqs.get(obs.data_item_id, -1):
                return
            if len(dev.seqs) >= MAX_ITEMS and obs.data_item_id not in dev.seqs:
                dev.seqs.clear()
            dev.seqs[obs.data_item_id] = obs.sequence
        signal, value = self._signal(dev, obs)
        if signal is None:
            return
        ts = obs.ts_ns
        if snapshot:
            ts = max(ts, floor_ns)
        ts = max(ts, dev.last_ts)
        dev.last_ts = ts
        events.append(Reading(dev.machine, signal, value, ts))

    def _signal(self, dev: _Device, obs: Observation) -> tuple[str | None, Any]:
        if obs.category == "CONDITION":
            codes = dev.conditions.setdefault(obs.data_item_id, {})
            if obs.value == "UNAVAILABLE":
                codes.clear()
                dev.unavailable.add(obs.data_item_id)
            elif obs.value == "NORMAL":
                if obs.code:
                    codes.pop(obs.code, None)
                else:
                    codes.clear()
                dev.unavailable.discard(obs.data_item_id)
            else:
                if len(codes) >= MAX_CODES and obs.code not in codes:
                    self.report("too_many_conditions", f"device {dev.name or dev.uuid} item {obs.data_item_id}")
                    return None, None
                codes[obs.code] = obs.value
                dev.unavailable.discard(obs.data_item_id)
            return "condition", dev.condition()
        value: Any = obs.value
        if value != "UNAVAILABLE" and _NUMBER.match(value):
            value = float(value) if any(c in value for c in ".eE") else int(value)
        override = dev.overrides.get(obs.data_item_id) or (dev.overrides.get(obs.name) if obs.name else None)
        if override is not None:
            return override, value
        if obs.type not in self.types:
            return None, None
        owner = dev.owners.setdefault(obs.type, obs.data_item_id)
        if owner == obs.data_item_id and snake(obs.type) not in dev.overrides.values():  # not if configured
            return snake(obs.type), value
        return f"{snake(obs.type)}_{_UNSAFE.sub('_', obs.data_item_id)}", value

    # -- devices ----------------------------------------------------------------------------------

    def _device(self, uuid: str, name: str, events: list[Event]) -> _Device | None:
        """The device of an observation or probe, announced as a machine the first time."""
        if not uuid:
            if name in self.by_name:
                return self.by_uuid.get(self.by_name[name])
            uuid = name  # old agents' devices may lack a uuid: the name (unique within the agent) stands in
        dev = self.by_uuid.get(uuid)
        if dev is not None:
            if name and not dev.name:
                dev.name = name
            return dev
        key = uuid
        if key in self.ignored:
            return None
        patterns = self.config.devices
        if patterns and not any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(uuid, p) for p in patterns):
            self.ignored.add(key)
            return None
        if "{name}" in self.config.machine_id and not name:
            self.report("unknown_device", f"device {uuid!r}: its name is not known yet (no probe document) and "
                                          f"machine_id {self.config.machine_id!r} needs it")
            return None
        if not uuid:
            self.report("malformed_document", "a device with neither uuid nor name")
            return None
        machine = self.config.machine_id.replace("{uuid}", uuid).replace("{name}", name)
        if machine not in self.known:
            if len(self.known) >= self.config.max_machines:
                self.report("too_many_machines", f"device {machine!r}: more than {self.config.max_machines}")
                self.ignored.add(key)
                return None
            self.known.add(machine)
            events.append(MachineFound(machine=machine, source=self.source, profile=PROFILE, name=name or uuid))
        dev = _Device(machine, name, uuid, overrides=dict(self._overrides.get(machine, {})))
        self.by_uuid[uuid] = dev
        if name:
            self.by_name[name] = uuid
        return dev

    def report(self, kind: str, detail: str) -> None:
        self.bad_input.report(self.source, kind, detail)
