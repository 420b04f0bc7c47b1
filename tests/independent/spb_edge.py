"""A Sparkplug B edge node and device published with mqtt-spb-wrapper (Eclipse Tahu's protobuf
bindings, paho-mqtt 1.6), a library the collector does not use. Run by the tests with the
Python of its own venv (tests/fixtures/_foreign.py), never imported by them.

    python spb_edge.py HOST PORT GROUP NODE DEVICE STATE[,STATE...]     # publish, print stamps
    python spb_edge.py --capture GROUP NODE DEVICE STATE                # print payloads as hex

The edge node (a gateway) carries only an attribute and an unmapped data metric; the device
carries `PackML/State` and `PackML/UnitMode`. This library names birth metrics `DATA/<name>` and
`ATTR/<name>` and data metrics `<name>`. One JSON line per message on stdout:
{"topic": ..., "state": n, "ts_ms": t}.
"""

from __future__ import annotations

import json
import sys
import time

from mqtt_spb_wrapper import MqttSpbEntityDevice, MqttSpbEntityEdgeNode


def entities(group: str, node: str, device: str) -> tuple[MqttSpbEntityEdgeNode, MqttSpbEntityDevice]:
    edge = MqttSpbEntityEdgeNode(group, node)
    edge.attributes.set_value("Firmware", "4.2.1")
    edge.data.set_value("Uptime", 12.5)
    dev = MqttSpbEntityDevice(group, node, device)
    dev.attributes.set_value("Vendor", "ACME")
    return edge, dev


def capture(group: str, node: str, device: str, state: int) -> None:
    edge, dev = entities(group, node, device)
    stamp = 1_764_000_000_000
    nbirth = bytes(edge.serialize_payload_birth())  # first: it restarts the library's seq at 0
    dev.data.set_value("PackML/State", state, timestamp=stamp)
    dev.data.set_value("PackML/UnitMode", 1, timestamp=stamp)
    birth = bytes(dev.serialize_payload_birth())
    dev.data.set_value("PackML/State", 6, timestamp=stamp + 1500)
    data = bytes(dev.serialize_payload_data())
    print(json.dumps({"nbirth": nbirth.hex(), "dbirth": birth.hex(),
                      "ddata": data.hex()}))


def publish(host: str, port: int, group: str, node: str, device: str, states: list[int]) -> None:
    edge, dev = entities(group, node, device)
    for entity in (edge, dev):
        entity.connect(host, port, skip_death=True)
        deadline = time.monotonic() + 10
        while not entity.is_connected():
            if time.monotonic() > deadline:
                raise SystemExit(f"cannot connect to {host}:{port}")
            time.sleep(0.02)
    edge.publish_birth(qos=1)
    print(json.dumps({"topic": f"spBv1.0/{group}/NBIRTH/{node}"}), flush=True)
    for i, state in enumerate(states):
        stamp = int(time.time() * 1000)
        dev.data.set_value("PackML/State", state, timestamp=stamp)
        if i == 0:
            dev.data.set_value("PackML/UnitMode", 1, timestamp=stamp)  # Production
            dev.publish_birth(qos=1)
            kind = "DBIRTH"
        else:
            dev.publish_data(qos=1)
            kind = "DDATA"
        print(json.dumps({"topic": f"spBv1.0/{group}/{kind}/{node}/{device}", "state": state, "ts_ms": stamp}),
              flush=True)
        time.sleep(0.25)  # a machine's state lasts a while: distinct, ordered stamps
    time.sleep(0.5)  # QoS 1 in flight
    for entity in (dev, edge):
        entity.disconnect(skip_death_publish=True)  # no death: the test ends the history itself
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--capture":
        capture(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        publish(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
                [int(s) for s in sys.argv[6].split(",")])
