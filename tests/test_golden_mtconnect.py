"""Golden MTConnect cases (tests/golden/mtconnect/*.yaml): agent documents and MQTT messages in,
state changes out, through the sans-I/O decoder (adapters/mtconnect/decoder.py) and the tracker,
without an agent or a broker.

A case is YAML a plant engineer can extend with what an agent answered (``curl agent:5000/sample``)
or what its MQTT sink published (``mosquitto_sub -t 'MTConnect/#' -v``):

    description: what the case shows
    source: {machine_id: "{name}"}          # optional: keys of the `type: mtconnect` source
    profile: {extends: mtconnect}           # optional: default the built-in profile
    start: "2026-03-02T08:00:00Z"           # when the trackers start (and the first /current's floor)
    documents:                              # in the order they came
      - {request: /probe, text: "<MTConnectDevices ..."}
      - {request: /current, text: ...}      # a snapshot: every active condition listed
      - {request: /sample, text: ...}
      - {topic: MTConnect/Sample/<uuid>, text: ...}   # MQTT: any topic of the sink
      - {topic: MTConnect/Probe/Agent_<uuid>/Availability, text: UNAVAILABLE, arrival: "2026-03-02T08:00:09Z"}
    expected:
      states: [{t: "2026-03-02T08:00:01Z", machine: <id>, state: idle, reason: ...}]  # every change
      bad_input: {sequence_gap: 1}          # optional: counts per kind
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.decoder import MtConnectDecoder
from adapters.mtconnect.documents import Devices, Streams, parse_time
from collector.configfile import load_config_text
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, Event, MachineFound, MachineInfo, Output, Reading, StateChange
from collector.tracker import Tracker

CASES = sorted((Path(__file__).parent / "golden" / "mtconnect").glob("*.yaml"))
S = 1_000_000_000


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_mtconnect_case(case: Path) -> None:
    """Test that the case's documents decode to exactly its expected state changes (and bad input)."""
    spec: dict[str, Any] = yaml.safe_load(case.read_text())
    start = parse_time(spec["start"])
    mqtt = any("topic" in d for d in spec["documents"])
    fields = {"transport": "mqtt", "mqtt": {"host": "golden"}} if mqtt else {"url": "http://golden"}
    source = MtConnectSource.model_validate({"id": "agent", "type": "mtconnect", **fields, **spec.get("source", {})})
    rules = load_config_text(yaml.safe_dump({
        "site": {"plant": "p"}, "sources": [{"id": "s", "type": "simulate"}],
        "profiles": {"case": spec.get("profile", {"extends": "mtconnect"})},
        "machines": [{"id": "m", "source": "s", "profile": "case"}]})).machines[0].rules
    bad = BadInput()
    decoder = MtConnectDecoder(source, [], bad)
    decoder.opened_ns = start
    trackers: dict[str, Tracker] = {}
    out: list[Output] = []

    def run(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MachineFound):
                trackers[event.machine] = Tracker(MachineInfo(event.machine, "p"), rules, start_ns=start,
                                                  interval_ns=3600 * S)
            elif isinstance(event, Reading):
                out.extend(trackers[event.machine].reading(event))
            elif isinstance(event, Connectivity):
                for mid in event.machines or tuple(trackers):
                    out.extend(trackers[mid].connectivity(event.online, event.ts_ns, event.reason))

    for document in spec["documents"]:
        body = str(document["text"]).encode()
        if "topic" in document:
            arrival = parse_time(document["arrival"]) if "arrival" in document else start
            run(decoder.feed_mqtt(document["topic"], body, arrival))
            continue
        doc = decoder.parse(body, document["request"])
        if isinstance(doc, Devices):
            run(decoder.devices(doc))
        elif isinstance(doc, Streams):
            snapshot = document["request"].startswith("/current")
            run(decoder.streams(doc, snapshot=snapshot, floor_ns=start))
    got = [c for c in out if isinstance(c, StateChange)]
    want = spec["expected"]["states"]
    assert [(c.ts_ns, c.machine.id, c.state.value) for c in got] == [
        (parse_time(w["t"]), w["machine"], w["state"]) for w in want]
    for change, w in zip(got, want, strict=True):
        if "reason" in w:
            assert change.reason == w["reason"]
    assert {k: n for (_, k), n in bad.counts.items()} == spec["expected"].get("bad_input", {})
