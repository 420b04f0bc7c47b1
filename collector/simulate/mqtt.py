"""Publishing the simulated plant to an MQTT broker: one JSON message per machine and sample
(``factory/<plant>/<line>/<machine>/status`` by default), and optionally the same as a
Sparkplug B edge node (``spBv1.0/<plant>/…/<edge node>/<machine>``: NBIRTH with ``bdSeq``,
a DBIRTH per machine naming its metrics with aliases, DDATA by alias, NDEATH as the will and
on a clean stop, births again on a ``Node Control/Rebirth`` command)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as paho

from adapters.mqtt.client import Broker, make_client
from adapters.mqtt.sparkplug import NAMESPACE, REBIRTH_METRIC, Payload
from collector.core.model import MachineInfo, Sample
from collector.simulate.plant import QUANTITIES, Plant

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "factory/{plant}/{line}/{machine}/status"
# Sparkplug B data types (Sparkplug 3.0, table 6.4.16)
_INT32, _INT64, _DOUBLE, _BOOLEAN, _STRING = 3, 4, 10, 11, 12
_TYPES = {"execution": _STRING, "spindle_rpm": _DOUBLE, "alarm": _BOOLEAN, "mode": _STRING,
          "packml_state": _INT32, "item_state": _INT32, "operation_mode": _INT32}
_ALIASES = {q: i + 1 for i, q in enumerate(QUANTITIES)}


def _set_value(metric: Any, datatype: int, value: Any) -> None:
    metric.datatype = datatype
    if value is None:
        metric.is_null = True
    elif datatype == _STRING:
        metric.string_value = str(value)
    elif datatype == _DOUBLE:
        metric.double_value = float(value)
    elif datatype == _BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == _INT64:
        metric.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    else:
        metric.int_value = int(value) & 0xFFFF_FFFF


class MqttPublisher:
    def __init__(self, plant: Plant, host: str, port: int, *, topic: str = DEFAULT_TOPIC,
                 json_payloads: bool = True, sparkplug: bool = False, edge_node: str = "simulator") -> None:
        self.plant = plant
        self.host, self.port = host, port
        self.topic = topic
        self.json_payloads = json_payloads
        self.sparkplug = sparkplug
        self.group, self.edge_node = plant.name, edge_node
        self.machines = {m.id: m for m in plant.machines}
        self.published = 0
        self._lock = threading.Lock()  # seq and births: the asyncio side and paho's thread both publish
        self._seq = 0
        self._bdseq = 0
        self._last: dict[str, dict[str, Any]] = {}
        self._client = make_client(Broker(host, port, protocol="3.1.1"), f"collector-simulate-{plant.name}",
                                   "simulator")
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_command

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait_s: float = 10.0) -> None:
        if self.sparkplug:
            self._client.will_set(self._node_topic("NDEATH"), self._death(), qos=1)
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, wait_s):
            self._client.loop_stop()
            raise ConnectionError(f"no connection to mqtt://{self.host}:{self.port} within {wait_s:g}s")
        log.info("simulate: publishing %d machine(s) to mqtt://%s:%d (%s)", len(self.machines), self.host, self.port,
                 " and ".join(k for k, on in (("JSON", self.json_payloads), ("Sparkplug B", self.sparkplug)) if on))

    def close(self) -> None:
        if self.sparkplug and self._client.is_connected():
            self._client.publish(self._node_topic("NDEATH"), self._death(), qos=1).wait_for_publish(5)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("simulate: broker refused the connection: %s", reason)
            return
        if self.sparkplug:
            client.subscribe(self._node_topic("NCMD"), qos=1)
            self._births()
        self._connected.set()

    def _on_command(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        command = Payload()
        try:
            command.ParseFromString(msg.payload)
        except Exception:
            return
        if any(m.name == REBIRTH_METRIC and m.boolean_value for m in command.metrics):
            log.info("simulate: rebirth requested")
            self._births()

    # -- messages ------------------------------------------------------------------------------

    def publish(self, sample: Sample) -> None:
        info = self.machines[sample.machine]
        if self.json_payloads:
            body = {**sample.values, "ts": sample.ts_ns // 1_000_000}
            self._client.publish(self._json_topic(info), orjson.dumps(body), qos=1)
        if self.sparkplug:
            with self._lock:
                self._last[info.id] = dict(sample.values)
                msg = Payload(timestamp=sample.ts_ns // 1_000_000, seq=self._next_seq())
                for name, value in sample.values.items():
                    metric = msg.metrics.add()
                    metric.alias = _ALIASES[name]
                    _set_value(metric, _TYPES[name], value)
                self._client.publish(self._device_topic("DDATA", info.id), msg.SerializeToString(), qos=0)
        self.published += 1

    def _json_topic(self, info: MachineInfo) -> str:
        return self.topic.format(plant=self.plant.name, line=info.line or "line", cell=info.cell or "cell",
                                 machine=info.id)

    def _node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}"

    def _device_topic(self, kind: str, device: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}/{device}"

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _death(self) -> bytes:
        msg = Payload(timestamp=time.time_ns() // 1_000_000)
        metric = msg.metrics.add()
        metric.name = "bdSeq"
        _set_value(metric, _INT64, self._bdseq)
        data: bytes = msg.SerializeToString()
        return data

    def _births(self) -> None:
        """NBIRTH (seq 0, the bdSeq of the will) and a DBIRTH per machine with every metric."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            self._seq = 0
            node = Payload(timestamp=now_ms, seq=self._next_seq())
            for name, datatype, value in (("bdSeq", _INT64, self._bdseq), (REBIRTH_METRIC, _BOOLEAN, False)):
                metric = node.metrics.add()
                metric.name = name
                _set_value(metric, datatype, value)
            self._client.publish(self._node_topic("NBIRTH"), node.SerializeToString(), qos=0)
            for mid in self.machines:
                values = self._last.get(mid, {})
                birth = Payload(timestamp=now_ms, seq=self._next_seq())
                for name in QUANTITIES:
                    metric = birth.metrics.add()
                    metric.name, metric.alias = name, _ALIASES[name]
                    _set_value(metric, _TYPES[name], values.get(name))
                self._client.publish(self._device_topic("DBIRTH", mid), birth.SerializeToString(), qos=0)
