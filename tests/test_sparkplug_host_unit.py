"""The Sparkplug primary host role without a broker: the STATE messages (3.0 JSON and 2.2 text),
what the decoder answers to messages on its own STATE topic, and the config rules (host_id's
form, shard 0 only, never in `collector check`). tests/test_sparkplug_host.py runs it against
mosquitto and an edge node of another library."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.mqtt.commands import Publish
from adapters.mqtt.config import MqttSource
from adapters.mqtt.decoder import MqttDecoder
from adapters.mqtt.host import PrimaryHost
from collector.check import _read_only
from collector.core.badinput import BadInput
from tests.fixtures._mqtt import machine
from tests.fixtures._sparkplug import BOOLEAN, INT64, STRING, M, payload

SUB = {"topic": "spBv1.0/{group}/#", "payload": "sparkplug_b"}
T = 1_764_000_000_123  # ms


def source(**fields: Any) -> MqttSource:
    data: dict[str, Any] = {"id": "spb", "type": "mqtt", "host": "broker", "subscriptions": [SUB], **fields}
    return MqttSource.model_validate(data)


def state(message: Publish) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(message.payload)
    return out


def test_v3_will_birth_and_death_share_the_connect_timestamp() -> None:
    """Test that the 3.0 will, birth and death go to `spBv1.0/STATE/<id>` retained at QoS 1 as JSON
    `{"online", "timestamp"}`, all stamped with the connect time, and a reconnect stamps anew."""
    host = PrimaryHost("plant-3", "3.0")
    will = host.will(T)
    birth, death = host.birth(), host.death()
    for message in (will, birth, death):
        assert (message.topic, message.qos, message.retain) == ("spBv1.0/STATE/plant-3", 1, True)
    assert [state(m) for m in (will, birth, death)] == [
        {"online": False, "timestamp": T}, {"online": True, "timestamp": T}, {"online": False, "timestamp": T}]
    assert state(host.will(T + 5000)) == {"online": False, "timestamp": T + 5000}
    assert state(host.birth()) == {"online": True, "timestamp": T + 5000}


def test_v22_state_is_plain_text_on_the_old_topic() -> None:
    """Test that the 2.2 form is `ONLINE`/`OFFLINE` on `STATE/<id>`, retained, QoS 1."""
    host = PrimaryHost("scada", "2.2")
    assert host.will(T) == Publish("STATE/scada", b"OFFLINE", 1, True)
    assert host.birth() == Publish("STATE/scada", b"ONLINE", 1, True)
    assert host.death() == Publish("STATE/scada", b"OFFLINE", 1, True)


def test_own_offline_while_online_publishes_the_birth_again(caplog: pytest.LogCaptureFixture) -> None:
    """Test the answers to our own STATE topic: before the birth nothing (it is on its way); our
    birth's echo nothing; an older or equal offline (a late will) the birth again; a newer one (a
    second host with our id) nothing but one warning; garbage and an empty payload nothing."""
    host = PrimaryHost("h", "3.0")
    host.will(T)
    older = json.dumps({"online": False, "timestamp": T - 60_000}).encode()
    assert host.seen(older) == []  # the retained will of the last run, read before our birth
    birth = host.birth()
    assert host.seen(birth.payload) == []
    assert host.seen(older) == [birth]
    assert host.seen(json.dumps({"online": False, "timestamp": T}).encode()) == [birth]  # this connection's will
    newer_off = json.dumps({"online": False, "timestamp": T + 1}).encode()
    newer_on = json.dumps({"online": True, "timestamp": T + 1}).encode()
    with caplog.at_level(logging.WARNING):
        assert host.seen(newer_off) == [] and host.seen(newer_on) == []
    assert sum("another client acts as this host" in r.message for r in caplog.records) == 1
    assert host.seen(b"") == [] and host.seen(b"\xff{") == [] and host.seen(b'{"online": "no"}') == []
    assert host.seen(b"OFFLINE") == [birth]  # a 2.2 client on our topic says we are gone: we are not
    host.death()
    assert host.seen(older) == []  # stopping: no birth after our own death


def test_v22_offline_publishes_online_again() -> None:
    """Test that in the 2.2 form an `OFFLINE` on our topic while online is answered with `ONLINE`."""
    host = PrimaryHost("scada", "2.2")
    host.will(T)
    host.birth()
    assert host.seen(b"OFFLINE") == [Publish("STATE/scada", b"ONLINE", 1, True)]
    assert host.seen(b"ONLINE") == []


@pytest.mark.parametrize(("version", "topic"), [("3.0", "spBv1.0/STATE/h-1"), ("2.2", "STATE/h-1")])
def test_decoder_routes_its_own_state_topic_to_the_host(version: str, topic: str) -> None:
    """Test that the decoder subscribes to its own STATE topic (a 2.2 one too, outside `spBv1.0/`),
    answers an offline there with the birth, ignores other hosts' STATE, and counts none of it as bad input."""
    bad = BadInput()
    decoder = MqttDecoder(source(host_id="h-1", sparkplug_version=version), [machine("cnc-07")], bad)
    assert decoder.host is not None and decoder.filters() == ["spBv1.0/+/#", topic]
    decoder.host.will(T)
    birth = decoder.host.birth()
    offline = b"OFFLINE" if version == "2.2" else json.dumps({"online": False, "timestamp": T - 1}).encode()
    assert decoder.feed(topic, offline, T * 1_000_000) == ([], [birth])
    assert decoder.feed("spBv1.0/STATE/someone-else", b'{"online": false, "timestamp": 1}', 0) == ([], [])
    assert bad.counts == {}


def test_a_primary_host_asks_for_rebirths_without_the_rebirth_flag() -> None:
    """Test that with `host_id` a sequence gap is answered with NCMD `Node Control/Rebirth`, as `rebirth: true` does."""
    decoder = MqttDecoder(source(host_id="h"), [machine("cnc-07")], BadInput())
    decoder.feed("spBv1.0/G/NBIRTH/edge", payload([M("bdSeq", datatype=INT64, value=0),
                                                   M("Node Control/Rebirth", 1, BOOLEAN, False)], seq=0), 0)
    _, commands = decoder.feed("spBv1.0/G/DBIRTH/edge/cnc-07", payload([M("x", 2, STRING, "a")], seq=5), 0)
    assert [c.topic for c in commands] == ["spBv1.0/G/NCMD/edge"] and commands[0].qos == 0


@pytest.mark.parametrize("host_id", ["", "a/b", "plant+", "#", "x\0y"])
def test_host_id_must_be_one_topic_level(host_id: str) -> None:
    """Test that a host_id that is empty or holds `/`, `+`, `#` (or NUL) is refused, naming the key."""
    with pytest.raises(ValidationError, match="host_id"):
        source(host_id=host_id)


def test_host_id_needs_a_sparkplug_subscription() -> None:
    """Test that `host_id` on a source without a `sparkplug_b` subscription is refused."""
    with pytest.raises(ValidationError, match="host_id: the Sparkplug host role needs a `sparkplug_b` subscription"):
        source(host_id="h", subscriptions=[{"topic": "f/{machine}/s"}])


@given(st.text(min_size=1, max_size=40))
def test_host_id_accepted_exactly_when_it_is_one_level(host_id: str) -> None:
    """Test (property) that any non-empty host_id without `/+#` and NUL is accepted, its STATE topic has
    three levels with host_id the last, and its will and birth decode to the same timestamp."""
    one_level = not any(c in host_id for c in "/+#\0")
    try:
        source(host_id=host_id)
    except ValidationError:
        assert not one_level
        return
    assert one_level
    host = PrimaryHost(host_id)
    will = host.will(T)
    assert will.topic.split("/") == ["spBv1.0", "STATE", host_id]
    assert state(will)["timestamp"] == state(host.birth())["timestamp"] == T


def test_only_shard_zero_and_never_check_takes_the_host_role() -> None:
    """Test that shard 0 keeps `host_id`, any other shard drops it (and with it the rebirth requests it
    implied), and `collector check` reads the source without it."""
    src = source(host_id="h")
    assert src.in_shard(0).host_id == "h"
    other = src.in_shard(1)
    assert isinstance(other, MqttSource) and other.host_id is None and not other.rebirth
    checked = _read_only(src)
    assert isinstance(checked, MqttSource) and checked.host_id is None
    assert MqttDecoder(checked, [], BadInput()).host is None
