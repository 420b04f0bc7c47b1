"""The MTConnect decoder without an agent: documents in, events out (adapters/mtconnect/decoder.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import AdapterContext, BoundMachine, SourceError
from adapters.mtconnect.agent_http import MtConnectHttpAdapter
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.decoder import MtConnectDecoder
from adapters.mtconnect.documents import Devices, Streams, parse, parse_time
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, MachineFound, MachineInfo, Reading
from tests.fixtures.mtconnect_agent import DeviceModel, Item, MtConnectAgent, vmc

T = 1_800_000_000_000_000_000  # a whole second


def decoder(bad: BadInput | None = None, machines: tuple[BoundMachine, ...] = (), **fields: Any) -> MtConnectDecoder:
    source = MtConnectSource.model_validate({"id": "s", "type": "mtconnect", "url": "http://agent", **fields})
    return MtConnectDecoder(source, machines, bad or BadInput())


def xml(agent: MtConnectAgent, path: str) -> bytes:
    return agent.handle(path)[1].encode()


def readings(events: list[Any]) -> list[tuple[str, str, Any, int]]:
    return [(e.machine, e.signal, e.value, e.ts_ns - T) for e in events if isinstance(e, Reading)]


def test_probe_announces_every_device_but_the_agent() -> None:
    """Test that a probe makes each device a machine (by uuid, or by name when configured), never the Agent."""
    agent = MtConnectAgent([vmc(), vmc("Lathe-2", "lathe-uuid-2")])
    doc = parse(xml(agent, "/probe"))
    assert isinstance(doc, Devices)
    found = decoder().devices(doc)
    assert [(f.machine, f.name, f.profile) for f in found if isinstance(f, MachineFound)] == [
        ("mtc-vmc-01", "VMC-3Axis", "mtconnect"), ("lathe-uuid-2", "Lathe-2", "mtconnect")]
    named = decoder(machine_id="cell-{name}", devices=["Lathe-*"]).devices(doc)
    assert [f.machine for f in named if isinstance(f, MachineFound)] == ["cell-Lathe-2"]


def test_the_agents_own_device_is_no_machine() -> None:
    """Test that the Agent device (cppagent 2.x streams its availability like a device's) is no machine."""
    agent = MtConnectAgent([vmc()])
    d = decoder()
    d.devices(parse(xml(agent, "/probe")))  # type: ignore[arg-type]
    stream = ('<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.0"><Header instanceId="1" '
              'nextSequence="3" firstSequence="1" lastSequence="2"/><Streams>'
              '<DeviceStream name="Agent" uuid="test-agent-uuid"><ComponentStream component="Agent" componentId="a">'
              '<Events><Availability dataItemId="agent_avail" sequence="2" timestamp="2027-01-15T08:00:00Z">'
              "AVAILABLE</Availability></Events></ComponentStream></DeviceStream></Streams></MTConnectStreams>")
    assert d.streams(parse(stream.encode())) == []  # type: ignore[arg-type]


def test_samples_come_out_in_sequence_order_at_source_time() -> None:
    """Test that a document grouped by component and category yields readings in sequence order,
    stamped with the observations' own times to the microsecond, UNAVAILABLE passed as it is."""
    agent = MtConnectAgent([vmc()])
    start = agent.next_seq
    agent.script([("vmc_exec", "ACTIVE", T + 1_000), ("vmc_avail", "AVAILABLE", T + 2_000),
                  ("vmc_system", "FAULT", T + 3_000), ("vmc_fmode", "SETUP", T + 4_000),
                  ("vmc_Sspeed", "1200.5", T + 5_000), ("vmc_estop", "UNAVAILABLE", T + 6_000)])
    d = decoder(types=["AVAILABILITY", "EXECUTION", "FUNCTIONAL_MODE", "EMERGENCY_STOP", "SPINDLE_SPEED"])
    d.devices(parse(xml(agent, "/probe")))  # type: ignore[arg-type]
    doc = parse(xml(agent, f"/sample?from={start}&count=10"))
    assert isinstance(doc, Streams) and doc.header.next == start + 6 and doc.header.last == start + 5
    m = "mtc-vmc-01"
    assert readings(d.streams(doc)) == [
        (m, "execution", "ACTIVE", 1_000), (m, "availability", "AVAILABLE", 2_000), (m, "condition", "FAULT", 3_000),
        (m, "functional_mode", "SETUP", 4_000), (m, "spindle_speed", 1200.5, 5_000),
        (m, "emergency_stop", "UNAVAILABLE", 6_000)]


def test_conditions_follow_the_activation_rules() -> None:
    """Test that `condition` is the worst active level over native codes and data items: a Normal with
    a code clears that alarm only, one without clears the data item."""
    agent = MtConnectAgent([vmc()])
    d = decoder()
    steps = [("FAULT", "E1"), ("WARNING", "W7"), ("FAULT", "E2"), ("NORMAL", "E1"), ("NORMAL", "E2"), ("NORMAL", "")]
    start = agent.next_seq
    for i, (level, code) in enumerate(steps):
        agent.set("vmc_system", level, T + i * 1000, code=code)
    got = readings(d.streams(parse(xml(agent, f"/sample?from={start}"))))  # type: ignore[arg-type]
    assert [v for _, _, v, _ in got] == ["FAULT", "FAULT", "FAULT", "FAULT", "WARNING", "NORMAL"]
    # /current lists the active alarms afresh: only E9 is active now
    agent.set("vmc_system", "FAULT", T + 9000, code="E9")
    got = readings(d.streams(parse(xml(agent, "/current")), snapshot=True))  # type: ignore[arg-type]
    assert ("mtc-vmc-01", "condition", "FAULT", 9000) in got


def test_json_documents_read_as_the_xml_ones() -> None:
    """Test that cppagent's JSON version 2 (and a version 1 document) give the same readings as XML."""
    agent = MtConnectAgent([vmc()])
    agent.script([("vmc_avail", "AVAILABLE", T), ("vmc_exec", "READY", T + 10), ("vmc_system", "FAULT", T + 20)])
    obs, nxt = agent.current()
    from_json = parse(agent.streams_json(agent.devices[0], obs, nxt).encode())
    from_xml = parse(xml(agent, "/current"))
    assert isinstance(from_json, Streams) and isinstance(from_xml, Streams)
    assert readings(decoder().streams(from_json)) == readings(decoder().streams(from_xml))
    v1 = {"MTConnectStreams": {"Header": {"instanceId": 5, "nextSequence": 9, "firstSequence": 1, "lastSequence": 8},
                               "Streams": [{"DeviceStream": {"name": "M", "uuid": "u1", "ComponentStreams": [
                                   {"ComponentStream": {"component": "Path", "Events": [
                                       {"Execution": {"dataItemId": "x", "timestamp": "2027-01-15T08:00:00.5Z",
                                                      "sequence": 8, "value": "ACTIVE"}}],
                                       "Condition": [{"Fault": {"dataItemId": "c", "type": "SYSTEM", "sequence": 7,
                                                                "timestamp": "2027-01-15T08:00:00Z"}}]}}]}}]}}
    doc = parse(json.dumps(v1).encode())
    assert isinstance(doc, Streams)
    stamp = parse_time("2027-01-15T08:00:00Z")
    assert [(e.signal, e.value, e.ts_ns - stamp) for e in decoder().streams(doc) if isinstance(e, Reading)] == [
        ("condition", "FAULT", 0), ("execution", "ACTIVE", 500_000_000)]


def test_mqtt_entity_topics_and_the_agents_last_will() -> None:
    """Test cppagent's entity sink payloads (one observation per topic, as its README shows them) and
    the agent's last will; a repeated sequence counts once."""
    d = decoder(transport="mqtt", url=None, mqtt={"host": "b"})
    execution = {"dataItemId": "exec", "name": "execution", "type": "EXECUTION", "category": "EVENT",
                 "timestamp": "2025-10-20T15:30:46.000000Z", "result": "ACTIVE", "sequence": 1235}
    fault = {"dataItemId": "system", "name": "SystemCondition", "type": "SYSTEM", "category": "CONDITION",
             "level": "FAULT", "nativeCode": "E001", "conditionId": "E001", "message": "Hydraulic pressure low",
             "timestamp": "2025-10-20T15:30:47.000000Z", "sequence": 1236}
    base = parse_time("2025-10-20T15:30:46Z")
    events = d.feed_mqtt("MTConnect/Devices/OKUMA.123456/Observations/exec", json.dumps(execution).encode(), 0)
    events += d.feed_mqtt("MTConnect/Devices/OKUMA.123456/Observations/exec", json.dumps(execution).encode(), 0)
    events += d.feed_mqtt("MTConnect/Devices/OKUMA.123456/Observations/system", json.dumps(fault).encode(), 0)
    assert isinstance(events[0], MachineFound) and events[0].machine == "OKUMA.123456"
    assert [(e.signal, e.value, e.ts_ns - base) for e in events if isinstance(e, Reading)] == [
        ("execution", "ACTIVE", 0), ("condition", "FAULT", S)]
    gone = d.feed_mqtt("MTConnect/Probe/Agent_a1/Availability", b"UNAVAILABLE", 42)
    assert gone == [Connectivity("s", False, 42, "agent gone (its MQTT last will)")]


S = 1_000_000_000


def test_several_items_of_a_type_and_configured_signals() -> None:
    """Test that the first Execution (probe order) is `execution`, a second `execution_<id>`, and a
    machine's configured signals (signal -> data item id) win over both."""
    items = (Item("e1", "EXECUTION", "EVENT", "Path"), Item("e2", "EXECUTION", "EVENT", "Path"),
             Item("pc", "PART_COUNT", "EVENT"))
    dev = DeviceModel("Lathe", "l1", items)
    agent = MtConnectAgent([dev])
    agent.script([("e2", "ACTIVE", T), ("e1", "READY", T + 1), ("pc", "17", T + 2)])
    d = decoder()
    d.devices(parse(xml(agent, "/probe")))  # type: ignore[arg-type]
    assert [(s, v) for _, s, v, _ in readings(d.streams(parse(xml(agent, "/sample?from=4"))))] == [  # type: ignore[arg-type]
        ("execution_e2", "ACTIVE"), ("execution", "READY")]
    mine = BoundMachine(MachineInfo("l1", "p"), {"execution": "e2", "parts": "pc"})
    d = decoder(machines=(mine,))
    d.devices(parse(xml(agent, "/probe")))  # type: ignore[arg-type]
    assert [(s, v) for _, s, v, _ in readings(d.streams(parse(xml(agent, "/sample?from=4"))))] == [  # type: ignore[arg-type]
        ("execution", "ACTIVE"), ("execution_e1", "READY"), ("parts", 17)]


def test_hostile_and_broken_documents_are_counted_and_dropped() -> None:
    """Test that a DTD (entity expansion), broken XML, and a document without a Header are bad input."""
    bad = BadInput()
    d = decoder(bad)
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
              b"<MTConnectStreams><Header instanceId='1'/></MTConnectStreams>")
    assert d.parse(laughs, "/sample") is None
    assert d.parse(b"<MTConnectStreams><Header", "/sample") is None
    assert d.parse(b"<MTConnectStreams/>", "/sample") is None
    assert d.parse(b"x" * 10, "/sample") is None
    assert bad.counts[("s", "xml_dtd")] == 1 and bad.counts[("s", "malformed_xml")] == 1
    assert bad.total() == 4


_VALID = [MtConnectAgent([vmc()]).handle(p)[1].encode() for p in ("/probe", "/current", "/sample?from=1")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(_VALID), st.integers(0, 3000), st.binary(max_size=8)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):]),
), max_size=8))
def test_any_sequence_of_documents_never_raises(bodies: list[bytes]) -> None:
    """Test that arbitrary and corrupted documents, in any order, never raise: each is read or counted."""
    bad = BadInput()
    d = decoder(bad)
    for body in bodies:
        before = bad.total()
        doc = d.parse(body, "/sample")
        if doc is None:
            assert bad.total() == before + 1
        elif isinstance(doc, Devices):
            d.devices(doc)
        elif isinstance(doc, Streams):
            for event in d.streams(doc, snapshot=len(body) % 2 == 0):
                assert isinstance(event, Reading | MachineFound)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["MTConnect/Sample/u", "MTConnect/Current/u", "MTConnect/Probe/u",
                                           "MTConnect/Devices/u/Observations/x", "MTConnect/Probe/Agent_a/Availability",
                                           "MTConnect/Asset/u/1", "other/topic"]),
                          st.one_of(st.binary(max_size=200), st.sampled_from(_VALID))), max_size=10))
def test_any_mqtt_message_never_raises(messages: list[tuple[str, bytes]]) -> None:
    """Test that any payload on any of the sink's topics is read or counted, never raised."""
    d = decoder(transport="mqtt", url=None, mqtt={"host": "b"})
    for topic, payload in messages:
        d.feed_mqtt(topic, payload, T)


# -- the HTTP adapter on its own (no engine): what it hands over ------------------------------------

async def test_http_adapter_without_current_at_falls_back_to_current(tmp_path: Path) -> None:
    """Test that after a gap an agent refusing `/current?at=` is read from its /current (the gap
    counted once), and that an agent that is not there fails the open with SourceError."""
    agent = MtConnectAgent([vmc()], buffer_size=8)
    agent.supports_at = False
    bad = BadInput()
    with agent.serving() as url:
        source = MtConnectSource.model_validate({"id": "s", "type": "mtconnect", "url": url, "interval": 0.05})
        adapter = MtConnectHttpAdapter(source, [], AdapterContext(tmp_path, bad))
        readings: list[Reading] = []
        async with adapter:  # probed, /current read; then 20 changes: its next `from` is gone
            first = agent.script([("vmc_exec", "ACTIVE" if i % 2 else "READY", T + i * 1000) for i in range(20)])[0]
            async for batch in adapter:
                readings += [e for e in batch.events if isinstance(e, Reading)]
                if bad.counts[("s", "sequence_gap")]:
                    break
    assert bad.counts[("s", "sequence_gap")] == 1
    assert f"/current?at={first + 20 - 8}" in agent.requests  # asked, refused
    assert readings[-1].signal == "execution" and readings[-1].value == "ACTIVE"
    assert readings[-1].ts_ns == T + 19_000  # the /current's value, at its own time
    with pytest.raises(SourceError, match="unreachable"):
        async with MtConnectHttpAdapter(source, [], AdapterContext(tmp_path, bad)):
            pass
