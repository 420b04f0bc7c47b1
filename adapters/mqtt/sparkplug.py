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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from adapters.mqtt import sparkplug_b_pb2
from collector.errors import BadInputError
from collector.model import Connectivity, Event, Reading

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
MS = 1_000_000
REBIRTH_METRIC = "Node Control/Rebirth"

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

    def handle(self, group: str, kind: str, edge_node: str, device: str, payload: bytes | bytearray, arrival_ns: int,
               machine: str | None, node_machines: Callable[[set[str]], tuple[str, ...]]) -> list[Event]:
        """Decode one message; ``machine`` is the machine of this topic (device or node),
        ``node_machines(devices)`` the machines of the node and the given devices."""
        key = (group, edge_node)
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = _Node()
        msg = Payload()
        try:
            msg.ParseFromString(payload)
        except DecodeError as exc:
            raise SparkplugError("malformed_sparkplug", f"{kind} {group}/{edge_node}/{device}: {exc}") from exc
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
            return [Connectivity(self.source, False, arrival_ns, f"Sparkplug NDEATH of {edge_node}",
                                 node_machines(node.devices))]

        if kind == "NBIRTH":
            node.bdseq = _bdseq(msg)
            node.aliases.clear()
            node.born = True
            node.gap_logged = False
            node.seq = msg.seq if msg.HasField("seq") else None
        else:
            self._check_seq(group, edge_node, node, msg, topic)

        if device and kind in ("DBIRTH", "DDATA", "DDEATH"):
            node.devices.add(device)
        if kind == "DDEATH":
            return [] if machine is None else [
                Connectivity(self.source, False, payload_ts, f"Sparkplug DDEATH of {device}", (machine,))]

        birth = kind in ("NBIRTH", "DBIRTH")
        events: list[Event] = []
        if birth and machine is not None:
            events.append(Connectivity(self.source, True, payload_ts, f"Sparkplug {kind}", (machine,)))
        unknown_alias = False
        for metric in msg.metrics:
            name = metric.name if metric.HasField("name") else None
            if metric.HasField("alias"):
                if birth and name is not None:
                    node.aliases[metric.alias] = name
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
            events.append(Reading(machine, name, value, ts))
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
