"""The exchange on a clustered broker: Debian's nats-server, 3 nodes with MQTT and JetStream
(tests/fixtures/nats.py). What nats-server keeps of retained messages, and a node lost for good
(SIGKILL): the offers survive and the exchange goes on (docs/EXCHANGE.md, "A clustered broker")."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.exchange_helpers import PREFIX, RunningExchange, offer, payload, status
from tests.fixtures._ports import wait_for
from tests.fixtures.nats import NatsCluster

PLANTS = 10
MACHINES = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats", 3)
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


def _publisher(port: int, name: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv311)  # nats: MQTT 3.1.1
    client.reconnect_delay_set(0.2, 2)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def _send(client: paho.Client, topic: str, body: bytes) -> None:
    info = client.publish(topic, body, qos=1, retain=True)
    info.wait_for_publish(timeout=30)
    assert info.is_published(), topic


def _exchange(port: int, tmp: Path) -> RunningExchange:
    ex = RunningExchange(port, tmp, PREFIX, "--mqtt-protocol", "3.1.1")
    return ex.start(ready=False)


def _count(ex: RunningExchange) -> int:
    try:
        return int(ex.get("/healthz")["offers"])
    except Exception:
        return -1


def test_retained_offers_survive_a_lost_node_and_the_exchange_goes_on(cluster: NatsCluster, tmp_path: Path) -> None:
    """Test what nats-server keeps of retained offers (the latest per topic; an empty payload
    deletes one) across a 3-node cluster, then SIGKILL the node that took them: the running
    exchange (on another node) keeps every offer and shows an update sent to the third node, and
    an exchange started cold on the third node finds every retained offer."""
    n1, n2, n3 = cluster.nodes
    now = dt.datetime.now(dt.UTC)
    pub = _publisher(n1.mqtt_port, "plants-on-n1")
    keys = [(f"plant-{p}", f"m-{m:02d}") for p in range(PLANTS) for m in range(MACHINES)]
    for p in range(PLANTS):
        _send(pub, f"{PREFIX}/plant-{p}/_status", status(f"plant-{p}", True, now))
    for plant, machine in keys:
        _send(pub, f"{PREFIX}/{plant}/{machine}", payload(offer(plant, machine, now, state="busy")))
    # Kept: the latest message per topic (an offer replaced), none for a deleted one.
    _send(pub, f"{PREFIX}/plant-0/m-00", payload(offer("plant-0", "m-00", now, state="idle")))
    _send(pub, f"{PREFIX}/plant-0/m-01", b"")
    expected = len(keys) - 1
    pub.loop_stop()
    pub.disconnect()

    running = _exchange(n2.mqtt_port, tmp_path)
    try:
        wait_for(lambda: _count(running) == expected, 60, "the exchange on node 2 indexing every offer")
        assert running.get("/api/v1/offers/plant-0/m-00")["state"] == "idle"
        assert running.status("/api/v1/offers/plant-0/m-01") == 404

        cluster.kill(n1)  # the node that took every offer, gone without a goodbye
        assert _count(running) == expected  # the index does not depend on the node

        later = _publisher(n3.mqtt_port, "plants-on-n3")
        changed = offer("plant-5", "m-07", dt.datetime.now(dt.UTC), state="idle")
        deadline = time.monotonic() + 60
        while True:
            # The cluster elects new stream leaders first: meanwhile a publish may time out, or the
            # node drops the connection (paho reconnects); a plant's feed sends again likewise.
            try:
                info = later.publish(f"{PREFIX}/plant-5/m-07", json.dumps(changed).encode(), qos=1, retain=True)
                info.wait_for_publish(timeout=10)
                if info.is_published():
                    break
            except RuntimeError:  # not connected at the moment
                wait_for(later.is_connected, 30, "the publisher reconnected to node 3")
            assert time.monotonic() < deadline, "no publish accepted by node 3 within 60 s of the kill"
        wait_for(lambda: running.get("/api/v1/offers/plant-5/m-07")["updated"] == changed["updated"], 60,
                 "the update sent to node 3 on the exchange of node 2")
        later.loop_stop()
        later.disconnect()

        cold = _exchange(n3.mqtt_port, tmp_path)
        try:
            started = time.monotonic()
            wait_for(lambda: _count(cold) == expected, 90, "a cold exchange on node 3 finding every retained offer")
            print(f"cold exchange on node 3 after the kill: {expected} offers in {time.monotonic() - started:.1f} s")
            # The count says every offer is there, not that the replaced one is its newer copy: one CI
            # run saw the older copy at this point (cause not found: node 3's retained set settling
            # after the kill, or delivery order). The change must reach it within the deadline.
            wait_for(lambda: cold.get("/api/v1/offers/plant-5/m-07")["updated"] == changed["updated"], 30,
                     "the update sent to node 3 on the cold exchange of node 3")
            assert cold.status("/api/v1/offers/plant-0/m-01") == 404
        finally:
            cold.stop()
    finally:
        running.stop()
