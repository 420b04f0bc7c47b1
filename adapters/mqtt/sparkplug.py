"""Sparkplug B: decoding payloads and keeping each edge node's session state.

Pure, like the decoder around it: ``SparkplugSession.handle`` takes one message and returns an
``Outcome`` (its events, the bad input it held, whether the node should be asked for a rebirth,
an NDEATH's dead devices); it never calls back into its owner. Each message kind has its own
method (node birth, node death, metrics of births and data, the seq check).

Topics are ``spBv1.0/<group>/<type>/<edge_node>[/<device>]``. Per edge node this keeps what the
spec asks a host application to keep: the ``bdSeq`` of the current NBIRTH (an NDEATH carrying
another one is stale: the node already came back, so it is ignored), the message ``seq``
(0..255, wrapping; a gap means lost messages) and the metric alias table from NBIRTH/DBIRTH
(data messages may carry only aliases).

- NBIRTH/DBIRTH/NDATA/DDATA metrics become readings (timestamp: the metric's, else the
  payload's, else arrival);
- NDEATH: the node and all its devices go offline at receive time (the broker publishes the
  node's will when it notices the loss: that is the best time there is);
- DDEATH: the device goes offline at the payload's timestamp.

Names: with a subscription's ``signals`` (``signal: metric name``) a metric becomes a reading of
each signal mapped to it, under the signal's name, whether it came by name or by alias; other
metrics are not signals and are skipped. Some edge libraries name a metric ``DATA/<name>`` in
the birth certificate and ``<name>`` in data messages (or the other way round): both forms
match the mapping. Without ``signals`` every metric is a reading under its own name, a
leading ``DATA/`` removed so that birth and data agree.

Bounds (the network feeds these tables): ``MAX_NODES`` edge nodes per source, ``MAX_ALIASES``
aliases across them, ``MAX_DEVICES`` devices per node. Past a bound the message (or alias) is
bad input (``too_many_nodes``, ``too_many_aliases``, ``too_many_devices``), and nothing else
changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from adapters.mqtt import sparkplug_b_pb2
from collector.core.model import Connectivity, Event, Reading

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
MS = 1_000_000
REBIRTH_METRIC = "Node Control/Rebirth"
DATA_PREFIX = "DATA/"
MAX_NODES = 10_000
MAX_ALIASES = 200_000
MAX_DEVICES = 5_000

SignalNames = Mapping[str, tuple[str, ...]]
"""Metric name -> the signals it feeds (see ``signal_names``)."""


def signal_names(signals: Mapping[str, str]) -> SignalNames:
    """``signal: metric name`` inverted, each metric also under its other ``DATA/`` form."""
    out: dict[str, tuple[str, ...]] = {}
    for signal, metric in signals.items():
        other = metric[len(DATA_PREFIX):] if metric.startswith(DATA_PREFIX) else DATA_PREFIX + metric
        for name in (metric, other):
            out[name] = (*out.get(name, ()), signal)
    return out

# The generated module is not type-checked (mypy excludes *_pb2.py): its message class is Any here.
Payload: Any = vars(sparkplug_b_pb2)["Payload"]

# Int8/16/32 are carried two's complement in the uint32 ``int_value``, Int64 in ``long_value``.
_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}


@dataclass(frozen=True, slots=True)
class NodeDeath:
    """An NDEATH that counts: the node and these devices of it went away at ``ts_ns``. The
    session does not know which machines they are; its owner does."""

    devices: frozenset[str]
    ts_ns: int
    reason: str


@dataclass(slots=True)
class Outcome:
    """What one message means: its events, the bad input in it (kind, detail), whether the edge
    node should be asked for its births again, and an NDEATH's dead devices."""

    events: list[Event] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    rebirth: bool = False
    node_death: NodeDeath | None = None


@dataclass(slots=True)
class _Node:
    bdseq: int | None = None
    seq: int | None = None
    born: bool = False
    aliases: dict[int, str] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    gap_logged: bool = False


def metric_value(metric: Any) -> Any:
    """The Python value of a metric (``None`` for null or unsupported value kinds)."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None or kind in ("dataset_value", "template_value", "extension_value"):
        return None
    value = getattr(metric, kind)
    if type(value) is bytes:  # a string that is not UTF-8 (protobuf does not check proto2 strings)
        return None
    bits = _SIGNED_BITS.get(metric.datatype)
    if bits is not None and kind in ("int_value", "long_value"):
        # Publishers differ in sign-extending to 32 bits or not (-5 as Int16: 0xFFFFFFFB or
        # 0xFFFB): keep the type's width, then read it as two's complement.
        value &= (1 << bits) - 1
        if value >= 1 << (bits - 1):
            value -= 1 << bits
    return value


class SparkplugSession:
    """The state of every edge node seen by one source, and the decoding of its messages. Pure:
    a message in, an ``Outcome`` out; it calls nothing of its owner."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.aliases = 0  # across all nodes, bounded by MAX_ALIASES

    def handle(self, group: str, kind: str, edge_node: str, device: str, payload: bytes | bytearray, arrival_ns: int,
               machine: str | None, names: SignalNames | None = None) -> Outcome:
        """Decode one message; ``machine`` is the machine of this topic (device or node, None
        when it is not tracked), ``names`` the subscription's metric -> signals mapping
        (``None``: metrics keep their names)."""
        msg = Payload()
        topic = f"{NAMESPACE}/{group}/{kind}/{edge_node}" + (f"/{device}" if device else "")
        try:
            msg.ParseFromString(payload)
        except (DecodeError, RecursionError) as exc:
            return Outcome(problems=[("malformed_sparkplug", f"{topic}: {exc}")])
        node = self.nodes.get((group, edge_node))
        if node is None:  # only for a payload that decoded: garbage leaves no trace
            if len(self.nodes) >= MAX_NODES:
                return Outcome(problems=[("too_many_nodes", f"{topic}: already {MAX_NODES} edge nodes")])
            node = self.nodes[(group, edge_node)] = _Node()
        message = _Message(topic, msg, msg.timestamp * MS if msg.HasField("timestamp") else arrival_ns, arrival_ns)
        if kind == "NDEATH":
            return self._node_death(node, message)
        out = Outcome()
        if kind == "NBIRTH":
            self._node_birth(node, msg)
        else:
            self._check_seq(node, message, out)
        if device and device not in node.devices:  # DBIRTH, DDATA, DDEATH
            if len(node.devices) >= MAX_DEVICES:
                return Outcome(problems=[("too_many_devices", f"{topic}: edge node has {MAX_DEVICES} devices already")])
            node.devices.add(device)
        if kind == "DDEATH":
            if machine is not None:
                out.events.append(Connectivity(self.source, False, message.ts_ns, f"Sparkplug DDEATH of {device}",
                                               (machine,)))
            return out
        birth = kind in ("NBIRTH", "DBIRTH")
        if birth and machine is not None:
            out.events.append(Connectivity(self.source, True, message.ts_ns, f"Sparkplug {kind}", (machine,)))
        self._metrics(node, message, birth, machine, names, out)
        return out

    def _node_death(self, node: _Node, message: _Message) -> Outcome:
        """The node's will (the broker sends it when it notices the loss: its arrival is the best
        time there is), unless it carries another birth's bdSeq: then the node is back already."""
        bdseq = _bdseq(message.msg)
        if node.bdseq is not None and bdseq is not None and bdseq != node.bdseq:
            log.info("ignoring stale NDEATH %s (bdSeq %s, current birth has %s)", message.topic, bdseq, node.bdseq)
            return Outcome()
        node.born = False
        node.seq = None
        edge_node = message.topic.split("/")[3]
        return Outcome(node_death=NodeDeath(frozenset(node.devices), message.arrival_ns,
                                            f"Sparkplug NDEATH of {edge_node}"))

    def _node_birth(self, node: _Node, msg: Any) -> None:
        node.bdseq = _bdseq(msg)
        self.aliases -= len(node.aliases)
        node.aliases.clear()
        node.born = True
        node.gap_logged = False
        node.seq = msg.seq if msg.HasField("seq") else None

    def _metrics(self, node: _Node, message: _Message, birth: bool, machine: str | None,
                 names: SignalNames | None, out: Outcome) -> None:
        """A birth's or data message's metrics: aliases learnt or looked up, readings made."""
        full = False
        for metric in message.msg.metrics:
            name = metric.name if metric.HasField("name") else None
            if name is not None and type(name) is not str:  # protobuf hands over invalid UTF-8 as bytes
                out.problems.append(("malformed_sparkplug", f"{message.topic}: a metric name that is not UTF-8"))
                continue
            if metric.HasField("alias"):
                if birth and name is not None:
                    if metric.alias in node.aliases:
                        node.aliases[metric.alias] = name
                    elif self.aliases < MAX_ALIASES:
                        self.aliases += 1
                        node.aliases[metric.alias] = name
                    else:
                        full = True  # the birth's own values still count; data by this alias will not
                elif name is None:
                    name = node.aliases.get(metric.alias)
                    if name is None:
                        out.rebirth = True
                        out.problems.append(("unknown_alias",
                                             f"{message.topic}: alias {metric.alias} not in any birth certificate"))
                        continue
            if name is None or machine is None or name == "bdSeq" or name.startswith("Node Control/"):
                continue  # session bookkeeping and writable controls, not machine signals
            value = metric_value(metric)
            if value is None:
                continue
            ts = metric.timestamp * MS if metric.HasField("timestamp") else message.ts_ns
            if names is None:
                out.events.append(Reading(machine, name[len(DATA_PREFIX):] if name.startswith(DATA_PREFIX) else name,
                                          value, ts))
            else:
                for signal in names.get(name, ()):
                    out.events.append(Reading(machine, signal, value, ts))
        if full:
            out.problems.append(("too_many_aliases",
                                 f"{message.topic}: {MAX_ALIASES} aliases kept already; metrics beyond skipped"))

    def _check_seq(self, node: _Node, message: _Message, out: Outcome) -> None:
        """A seq gap means lost messages: ask for the births again, once until the next one."""
        if not message.msg.HasField("seq"):
            return
        seq = message.msg.seq
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = seq
        if not node.born:
            if not node.gap_logged:
                node.gap_logged = True
                log.warning("Sparkplug %s before the node's NBIRTH: metrics may lack names", message.topic)
                out.rebirth = True
            return
        if expected is not None and seq != expected:
            out.problems.append(("sparkplug_seq_gap",
                                 f"{message.topic}: seq {seq}, expected {expected} (messages lost)"))
            if not node.gap_logged:
                node.gap_logged = True
                out.rebirth = True


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    msg: Any
    ts_ns: int
    """The payload's timestamp, else the arrival time."""
    arrival_ns: int


def _bdseq(msg: Any) -> int | None:
    for metric in msg.metrics:
        if metric.name == "bdSeq":
            value = metric_value(metric)
            return int(value) if isinstance(value, int) else None
    return None


def rebirth_payload(now_ms: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    msg = Payload(timestamp=now_ms)
    metric = msg.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.datatype = 11  # Boolean
    metric.boolean_value = True
    data: bytes = msg.SerializeToString()
    return data
