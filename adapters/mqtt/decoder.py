"""The MQTT decoder, sans I/O: topic and payload in, events and commands out.

    decoder = MqttDecoder(source, machines, bad_input)
    events, commands = decoder.feed(topic, payload, arrival_ns)

Everything a source's messages mean lives here, with the session state it needs: the route of
each topic (cached), JSON paths, plain values, status topics, Sparkplug B sessions (births,
aliases, seq, rebirth requests), discovery and its bounds. It never touches a socket: the
transport (``adapters.mqtt.adapter``) feeds it what paho received and publishes the commands it
returns (a Sparkplug rebirth request, a primary host's STATE birth sent again). So every rule is
tested by feeding it bytes (tests/golden/mqtt/, tests/test_fuzz_decoders.py), without a broker.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

import orjson

from adapters.base import BoundMachine
from adapters.mqtt.commands import Publish
from adapters.mqtt.config import MqttSource, StatusTopic, Subscription
from adapters.mqtt.host import PrimaryHost
from adapters.mqtt.payloads import MISSING, Getter, compile_path, parse_timestamp, parse_value
from adapters.mqtt.sparkplug import (
    NAMESPACE,
    SignalNames,
    SparkplugSession,
    rebirth_payload,
    signal_names,
)
from adapters.mqtt.topics import TopicTemplate, expand
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, Event, MachineFound, Reading, Sample

log = logging.getLogger(__name__)

ROUTE_CACHE = 20_000
"""Topics whose route is kept; past it the cache starts afresh (a flood of new topics costs
a re-route each, never memory)."""
_SCALAR = (str, int, float, bool)


class _Route:
    """What to do with messages of one topic (computed once per topic, then cached)."""

    __slots__ = ()

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        raise NotImplementedError


class _Drop(_Route):
    """A topic that names no machine this source tracks: counted, dropped."""

    __slots__ = ("detail", "kind")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail = kind, detail

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        decoder.report(self.kind, self.detail)


class _Ignore(_Route):
    """Topics that are not data: Sparkplug commands (ours included) and host STATE messages."""

    __slots__ = ()

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        return None


class _HostState(_Route):
    """Our own Sparkplug STATE topic (``host_id``): the host decides whether to publish its birth again."""

    __slots__ = ()

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        assert decoder.host is not None
        decoder.commands.extend(decoder.host.seen(payload))


class _Json(_Route):
    __slots__ = ("found", "machine", "signals", "ts_format", "ts_getter")

    def __init__(self, machine: str, signals: list[tuple[str, Getter]], ts_getter: Getter | None,
                 ts_format: str, found: MachineFound | None) -> None:
        self.machine, self.signals, self.ts_getter, self.ts_format = machine, signals, ts_getter, ts_format
        self.found = found  # a discovered machine, registered with its first message that decodes

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:  # invalid UTF-8 included
            decoder.report("malformed_json", f"{topic}: {exc}")
            return
        if type(obj) is not dict:
            decoder.report("wrong_type", f"{topic}: expected a JSON object, got {type(obj).__name__}")
            return
        ts = arrival_ns
        if self.ts_getter is not None:
            raw = self.ts_getter(obj)
            if raw is not MISSING:
                try:
                    ts = parse_timestamp(raw, self.ts_format)
                except ValueError as exc:
                    decoder.report("bad_timestamp", f"{topic}: {exc}")
        values: dict[str, Any] = {}
        for signal, getter in self.signals:
            value = getter(obj)
            if value is MISSING:
                decoder.report("missing_path", f"{topic}: no value for signal {signal!r}")
            elif isinstance(value, _SCALAR):
                values[signal] = value
            else:
                decoder.report("wrong_type", f"{topic}: signal {signal!r} is a {type(value).__name__}, "
                                             "expected a number, boolean or string")
        if values:
            if self.found is not None:
                if not decoder.admit(self.found):
                    return
                self.found = None
            decoder.events.append(Sample(self.machine, values, ts))


class _Value(_Route):
    __slots__ = ("found", "machine", "signal")

    def __init__(self, machine: str, signal: str, found: MachineFound | None) -> None:
        self.machine, self.signal, self.found = machine, signal, found

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        try:
            value = parse_value(payload)
        except UnicodeDecodeError as exc:
            decoder.report("wrong_type", f"{topic}: not UTF-8 text: {exc}")
            return
        if value == "":
            decoder.report("wrong_type", f"{topic}: empty payload")
            return
        if self.found is not None:
            if not decoder.admit(self.found):
                return
            self.found = None
        decoder.events.append(Reading(self.machine, self.signal, value, arrival_ns))


class _Status(_Route):
    __slots__ = ("machines", "offline", "online", "what")

    def __init__(self, machines: tuple[str, ...], status: StatusTopic, what: str) -> None:
        self.machines, self.what = machines, what
        self.online, self.offline = frozenset(status.online), frozenset(status.offline)

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        text = payload.decode(errors="replace").strip()
        online = False if text in self.offline else True if text in self.online else _state_online(text)
        if online is not None:
            where = "" if online else f" on {topic}"
            decoder.events.append(Connectivity(decoder.source_id, online, arrival_ns,
                                               f"{self.what} reported {text[:80]!r}{where}", self.machines))
        elif text:  # an empty payload clears a retained status: nothing to do
            decoder.report("unknown_status", f"{topic}: {text[:80]!r} is neither online nor offline")


def _state_online(text: str) -> bool | None:
    """``online`` of a Sparkplug 3.0 STATE payload (``{"online": false, "timestamp": ...}``), else None.
    (Sparkplug 2.2's STATE is the plain text ``ONLINE``/``OFFLINE``, among the defaults.)"""
    if not text.startswith("{"):
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    online = obj.get("online") if isinstance(obj, dict) else None
    return online if isinstance(online, bool) else None


class _Sparkplug(_Route):
    __slots__ = ("device", "edge_node", "found", "group", "kind", "machine", "names", "unknown")

    def __init__(self, group: str, kind: str, edge_node: str, device: str, machine: str | None,
                 found: MachineFound | None, unknown: str | None, names: SignalNames | None) -> None:
        self.group, self.kind, self.edge_node, self.device, self.machine = group, kind, edge_node, device, machine
        # A machine `discover` may register: only once a message of it decodes to a mapped signal,
        # so neither garbage nor an edge node without machine signals (a gateway) becomes a machine.
        self.found = found
        self.unknown, self.names = unknown, names

    def handle(self, decoder: MqttDecoder, topic: str, payload: bytes | bytearray, arrival_ns: int) -> None:
        assert decoder.sparkplug is not None
        found = self.found
        if found is not None and decoder.is_known(found.machine):
            self.machine, self.found, found = found.machine, None, None
        if self.unknown is not None and found is None:
            decoder.report("unknown_machine", self.unknown)
        outcome = decoder.sparkplug.handle(self.group, self.kind, self.edge_node, self.device, payload, arrival_ns,
                                           self.machine if found is None else found.machine, self.names)
        for kind, detail in outcome.problems:
            decoder.report(kind, detail)
        if outcome.rebirth:
            decoder.rebirth(self.group, self.edge_node)
        events = outcome.events
        if outcome.node_death is not None:
            death = outcome.node_death
            machines = decoder.sparkplug_machines(self.group, self.edge_node, set(death.devices))
            if not machines:  # a node that is no machine and has none (a gateway): nothing goes offline
                return  # (a Connectivity without machines would mean the whole source)
            events = [Connectivity(decoder.source_id, False, death.ts_ns, death.reason, machines)]
        if found is not None:
            mid = found.machine
            if any(type(e) is Reading and e.machine == mid for e in events) and decoder.admit(found):
                self.machine, self.found = mid, None
            else:  # not (yet) a machine: keep what is not about it (e.g. an NDEATH of its node)
                events = [e for e in events if not (type(e) is Reading and e.machine == mid)
                          and not (isinstance(e, Connectivity) and e.machines == (mid,))]
        decoder.events.extend(events)


class MqttDecoder:
    def __init__(self, config: MqttSource, machines: Sequence[BoundMachine], bad_input: BadInput) -> None:
        self.config = config
        self.source_id = config.id
        self.bad_input = bad_input
        self.machines: dict[str, BoundMachine] = {m.id: m for m in machines}
        self.found: dict[str, str] = {}  # discovered machine id -> profile
        self.subs = [(s, TopicTemplate(s.topic)) for s in config.subscriptions]
        self.statuses = [(s, TopicTemplate(s.topic)) for s in config.status]
        # A primary host asks for rebirths (the spec's host does); so does `rebirth: true` without one.
        self.rebirths = config.rebirth or config.host_id is not None
        self.sparkplug = (SparkplugSession(config.id)
                          if any(s.payload == "sparkplug_b" for s in config.subscriptions) else None)
        self.host = None if config.host_id is None else PrimaryHost(config.host_id, config.sparkplug_version)
        self.events: list[Event] = []  # of the message being fed
        self.commands: list[Publish] = []
        self._now_ns = 0
        self._routes: dict[str, _Route] = {}
        self._getters: dict[str, Getter] = {}
        self._names: dict[int, SignalNames] = {}  # per Sparkplug subscription: metric name -> signals

    def feed(self, topic: str, payload: bytes | bytearray, arrival_ns: int) -> tuple[list[Event], list[Publish]]:
        """Decode one message: the events it makes and the messages to publish in reply. Bad
        input is counted (per kind, logged once a minute) and costs this message only."""
        self.events, self.commands, self._now_ns = [], [], arrival_ns
        if len(payload) > self.config.max_payload:
            self.report("payload_too_large", f"{topic}: {len(payload)} bytes > max_payload {self.config.max_payload}")
            return self.events, self.commands
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
            if len(self._routes) >= ROUTE_CACHE:
                self._routes.clear()
            self._routes[topic] = route
        try:
            route.handle(self, topic, payload, arrival_ns)
        except Exception as exc:  # a decoder bug must cost one message, not the connection
            log.exception("source %s: decoding %s failed", self.source_id, topic[:200])
            self.report("decoder_error", f"{topic}: {type(exc).__name__}: {exc}")
        return self.events, self.commands

    def report(self, kind: str, detail: str) -> None:
        self.bad_input.report(self.source_id, kind, detail)

    def filters(self) -> list[str]:
        """The topic filters to subscribe to, each once."""
        own = [] if self.host is None else [self.host.topic]
        return list(dict.fromkeys([*(t.filter for _, t in (*self.subs, *self.statuses)), *own]))

    def _route(self, topic: str) -> _Route:
        if self.host is not None and topic == self.host.topic:
            return _HostState()
        levels = topic.split("/")
        for status, template in self.statuses:
            values = template.match(levels)
            if values is not None:
                return self._status_route(status, template, values)
        for sub, template in self.subs:
            values = template.match(levels)
            if values is None:
                continue
            if sub.payload == "sparkplug_b":
                return self._sparkplug_route(sub, levels)
            machine = expand(sub.machine_id, values)
            found = self._discoverable(machine, sub, values)
            if found is None and not self.is_known(machine):
                return _Drop("unknown_machine", f"{topic}: machine {machine!r} is not configured for source "
                                                f"{self.source_id} and matches no `discover` pattern")
            if sub.payload == "value":
                return _Value(machine, values.get("signal") or sub.signal or "value", found)
            return self._json_route(topic, sub, machine, found)
        return _Drop("unmatched_topic", f"{topic}: matches no subscription template")

    def is_known(self, machine: str) -> bool:
        return machine in self.machines or machine in self.found

    def _discoverable(self, machine: str, sub: Subscription, values: dict[str, str]) -> MachineFound | None:
        """The registration of ``machine`` if it is new and a `discover` pattern matches it; it is
        made only by ``admit``, once a message of the machine has decoded (garbage registers nothing)."""
        if not machine or self.is_known(machine):
            return None
        for rule in sub.discover:
            if fnmatch.fnmatchcase(machine, rule.match):
                return MachineFound(
                    machine=machine, source=self.source_id, profile=rule.profile, name=machine,
                    plant=values.get("plant", ""), line=values.get("line", ""), cell=values.get("cell", ""),
                    signals=dict(sub.signals))
        return None

    def admit(self, found: MachineFound) -> bool:
        """Register a discovered machine (its first message decoded); False past ``max_machines``."""
        if self.is_known(found.machine):
            return True
        if len(self.machines) + len(self.found) >= self.config.max_machines:
            self.report("too_many_machines", f"{found.machine!r} not tracked: source {self.source_id} has "
                                             f"max_machines ({self.config.max_machines}) machines")
            return False
        self.found[found.machine] = found.profile
        self.events.append(found)
        return True

    def _json_route(self, topic: str, sub: Subscription, machine: str, found: MachineFound | None) -> _Route:
        paths = sub.signals or (self.machines[machine].signals if machine in self.machines else {})
        if not paths:
            return _Drop("no_signals", f"{topic}: neither the subscription nor machine {machine!r} maps any signal")
        try:
            signals = [(name, self._getter(path)) for name, path in paths.items()]
            ts_getter = None if sub.timestamp is None else self._getter(sub.timestamp)
        except ValueError as exc:
            return _Drop("bad_path", f"{topic}: {exc}")
        return _Json(machine, signals, ts_getter, sub.timestamp_format, found)

    def _getter(self, path: str) -> Getter:
        getter = self._getters.get(path)
        if getter is None:
            getter = self._getters[path] = compile_path(path)
        return getter

    def _status_route(self, status: StatusTopic, template: TopicTemplate, values: dict[str, str]) -> _Route:
        if "{" not in status.machine_id or (not template.names and status.machine_id == "{machine}"):
            return _Status((), status, f"source {self.source_id}")  # the whole source
        machine = expand(status.machine_id, values)
        if self.sparkplug is not None and not self.is_known(machine):
            # an edge node's status: its devices as well
            return _Status(tuple(self._node_machines(machine)), status, f"edge node {machine}")
        return _Status((machine,), status, f"machine {machine}")

    def _sparkplug_route(self, sub: Subscription, levels: list[str]) -> _Route:
        if len(levels) >= 2 and levels[1] == "STATE":
            return _Ignore()
        if len(levels) < 4 or levels[0] != NAMESPACE or len(levels) > 5:
            return _Drop("bad_topic", f"{'/'.join(levels)}: not a Sparkplug B topic")
        group, kind, node = levels[1], levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else ""
        if kind in ("NCMD", "DCMD"):
            return _Ignore()
        if kind not in ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA"):
            return _Drop("bad_topic", f"{'/'.join(levels)}: unknown Sparkplug message type {kind!r}")
        values = {"group": group, "edge_node": node, "device": device, "machine": device or node}
        machine: str | None = expand(sub.machine_id, values)
        unknown, found = None, None
        if kind != "NDEATH" and not self.is_known(machine or ""):
            found = self._discoverable(machine or "", sub, values)
            if device or kind == "NDATA":  # an NBIRTH of a node that is no machine itself is normal
                unknown = (f"{'/'.join(levels)}: machine {machine!r} is not configured for source "
                           f"{self.source_id} and matches no `discover` pattern")
            machine = None  # still decoded: births carry the alias table and bdSeq, data the seq
        names = self._names.get(id(sub))
        if names is None and sub.signals:
            names = self._names[id(sub)] = signal_names(sub.signals)
        return _Sparkplug(group, kind, node, device, machine, found, unknown, names)

    def sparkplug_machines(self, group: str, edge_node: str, devices: set[str]) -> tuple[str, ...]:
        """The tracked machines of an edge node: the node itself and its devices."""
        out: list[str] = []
        for sub, _ in self.subs:
            if sub.payload != "sparkplug_b":
                continue
            for device in ("", *sorted(devices)):
                values = {"group": group, "edge_node": edge_node, "device": device, "machine": device or edge_node}
                machine = expand(sub.machine_id, values)
                if self.is_known(machine) and machine not in out:
                    out.append(machine)
        return tuple(out)

    def _node_machines(self, edge_node: str) -> list[str]:
        assert self.sparkplug is not None
        out: list[str] = []
        for (group, node), state in self.sparkplug.nodes.items():
            if node == edge_node:
                out += self.sparkplug_machines(group, node, state.devices)
        return out or [edge_node]

    def rebirth(self, group: str, edge_node: str) -> None:
        """Ask an edge node for its births again (a seq gap, an unknown alias), where the source
        may: ``rebirth: true``, or as the primary host (``host_id``)."""
        if self.rebirths:
            log.info("source %s: requesting a rebirth of Sparkplug edge node %s/%s", self.source_id, group, edge_node)
            self.commands.append(Publish(f"{NAMESPACE}/{group}/NCMD/{edge_node}",
                                         rebirth_payload(self._now_ns // 1_000_000)))
