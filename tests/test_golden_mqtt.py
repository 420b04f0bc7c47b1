"""Golden MQTT cases (tests/golden/mqtt/*.yaml): topics and payloads in, readings and states out,
through the sans-I/O decoder (adapters/mqtt/decoder.py) and the tracker, without a broker.

A case is YAML a plant engineer can extend with a captured payload (text, hex or base64):

    description: what the case shows
    source: {subscriptions: [...], status: [...]}   # the `type: mqtt` source's keys (`host_id`: born at start)
    profile: {extends: packml}                      # or {rules: [...]}, for every machine
    machines: [cnc-07]                              # configured ones; others come by `discover`
    start: 1800000000                               # optional: epoch s the trackers start at
    messages:                                       # t: arrival, seconds after the start
      - {t: 1, topic: f/l1/cnc-07/status, text: '{"exec": "ACTIVE"}'}
      - {t: 2, topic: spBv1.0/G/DDATA/n/d, hex: "08ee..."}
    expected:
      states: [{t: 1, machine: cnc-07, state: busy}]   # every change, in order; t from the start
      bad_input: {missing_path: 1}                      # optional: counts per kind
      commands: ["spBv1.0/G/NCMD/n"]                    # optional: topics the decoder asks to publish
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.base import BoundMachine
from adapters.mqtt.config import MqttSource
from adapters.mqtt.decoder import MqttDecoder
from collector.configfile import load_config_text
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, MachineFound, MachineInfo, Output, Reading, Sample, StateChange
from collector.tracker import Tracker

CASES = sorted((Path(__file__).parent / "golden" / "mqtt").glob("*.yaml"))
S = 1_000_000_000
T0 = 1_800_000_000 * S


def _payload(message: dict[str, Any]) -> bytes:
    if "hex" in message:
        return bytes.fromhex(message["hex"])
    if "base64" in message:
        return base64.b64decode(message["base64"])
    return str(message.get("text", "")).encode()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_mqtt_case(case: Path) -> None:
    """Test that the case's messages decode to exactly its expected state changes (and bad input)."""
    spec: dict[str, Any] = yaml.safe_load(case.read_text())
    t0 = int(spec.get("start", T0 // S)) * S
    source = MqttSource.model_validate({"id": "mq", "type": "mqtt", "host": "golden", **spec["source"]})
    template = load_config_text(yaml.safe_dump({
        "site": {"plant": "p"}, "sources": [{"id": "s", "type": "simulate"}], "profiles": {"case": spec["profile"]},
        "machines": [{"id": "m", "source": "s", "profile": "case"}]})).machines[0]
    configured = spec.get("machines", [])
    bad = BadInput()
    decoder = MqttDecoder(source, [BoundMachine(MachineInfo(m, "p")) for m in configured], bad)
    if decoder.host is not None:  # `host_id`: connected and born at the start, as the transport does it
        decoder.host.will(t0 // 1_000_000)
        decoder.host.birth()
    trackers: dict[str, Tracker] = {}

    def tracker(machine: str) -> Tracker:
        if machine not in trackers:
            trackers[machine] = Tracker(MachineInfo(machine, "p"), template.rules, start_ns=t0, interval_ns=3600 * S)
        return trackers[machine]

    for m in configured:
        tracker(m)
    out: list[Output] = []
    commands: list[str] = []
    for message in spec["messages"]:
        events, published = decoder.feed(message["topic"], _payload(message), t0 + int(message["t"] * S))
        commands += [p.topic for p in published]
        for event in events:
            if isinstance(event, MachineFound):
                tracker(event.machine)
            elif isinstance(event, Sample):
                out += tracker(event.machine).sample(event)
            elif isinstance(event, Reading):
                out += tracker(event.machine).reading(event)
            elif isinstance(event, Connectivity):
                for machine in event.machines or tuple(trackers):
                    out += tracker(machine).connectivity(event.online, event.ts_ns, event.reason)
    got = [{"t": (c.ts_ns - t0) / S, "machine": c.machine.id, "state": c.state.value}
           for c in out if isinstance(c, StateChange)]
    want = [{"t": float(w["t"]), "machine": w["machine"], "state": w["state"]} for w in spec["expected"]["states"]]
    assert got == want
    if "bad_input" in spec["expected"]:
        assert {kind: n for (_, kind), n in bad.counts.items()} == spec["expected"]["bad_input"]
    if "commands" in spec["expected"]:
        assert commands == spec["expected"]["commands"]
