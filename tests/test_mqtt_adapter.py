"""The MQTT adapter at the event level, against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters.base import SourceError
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, MachineFound, Reading, Sample
from tests.fixtures._mqtt import Publisher, machine, make_adapter, make_source, running
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto

JSON_SUB = {"topic": "factory/{plant}/{line}/{machine}/status", "payload": "json",
            "signals": {"execution": "exec", "spindle_rpm": "spindle.speed", "alarm": "alarms[0]"},
            "timestamp": "ts"}


def readings(events: list[object]) -> list[Reading]:
    """The readings among ``events``, a JSON message's ``Sample`` unfolded into one per signal."""
    out: list[Reading] = []
    for e in events:
        if isinstance(e, Reading):
            out.append(e)
        elif isinstance(e, Sample):
            out += [Reading(e.machine, signal, value, e.ts_ns) for signal, value in e.values.items()]
    return out


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_json_topic_template_yields_readings_with_payload_timestamps(mosquitto: Mosquitto, protocol: str) -> None:
    """Test that a JSON topic template maps the machine level and JMESPath signals to readings,
    with the payload's timestamp (epoch ms, ISO 8601) or the arrival time."""
    source = make_source(mosquitto, protocol=protocol, subscriptions=[JSON_SUB])
    adapter = make_adapter(source, [machine("cnc-07"), machine("cnc-08")])
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish("factory/sz/turning/cnc-07/status",
                        json.dumps({"exec": "ACTIVE", "spindle": {"speed": 1200}, "alarms": [False],
                                    "ts": 1_700_000_000_123}))
            pub.publish("factory/sz/turning/cnc-08/status",
                        json.dumps({"exec": "READY", "spindle": {"speed": 0}, "alarms": [True],
                                    "ts": "2023-11-14T22:13:20.5+00:00"}))
            before = time.time_ns()
            pub.publish("factory/sz/turning/cnc-07/status", json.dumps({"exec": "STOPPED", "spindle": {"speed": 0},
                                                                       "alarms": [True]}))
            await until(lambda: len(readings(events)) == 9, what="nine readings")
    finally:
        pub.close()
    got = readings(events)
    assert [(r.machine, r.signal, r.value, r.ts_ns) for r in got[:6]] == [
        ("cnc-07", "execution", "ACTIVE", 1_700_000_000_123_000_000),
        ("cnc-07", "spindle_rpm", 1200, 1_700_000_000_123_000_000),
        ("cnc-07", "alarm", False, 1_700_000_000_123_000_000),
        ("cnc-08", "execution", "READY", 1_700_000_000_500_000_000),
        ("cnc-08", "spindle_rpm", 0, 1_700_000_000_500_000_000),
        ("cnc-08", "alarm", True, 1_700_000_000_500_000_000),
    ]
    assert got[6].value == "STOPPED" and before <= got[6].ts_ns <= time.time_ns()  # arrival time


async def test_value_topics_name_the_signal_from_the_topic(mosquitto: Mosquitto) -> None:
    """Test that `value` payloads ("1", "true", "ACTIVE", "2.5") become typed readings named by `{signal}`."""
    source = make_source(mosquitto, subscriptions=[{"topic": "plc/{machine}/{signal}", "payload": "value"}])
    adapter = make_adapter(source, [machine("press-1")])
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            for signal, payload in [("running", "1"), ("alarm", "true"), ("mode", "ACTIVE"), ("speed", " 2.5\n")]:
                pub.publish(f"plc/press-1/{signal}", payload)
            await until(lambda: len(events) == 4, what="four readings")
    finally:
        pub.close()
    assert [(r.machine, r.signal, r.value) for r in readings(events)] == [
        ("press-1", "running", 1), ("press-1", "alarm", True), ("press-1", "mode", "ACTIVE"), ("press-1", "speed", 2.5)]


async def test_bad_input_is_counted_per_kind_and_never_fatal(mosquitto: Mosquitto) -> None:
    """Test that malformed JSON, a missing path, a wrong type, a 1 MB payload and an unknown machine
    are each counted under their kind, and that a good message after them still arrives."""
    bad = BadInput()
    source = make_source(mosquitto, subscriptions=[
        {**JSON_SUB, "signals": {"execution": "exec"}},
        {"topic": "plc/{machine}/{signal}", "payload": "value"}])
    adapter = make_adapter(source, [machine("cnc-07"), machine("press-1")], bad=bad)
    pub = Publisher(mosquitto)
    topic = "factory/sz/turning/cnc-07/status"
    try:
        async with running(adapter) as events:
            pub.publish(topic, "{not json")
            pub.publish(topic, json.dumps({"other": 1}))
            pub.publish(topic, json.dumps({"exec": {"nested": "object"}}))
            pub.publish(topic, json.dumps([1, 2]))
            pub.publish(topic, b"x" * 1_048_576)
            pub.publish("factory/sz/turning/cnc-99/status", json.dumps({"exec": "ACTIVE"}))
            pub.publish("plc/press-1/mode", b"\xff\xfe")
            pub.publish(topic, json.dumps({"exec": "ACTIVE", "ts": "yesterday"}))
            await until(lambda: len(events) == 1, what="the good message")
    finally:
        pub.close()
    assert bad.counts == {("mq", "malformed_json"): 1, ("mq", "missing_path"): 1, ("mq", "wrong_type"): 3,
                          ("mq", "payload_too_large"): 1, ("mq", "unknown_machine"): 1, ("mq", "bad_timestamp"): 1}
    assert [r.value for r in readings(events)] == ["ACTIVE"]


async def test_discovery_registers_machines_by_pattern(mosquitto: Mosquitto) -> None:
    """Test that `discover` emits MachineFound once per new machine with the profile of the first
    matching pattern (and the line from the topic), and counts machines matching none."""
    bad = BadInput()
    sub = {**JSON_SUB, "signals": {"execution": "exec"},
           "discover": [{"match": "cnc-*", "profile": "lathe"}, {"match": "mill-*", "profile": "mill"}]}
    adapter = make_adapter(make_source(mosquitto, subscriptions=[sub]), bad=bad)
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            for mid in ("cnc-01", "mill-02", "cnc-01", "robot-3"):
                pub.publish(f"factory/sz/line-{mid[-1]}/{mid}/status", json.dumps({"exec": "READY"}))
            await until(lambda: len(readings(events)) == 3, what="three readings")
    finally:
        pub.close()
    found = [e for e in events if isinstance(e, MachineFound)]
    assert [(f.machine, f.profile, f.line, f.source) for f in found] == [
        ("cnc-01", "lathe", "line-1", "mq"), ("mill-02", "mill", "line-2", "mq")]
    assert found[0].signals == {"execution": "exec"}
    first = next(i for i, e in enumerate(events) if isinstance(e, Sample))
    assert events.index(found[0]) < first  # found before its first reading
    assert bad.counts == {("mq", "unknown_machine"): 1}


async def test_status_topic_takes_the_machine_offline_at_once(mosquitto: Mosquitto) -> None:
    """Test that a last-will "offline" on a machine's status topic becomes Connectivity(online=False)
    for that machine, and "online" brings it back."""
    source = make_source(mosquitto, subscriptions=[JSON_SUB],
                         status=[{"topic": "factory/{plant}/{line}/{machine}/lwt"}])
    adapter = make_adapter(source, [machine("cnc-07")])
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            # The machine's gateway with a will: gone without DISCONNECT, the broker publishes "offline".
            gateway = paho.Client(CallbackAPIVersion.VERSION2, client_id="gateway-7")
            gateway.will_set("factory/sz/turning/cnc-07/lwt", "offline", qos=1)
            gateway.connect(mosquitto.host, mosquitto.port, 5)
            gateway.loop_start()
            gateway.publish("factory/sz/turning/cnc-07/lwt", "online", qos=1).wait_for_publish(5)
            await until(lambda: len(events) == 1, what="online")
            before = time.time_ns()
            gateway.loop_stop()
            sock = gateway.socket()
            assert sock is not None
            sock.close()  # a dead gateway: the connection ends without DISCONNECT, so the broker sends the will
            await until(lambda: len(events) == 2, within=15, what="the will")
    finally:
        pub.close()
    online, offline = events
    assert isinstance(online, Connectivity) and online.online and online.machines == ("cnc-07",)
    assert isinstance(offline, Connectivity) and not offline.online and offline.machines == ("cnc-07",)
    assert offline.ts_ns >= before and "offline" in offline.reason


async def test_sparkplug_state_payloads_on_a_status_topic(mosquitto: Mosquitto) -> None:
    """Test that Sparkplug STATE payloads on a status topic (3.0: JSON with `online`; 2.2: the text
    OFFLINE/ONLINE) take the machines offline and back, and a JSON object without `online` is bad input."""
    bad = BadInput()
    source = make_source(mosquitto, subscriptions=[JSON_SUB], status=[{"topic": "spBv1.0/STATE/{machine}"}])
    adapter = make_adapter(source, [machine("cnc-07")], bad=bad)
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            for payload in ['{"online": false, "timestamp": 1668114759262}', "{}", '{"online": true, "timestamp": 1}',
                            "OFFLINE"]:
                pub.publish("spBv1.0/STATE/cnc-07", payload)
            await until(lambda: len(events) == 3, what="three STATE messages")
    finally:
        pub.close()
    assert [(e.online, e.machines) for e in events if isinstance(e, Connectivity)] == [
        (False, ("cnc-07",)), (True, ("cnc-07",)), (False, ("cnc-07",))]
    assert bad.counts == {("mq", "unknown_status"): 1}


async def test_persistent_session_delivers_what_was_published_while_away(mosquitto: Mosquitto) -> None:
    """Test that with the default persistent session, QoS 1 messages published while the collector
    was disconnected arrive when it connects again, even across a broker restart in between."""
    source = make_source(mosquitto, subscriptions=[{"topic": "plc/{machine}/{signal}", "payload": "value"}])
    pub = Publisher(mosquitto)
    try:
        async with running(make_adapter(source, [machine("m1")])):
            pass  # creates the session and its subscription
        for i in range(50):
            pub.publish("plc/m1/count", str(i))
        pub.close()
        mosquitto.stop()  # the queued messages survive in mosquitto's persistence file
        mosquitto.start()
        pub = Publisher(mosquitto)
        async with running(make_adapter(source, [machine("m1")])) as events:
            await until(lambda: len(events) == 50, what="the queued messages")
    finally:
        pub.close()
    assert [r.value for r in readings(events)] == list(range(50))


async def test_backlog_larger_than_the_buffer_arrives_whole_and_in_order(mosquitto: Mosquitto) -> None:
    """Test that a session backlog larger than the adapter's buffer (reading pauses at the high-water
    mark, TCP pushes back to the broker) is delivered whole and in order, SUBACK included."""
    source = make_source(mosquitto, subscriptions=[{"topic": "plc/{machine}/{signal}", "payload": "value"}])
    async with running(make_adapter(source, [machine("m1")])):
        pass
    pub = Publisher(mosquitto)
    try:
        for i in range(600):
            pub.publish("plc/m1/count", str(i), wait=False)
        pub.publish("plc/m1/count", "600")
        adapter = make_adapter(source, [machine("m1")])
        adapter.high_water, adapter.low_water = 50, 10
        async with running(adapter) as events:
            await until(lambda: len(events) == 601, what="the backlog")
            assert adapter._client is not None
            socket_reads = adapter._client.socket_reads
    finally:
        pub.close()
    assert [r.value for r in readings(events)] == list(range(601))
    # About 6 here (the broker sends 100 unacknowledged messages at a time); paho alone reads 3 per message.
    assert 0 < socket_reads < 601, "the socket is read in chunks through _sock_recv, not per packet"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_acknowledged_batches_are_not_delivered_again_and_the_rest_are(mosquitto: Mosquitto,
                                                                              protocol: str) -> None:
    """Test that the PUBACKs the adapter writes for a batch (all in one write) are taken by the
    broker: after a clean disconnect, a kept session delivers again exactly the messages whose
    batch was never acknowledged, and nothing that was."""
    source = make_source(mosquitto, protocol=protocol, subscriptions=[{"topic": "plc/{machine}/{signal}",
                                                                       "payload": "value"}])
    async with running(make_adapter(source, [machine("m1")])):
        pass  # the session and its subscription
    pub = Publisher(mosquitto)
    acked: list[int] = []
    seen: list[int] = []
    try:
        adapter = make_adapter(source, [machine("m1")])
        async with adapter:
            batches = aiter(adapter)
            for i in range(300):
                pub.publish("plc/m1/count", str(i), wait=i in (149, 299))
                if i == 149:  # the first half is read and acknowledged, batch by batch
                    while len(seen) < 150:
                        batch = await anext(batches)
                        seen += [r.value for r in readings(batch.events)]
                        assert batch.ack is not None
                        batch.ack()
                    acked = list(seen)
            while len(seen) < 300:  # the second half is read and never acknowledged
                seen += [r.value for r in readings((await anext(batches)).events)]
            assert adapter._client is not None
            adapter._client.loop_write()  # the last PUBACKs out before the DISCONNECT
        assert seen == list(range(300)) and acked == list(range(150))
        async with running(make_adapter(source, [machine("m1")])) as again:
            pub.publish("plc/m1/count", "300")
            await until(lambda: any(r.value == 300 for r in readings(again)), what="the new message")
    finally:
        pub.close()
    assert [r.value for r in readings(again)] == list(range(150, 301))


async def test_redelivered_messages_are_counted_by_their_dup_flag(mosquitto: Mosquitto) -> None:
    """Test that messages a kept session delivers again (read, never acknowledged) carry the DUP flag
    and each batch says how many it holds (collector/reorder.py counts them and, while catching up,
    keeps its window open a little longer), and that first deliveries are not counted."""
    source = make_source(mosquitto, protocol="3.1.1", subscriptions=[{"topic": "plc/{machine}/{signal}",
                                                                      "payload": "value"}])
    async with running(make_adapter(source, [machine("m1")])):
        pass  # the session and its subscription
    pub = Publisher(mosquitto)
    try:
        first, again = make_adapter(source, [machine("m1")]), make_adapter(source, [machine("m1")])
        counts: list[tuple[int, int]] = []  # (readings, redelivered) per batch
        async with first:
            for i in range(20):
                pub.publish("plc/m1/count", str(i), wait=i == 19)
            batches = aiter(first)
            while sum(n for n, _ in counts) < 20:  # read, never acknowledged
                batch = await anext(batches)
                counts.append((len(readings(batch.events)), batch.redelivered))
        assert sum(d for _, d in counts) == 0
        counts.clear()
        async with again:
            batches = aiter(again)
            while sum(n for n, _ in counts) < 20:
                batch = await anext(batches)
                counts.append((len(readings(batch.events)), batch.redelivered))
                assert batch.ack is not None
                batch.ack()
        assert sum(d for _, d in counts) == 20
    finally:
        pub.close()


async def test_connection_loss_raises_source_error(mosquitto: Mosquitto) -> None:
    """Test that the iterator raises SourceError when the broker goes away (the supervisor reconnects),
    and that connecting to a stopped broker raises SourceError too."""
    source = make_source(mosquitto, subscriptions=[{"topic": "plc/{machine}/{signal}", "payload": "value"}])
    adapter = make_adapter(source, [machine("m1")])
    async with adapter:
        mosquitto.stop()
        with pytest.raises(SourceError):
            async with asyncio.timeout(10):
                async for _ in adapter:
                    pass
    with pytest.raises(SourceError, match="cannot connect"):
        async with make_adapter(source, [machine("m1")]):
            pass
    mosquitto.start()


def test_shared_group_is_refused_with_what_to_use_instead(mosquitto: Mosquitto) -> None:
    """Test that `shared_group` is a config error: mosquitto hands a topic's messages to a group's
    members in turn, so each collector would see part of every machine (see `shard:` instead)."""
    with pytest.raises(ValueError, match=r"splits a machine across collectors.*shard: \{index: N, count: M\}"):
        make_source(mosquitto, shared_group="collectors",
                    subscriptions=[{"topic": "plc/{machine}/{signal}", "payload": "value"}])


async def test_tls_with_client_certificate(mosquitto_tls: Mosquitto, tmp_path: Path) -> None:
    """Test that the adapter connects over TLS with a client certificate to a broker that requires
    one, and that without the client certificate the broker refuses it."""
    tls = mosquitto_tls.tls
    assert tls is not None
    sub = [{"topic": "plc/{machine}/{signal}", "payload": "value"}]
    source = make_source(mosquitto_tls, subscriptions=sub, tls={
        "ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)})
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="tls-pub")
    pub.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    pub.connect("127.0.0.1", mosquitto_tls.port)
    pub.loop_start()
    try:
        async with running(make_adapter(source, [machine("m1")])) as events:
            pub.publish("plc/m1/running", "1", qos=1).wait_for_publish(10)
            await until(lambda: len(events) == 1, what="a reading over TLS")
            # More than one read burst, decrypted into memory in 16 KiB TLS records: nothing stalls.
            infos = [pub.publish("plc/m1/count", str(i), qos=1) for i in range(1000)]
            for info in infos:
                info.wait_for_publish(10)
            await until(lambda: len(events) == 1001, what="a burst over TLS")
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert readings(events)[0].value == 1
    assert [r.value for r in readings(events)[1:]] == list(range(1000))
    no_cert = make_source(mosquitto_tls, subscriptions=sub, tls={"ca_file": str(tls.ca)})
    with pytest.raises(SourceError):
        async with make_adapter(no_cert, [machine("m1")]):
            pass
