"""Sparkplug B through a real mosquitto: births, aliases, deaths, bdSeq, seq gaps, rebirth."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from adapters.mqtt.sparkplug import Payload, metric_value
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, Reading
from tests.fixtures._mqtt import Publisher, machine, make_adapter, make_source, running
from tests.fixtures._ports import until, wait_for
from tests.fixtures._sparkplug import BOOLEAN, FLOAT, INT16, INT64, STRING, M, payload
from tests.fixtures.mosquitto import Mosquitto

SUB = {"topic": "spBv1.0/{group}/#", "payload": "sparkplug_b"}
T0 = 1_700_000_000_000  # ms
NODE = "spBv1.0/plant1/{}/edge1"
DEV = "spBv1.0/plant1/{}/edge1/cnc-07"


def nbirth(bdseq: int) -> bytes:
    return payload([M("bdSeq", datatype=INT64, value=bdseq), M("Node Control/Rebirth", 1, BOOLEAN, False)],
                   seq=0, timestamp=T0)


async def test_births_aliases_and_ddeath_timestamp(mosquitto: Mosquitto) -> None:
    """Test that NBIRTH/DBIRTH set up the alias table, DDATA with aliases only becomes named readings
    (signed ints decoded), and DDEATH takes the device offline at the DDEATH payload's timestamp."""
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB]), [machine("cnc-07")])
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish(NODE.format("NBIRTH"), nbirth(5))
            pub.publish(DEV.format("DBIRTH"), payload([
                M("execution", 10, STRING, "READY"), M("spindle_rpm", 11, FLOAT, 0.0),
                M("temperature", 12, INT16, -5)], seq=1, timestamp=T0 + 1000))
            pub.publish(DEV.format("DDATA"), payload([
                M(alias=10, value="ACTIVE"), M(alias=11, datatype=FLOAT, value=1500.0, timestamp=T0 + 2500)],
                seq=2, timestamp=T0 + 2000))
            pub.publish(DEV.format("DDEATH"), payload([], seq=3, timestamp=T0 + 9000))
            await until(lambda: any(isinstance(e, Connectivity) and not e.online for e in events), what="DDEATH")
    finally:
        pub.close()
    ms = 1_000_000
    assert [(r.machine, r.signal, r.value, r.ts_ns) for r in events if isinstance(r, Reading)] == [
        ("cnc-07", "execution", "READY", (T0 + 1000) * ms),
        ("cnc-07", "spindle_rpm", 0.0, (T0 + 1000) * ms),
        ("cnc-07", "temperature", -5, (T0 + 1000) * ms),
        ("cnc-07", "execution", "ACTIVE", (T0 + 2000) * ms),
        ("cnc-07", "spindle_rpm", 1500.0, (T0 + 2500) * ms),  # the metric's own timestamp wins
    ]
    death = events[-1]
    assert death == Connectivity("mq", False, (T0 + 9000) * ms, "Sparkplug DDEATH of cnc-07", ("cnc-07",))


async def test_ndeath_with_stale_bdseq_is_ignored_and_current_one_takes_node_offline(mosquitto: Mosquitto) -> None:
    """Test that an NDEATH whose bdSeq differs from the current NBIRTH's is ignored, and a matching
    NDEATH takes the node and its devices offline at receive time."""
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB]), [machine("cnc-07"), machine("edge1")])
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish(NODE.format("NBIRTH"), nbirth(5))
            pub.publish(DEV.format("DBIRTH"), payload([M("execution", 10, STRING, "READY")], seq=1, timestamp=T0))
            pub.publish(NODE.format("NDEATH"), payload([M("bdSeq", datatype=INT64, value=4)]))  # the old session's will
            pub.publish(DEV.format("DDATA"), payload([M(alias=10, value="ACTIVE")], seq=2, timestamp=T0 + 1))
            await until(lambda: sum(isinstance(e, Reading) for e in events) == 2, what="data after stale NDEATH")
            before = time.time_ns()
            pub.publish(NODE.format("NDEATH"), payload([M("bdSeq", datatype=INT64, value=5)]))
            await until(lambda: isinstance(events[-1], Connectivity) and not events[-1].online, what="NDEATH")
    finally:
        pub.close()
    offline = [e for e in events if isinstance(e, Connectivity) and not e.online]
    assert len(offline) == 1
    assert set(offline[0].machines) == {"edge1", "cnc-07"} and before <= offline[0].ts_ns <= time.time_ns()


async def test_seq_gap_and_unknown_alias_are_reported_and_request_a_rebirth(mosquitto: Mosquitto) -> None:
    """Test that a seq gap and an unknown alias are counted as bad input and, with `rebirth: true`,
    make the adapter publish NCMD `Node Control/Rebirth` to the edge node."""
    bad = BadInput()
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB], rebirth=True), [machine("cnc-07")], bad=bad)
    commands: list[bytes] = []
    edge = paho.Client(CallbackAPIVersion.VERSION2, client_id="edge1")
    subscribed: list[bool] = []
    edge.on_message = lambda c, u, msg: commands.append(msg.payload)
    edge.on_subscribe = lambda c, u, mid, codes, props: subscribed.append(True)
    edge.connect(mosquitto.host, mosquitto.port)
    edge.subscribe("spBv1.0/plant1/NCMD/edge1", qos=1)
    edge.loop_start()
    wait_for(lambda: bool(subscribed), 10, "the edge node's NCMD subscription")  # else the command may pass unseen
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish(NODE.format("NBIRTH"), nbirth(1))
            pub.publish(DEV.format("DBIRTH"), payload([M("execution", 10, STRING, "READY")], seq=1, timestamp=T0))
            pub.publish(DEV.format("DDATA"), payload([M(alias=99, value="ACTIVE"), M(alias=10, value="ACTIVE")],
                                                     seq=5, timestamp=T0 + 1))
            await until(lambda: sum(isinstance(e, Reading) for e in events) == 2, what="the known alias")
            await until(lambda: len(commands) >= 1, 10, "a rebirth request")  # async: the adapter must run
    finally:
        pub.close()
        edge.disconnect()
        edge.loop_stop()
    assert bad.counts == {("mq", "sparkplug_seq_gap"): 1, ("mq", "unknown_alias"): 1}
    request = Payload()
    request.ParseFromString(commands[0])
    assert [(m.name, metric_value(m)) for m in request.metrics] == [("Node Control/Rebirth", True)]


async def test_malformed_sparkplug_payload_is_bad_input(mosquitto: Mosquitto) -> None:
    """Test that a payload that is not protobuf is counted as `malformed_sparkplug` and later data still flows."""
    bad = BadInput()
    adapter = make_adapter(make_source(mosquitto, subscriptions=[SUB]), [machine("cnc-07")], bad=bad)
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish(DEV.format("DDATA"), b"\xff\xff\xff\xff")
            pub.publish(NODE.format("NBIRTH"), nbirth(1))
            pub.publish(DEV.format("DBIRTH"), payload([M("execution", 10, STRING, "READY")], seq=1, timestamp=T0))
            await until(lambda: any(isinstance(e, Reading) for e in events), what="a reading")
    finally:
        pub.close()
    assert bad.counts[("mq", "malformed_sparkplug")] == 1
