"""Sparkplug B: decoding payloads and keeping each edge node's session state.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from adapters.mqtt import sparkplug_b_pb2
from collector.core.errors import BadInputError
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


class SparkplugError(BadInputError):
    """A payload that cannot be decoded; ``kind`` is the bad-input kind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


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
    """The state of every edge node seen by one source, and the decoding of its messages.

    ``machine_of(edge_node, device, group)`` names the machine (or ``None`` when it is not
    tracked); ``rebirth(group, edge_node)`` is called (if set) to request a rebirth.
    """

    def __init__(self, source: str, report: Callable[[str, str], None],
                 rebirth: Callable[[str, str], None] | None = None) -> None:
        self.source = source
        self.report = report
        self.rebirth = rebirth
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.aliases = 0  # across all nodes, bounded by MAX_ALIASES

    def handle(self, group: str, kind: str, edge_node: str, device: str, payload: bytes | bytearray, arrival_ns: int,
               machine: str | None, node_machines: Callable[[set[str]], tuple[str, ...]],
               names: SignalNames | None = None) -> list[Event]:
        """Decode one message; ``machine`` is the machine of this topic (device or node),
        ``node_machines(devices)`` the machines of the node and the given devices, ``names``
        the subscription's metric -> signals mapping (``None``: metrics keep their names)."""
        msg = Payload()
        try:
            msg.ParseFromString(payload)
        except (DecodeError, RecursionError) as exc:
            raise SparkplugError("malformed_sparkplug", f"{kind} {group}/{edge_node}/{device}: {exc}") from exc
        key = (group, edge_node)
        node = self.nodes.get(key)
        if node is None:  # only for a payload that decoded: garbage leaves no trace
            if len(self.nodes) >= MAX_NODES:
                raise SparkplugError("too_many_nodes", f"{kind} {group}/{edge_node}: already {MAX_NODES} edge nodes")
            node = self.nodes[key] = _Node()
        topic = f"{NAMESPACE}/{group}/{kind}/{edge_node}" + (f"/{device}" if device else "")
        payload_ts = msg.timestamp * MS if msg.HasField("timestamp") else arrival_ns

        if kind == "NDEATH":
            bdseq = _bdseq(msg)
            if node.bdseq is not None and bdseq is not None and bdseq != node.bdseq:
                log.info("ignoring stale NDEATH of %s/%s (bdSeq %s, current birth has %s)",
                         group, edge_node, bdseq, node.bdseq)
                return []
            node.born = False
            node.seq = None
            machines = node_machines(node.devices)
            if not machines:  # a node that is no machine and has none (a gateway): nothing goes offline
                return []  # (a Connectivity without machines would mean the whole source)
            return [Connectivity(self.source, False, arrival_ns, f"Sparkplug NDEATH of {edge_node}", machines)]

        if kind == "NBIRTH":
            node.bdseq = _bdseq(msg)
            self.aliases -= len(node.aliases)
            node.aliases.clear()
            node.born = True
            node.gap_logged = False
            node.seq = msg.seq if msg.HasField("seq") else None
        else:
            self._check_seq(group, edge_node, node, msg, topic)

        if device and kind in ("DBIRTH", "DDATA", "DDEATH") and device not in node.devices:
            if len(node.devices) >= MAX_DEVICES:
                raise SparkplugError("too_many_devices", f"{topic}: edge node has {MAX_DEVICES} devices already")
            node.devices.add(device)
        if kind == "DDEATH":
            return [] if machine is None else [
                Connectivity(self.source, False, payload_ts, f"Sparkplug DDEATH of {device}", (machine,))]

        birth = kind in ("NBIRTH", "DBIRTH")
        events: list[Event] = []
        if birth and machine is not None:
            events.append(Connectivity(self.source, True, payload_ts, f"Sparkplug {kind}", (machine,)))
        unknown_alias = full = False
        for metric in msg.metrics:
            name = metric.name if metric.HasField("name") else None
            if name is not None and type(name) is not str:  # protobuf hands over invalid UTF-8 as bytes
                self.report("malformed_sparkplug", f"{topic}: a metric name that is not UTF-8")
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
                        unknown_alias = True
                        self.report("unknown_alias", f"{topic}: alias {metric.alias} not in any birth certificate")
                        continue
            if name is None or machine is None or name == "bdSeq" or name.startswith("Node Control/"):
                continue  # session bookkeeping and writable controls, not machine signals
            value = metric_value(metric)
            if value is None:
                continue
            ts = metric.timestamp * MS if metric.HasField("timestamp") else payload_ts
            if names is None:
                events.append(Reading(machine, name[len(DATA_PREFIX):] if name.startswith(DATA_PREFIX) else name,
                                      value, ts))
            else:
                for signal in names.get(name, ()):
                    events.append(Reading(machine, signal, value, ts))
        if full:
            self.report("too_many_aliases", f"{topic}: {MAX_ALIASES} aliases kept already; metrics beyond skipped")
        if unknown_alias:
            self._request_rebirth(group, edge_node)
        return events

    def _check_seq(self, group: str, edge_node: str, node: _Node, msg: Any, topic: str) -> None:
        if not msg.HasField("seq"):
            return
        seq = msg.seq
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = seq
        if not node.born:
            if not node.gap_logged:
                node.gap_logged = True
                log.warning("Sparkplug %s before the node's NBIRTH: metrics may lack names", topic)
                self._request_rebirth(group, edge_node)
            return
        if expected is not None and seq != expected:
            self.report("sparkplug_seq_gap", f"{topic}: seq {seq}, expected {expected} (messages lost)")
            if not node.gap_logged:
                node.gap_logged = True
                self._request_rebirth(group, edge_node)

    def _request_rebirth(self, group: str, edge_node: str) -> None:
        if self.rebirth is not None:
            log.info("requesting a rebirth of Sparkplug edge node %s/%s", group, edge_node)
            self.rebirth(group, edge_node)


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
