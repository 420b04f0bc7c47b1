"""``collector exchange`` against a real mosquitto: a real plant collector's feed and forged
messages in, the offers API, search, metrics and OpenAPI out; two exchanges side by side answer
the same; a restart rebuilds the index from the retained offers; a plant's will takes it offline."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion

from tests.capacity_helpers import PLANT, PREFIX, PRIVATE_STRINGS, PUBLIC, plant_running
from tests.exchange_helpers import comparable, exchanges, offer, payload, status
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until, wait_for
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one of the OpenAPI document's component schemas (its refs resolve in it)."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


async def test_a_plant_feed_through_two_exchanges(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that two exchanges show exactly the plant's public machines with the states the plant
    reports, drop forged and malformed offers (counted by why), agree with each other, and that a
    restarted one rebuilds the same index from the broker's retained messages."""
    async with plant_running(mosquitto, tmp_path, period="1s") as plant:
        plant.set_state("pub-lathe", exec="ACTIVE")
        plant.set_state("pub-mill", exec="READY")
        await until(lambda: plant.engine.snapshot()["pub-mill"].state.value == "idle", 10, "mill idle")
        forger = Publisher(mosquitto)
        now = dt.datetime.now(dt.UTC)
        # Under plant-9's name, but the payload says another plant; and a record the schema refuses.
        forger.publish(f"{PREFIX}/{PLANT}/fake-mill", payload(offer("plant-x", "fake-mill", now)), retain=True)
        forger.publish(f"{PREFIX}/{PLANT}/bad-mill", payload({**offer(PLANT, "bad-mill", now), "reason": "x"}),
                       retain=True)
        forger.close()
        with exchanges(mosquitto.port, tmp_path, 2, PREFIX) as (one, two):
            def machines(ex: Any) -> list[tuple[str, str]]:
                return [(o["machine"], o["state"]) for o in ex.get("/api/v1/offers")]

            expected = [("pub-mill", "idle"), ("pub-lathe", "busy")]  # free now first
            await until(lambda: machines(one) == expected and machines(two) == expected, 15, "both exchanges")
            assert comparable(one.get("/api/v1/offers")) == comparable(two.get("/api/v1/offers"))
            offers = one.get("/api/v1/offers")
            doc = one.get("/api/v1/openapi.json")
            for o in offers:
                validator(doc, "Offer").validate(o)
            assert {(o["plant"], o["machine"]) for o in offers} == {(PLANT, m) for m in PUBLIC}
            text = json.dumps(offers) + one.get("/")
            assert not any(secret in text for secret in PRIVATE_STRINGS)
            mill = one.get(f"/api/v1/offers/{PLANT}/pub-mill")
            assert (mill["free_now"], mill["exchange"]["plant_online"], mill["exchange"]["stale"]) \
                == (True, True, False)
            # The plant reads JSON on change with no status topic nor stale_after: it cannot tell silence
            # from idle, so the evidence is the mill's last message (seconds ago), not the record's age.
            assert mill["evidence"]["silence_detected_by"] == [] and mill["evidence"]["last_heard"] is not None
            assert mill["exchange"]["silence_detected"] is False
            assert 0 < mill["exchange"]["evidence_age_s"] < 60
            assert [o["machine"] for o in one.get("/api/v1/offers?capability.process=milling")] == ["pub-mill"]
            assert [o["machine"] for o in one.get("/api/v1/offers?capability.max_diameter_mm>=300")] == ["pub-lathe"]
            assert one.get("/api/v1/offers?capability.max_diameter_mm>300") == []
            assert one.status("/api/v1/offers?colour=red") == 400
            assert one.status(f"/api/v1/offers/{PLANT}/fake-mill") == 404
            for ex in (one, two):
                text = ex.get("/metrics")
                assert metric(text, "exchange_rejected_offers_total", why="plant_mismatch") == 1
                assert metric(text, "exchange_rejected_offers_total", why="schema") == 1
                assert metric(text, "exchange_offers") == 2
                assert metric(text, "exchange_plants") == 1
                assert metric(text, "exchange_plants_offline") == 0
                assert metric(text, "exchange_subscribed") == 1
                assert metric(text, "exchange_messages_total") >= 5  # 2 offers, status, 2 forged
            plant.set_state("pub-lathe", exec="READY")
            await until(lambda: machines(one) == [("pub-lathe", "idle"), ("pub-mill", "idle")]
                     and machines(two) == machines(one), 10, "the lathe's change in both")
            one.stop()
            one.start()  # nothing kept: rebuilt from the retained offers
            await until(lambda: comparable(one.get("/api/v1/offers")) == comparable(two.get("/api/v1/offers")), 10,
                     "the restarted exchange to agree")
            assert len(one.get("/api/v1/offers")) == 2
    # The plant stopped cleanly: its feed said offline; both show its machines offline, not free.
    # (The exchanges are gone with the block above; a third one starts from the retained messages.)
    with exchanges(mosquitto.port, tmp_path, 1, PREFIX) as (three,):
        await until(lambda: len(three.get("/api/v1/offers")) == 2, 10, "the retained offers")
        assert {(o["state"], o["free_now"]) for o in three.get("/api/v1/offers")} == {("offline", False)}
        assert three.get("/api/v1/plants") == [
            {"plant": PLANT, "online": False, "updated": three.get("/api/v1/plants")[0]["updated"], "offers": 2,
             "free_now": 0}]


def _plant_with_will(broker: Mosquitto, plant: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feed-{plant}")
    client.will_set(f"capacity/{plant}/_status", status(plant, False, dt.datetime.now(dt.UTC)), qos=1, retain=True)
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    return client


async def test_search_across_plants_and_a_plant_whose_will_fires(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test the demand search over HTTP across two plants (ranked by forecast free hours in the
    window, with the hours that make them), and that a plant whose connection dies (its last will
    fires) drops out of the search and shows offline, while the other plant stays."""
    now = dt.datetime.now(dt.UTC)
    north, south = _plant_with_will(mosquitto, "north"), _plant_with_will(mosquitto, "south")
    records = {("north", "mill-5ax"): offer("north", "mill-5ax", now, share=0.8,
                                            capabilities={"process": "milling", "axes": 5}),
               ("south", "mill-3ax"): offer("south", "mill-3ax", now, share=0.4,
                                            capabilities={"process": "milling", "axes": 3}),
               ("south", "lathe"): offer("south", "lathe", now, share=1.0, capabilities={"process": "turning"})}
    for (plant, machine), rec in records.items():
        client = north if plant == "north" else south
        client.publish(f"capacity/{plant}/{machine}", payload(rec), qos=1, retain=True).wait_for_publish(10)
    for plant, client in (("north", north), ("south", south)):
        client.publish(f"capacity/{plant}/_status", status(plant, True, now), qos=1, retain=True).wait_for_publish(10)
    with exchanges(mosquitto.port, tmp_path) as (ex,):
        await until(lambda: len(ex.get("/api/v1/offers")) == 3, 10, "three offers")
        result = ex.get("/api/v1/search?capability.process=milling&hours=40&within_days=2")
        validator(ex.get("/api/v1/openapi.json"), "SearchResult").validate(result)
        assert [(m["plant"], m["machine"]) for m in result["machines"]] \
            == [("north", "mill-5ax"), ("south", "mill-3ax")]
        assert [m["free_hours"] for m in result["machines"]] == pytest.approx([0.8 * 48, 0.4 * 48], abs=0.01)
        assert (result["enough"], result["machines_needed"]) == (True, 2)
        assert result["machines"][0]["windows"][0]["start"] == result["from"]
        five = ex.get("/api/v1/search?capability.axes>=5&hours=10&within_days=1")
        assert [m["machine"] for m in five["machines"]] == ["mill-5ax"]
        assert five["machines_needed"] == 1
        # north's connection dies without a goodbye: the broker publishes its will.
        north.socket().close()
        north.loop_stop()
        await until(lambda: ex.get("/api/v1/plants")[0]["online"] is False, 60, "north's will")
        assert [(m["plant"], m["machine"]) for m in
                ex.get("/api/v1/search?capability.process=milling&hours=40&within_days=2")["machines"]] \
            == [("south", "mill-3ax")]
        shown = {o["machine"]: (o["state"], o["free_now"]) for o in ex.get("/api/v1/offers")}
        assert shown == {"mill-5ax": ("offline", False), "mill-3ax": ("idle", True), "lathe": ("idle", True)}
        assert metric(ex.get("/metrics"), "exchange_plants_offline") == 1
        assert ex.status("/api/v1/search?hours=0") == 400
    south.disconnect()
    south.loop_stop()


async def test_a_silent_machine_on_a_blind_source_is_not_free_at_the_exchange(mosquitto: Mosquitto,
                                                                              tmp_path: Path) -> None:
    """Test the evidence bound: the plant's JSON source cannot tell silence from idle, so once the
    mill has sent nothing for longer than --stale-after, the exchange no longer counts it free now
    (the plant itself still says idle, and keeps refreshing the record), and counts it again when
    the mill speaks."""
    async with plant_running(mosquitto, tmp_path, period="1s") as plant:
        plant.set_state("pub-mill", exec="READY")
        await until(lambda: plant.engine.snapshot()["pub-mill"].state.value == "idle", 10, "mill idle")
        with exchanges(mosquitto.port, tmp_path, 1, PREFIX, "--stale-after", "3s") as (ex,):
            def mill() -> dict[str, Any]:
                found: dict[str, Any] = ex.get(f"/api/v1/offers/{PLANT}/pub-mill")
                return found

            # First the record the plant made once the mill was idle (the retained one may be older)...
            await until(lambda: mill()["free_now"], 15, "the mill free at the exchange")
            # ...then nothing more from the mill: its evidence ages past the bound.
            await until(lambda: mill()["exchange"]["stale"], 15, "the mill's evidence to age")
            seen = mill()
            # (> 3 s; shown rounded to 0.1 s, so 3.04 shows as 3.0)
            assert (seen["state"], seen["free_now"], seen["exchange"]["evidence_age_s"] >= 3) == ("idle", False, True)
            assert plant.capacity.record("pub-mill")["free_now"] is True  # the plant cannot tell
            plant.set_state("pub-mill", exec="READY")  # the same state again: heard, so fresh evidence
            await until(lambda: mill()["free_now"], 10, "the mill free again")


def test_the_server_refuses_an_oversized_request_head(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test the limit set on uvicorn: a request head that grows past 16 KiB before it ends is
    refused with 400 and the connection closed; the next request is served."""
    with exchanges(mosquitto.port, tmp_path) as (ex,):
        with socket.create_connection(("127.0.0.1", ex.port), timeout=10) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
            answer = conn.recv(200)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert ex.get("/healthz")["ok"] is True


def test_a_broker_restart_rebuilds_the_index(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that while the broker is away /healthz says so (503), and that on reconnect the
    exchange starts over from the retained offers: an offer deleted meanwhile is gone."""
    now = dt.datetime.now(dt.UTC)
    publisher = Publisher(mosquitto)
    for machine in ("mill", "lathe"):
        publisher.publish(f"capacity/north/{machine}", payload(offer("north", machine, now)), retain=True)
    with exchanges(mosquitto.port, tmp_path) as (ex,):
        wait_for(lambda: len(ex.get("/api/v1/offers")) == 2, 10, "two offers")
        # Delete the lathe's retained offer where the exchange cannot see it: on a broker restart the
        # persisted retained messages come back without it, and no deletion is ever sent.
        mosquitto.stop()
        wait_for(lambda: ex.status("/healthz") == 503, 10, "health to say the broker is away")
        (mosquitto.dir / "mosquitto.db").unlink()  # a broker that lost its retained messages...
        mosquitto.start()
        refill = Publisher(mosquitto)
        refill.publish("capacity/north/mill", payload(offer("north", "mill", now)), retain=True)  # ...and got one
        wait_for(lambda: ex.status("/healthz") == 200, 40, "the exchange back (paho retries within 30 s)")
        wait_for(lambda: [o["machine"] for o in ex.get("/api/v1/offers")] == ["mill"], 10, "the rebuilt index")
        refill.close()
    publisher.close()
