"""Plant to platform, with real brokers: two plants, each a `collector run` reading its own
mosquitto, whose capacity feed that broker bridges (deploy/mosquitto/plant-bridge.conf, over TLS,
with the plant's own credentials) to one platform mosquitto (deploy/mosquitto/platform.acl), read
by one `collector exchange`; and each plant's platform output writing the public machines'
history into one VictoriaMetrics. The direct mode (a plant's feed straight to the platform
broker, no bridge) runs the same way."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.exchange_helpers import exchanges, offer, payload
from tests.fixtures._ports import free_port, wait_for
from tests.fixtures.influxdb import VictoriaMetrics
from tests.fixtures.mosquitto import Mosquitto
from tests.platform_helpers import (
    PREFIX,
    PlantCollector,
    Platform,
    local_feed,
    publish,
    rejected,
    start_plant_broker,
    start_platform,
    vm_series,
)
from tests.test_exchange_trust import Client

pytestmark = pytest.mark.integration
USERS = {"plant-a": "secret-a", "plant-b": "secret-b", "plant-c": "secret-c", "exchange": "secret-x"}
PUBLIC = {"plant-a": ["mill-1", "mill-2"], "plant-b": ["mill-1", "lathe-7"]}
PRIVATE = {"plant-a": ["secret-a"], "plant-b": ["secret-b"]}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    running = start_platform(tmp_path / "platform", USERS)
    try:
        yield running
    finally:
        running.broker.stop()


def machines_idle(broker: Mosquitto, machines: list[str]) -> None:
    for machine in machines:
        publish(broker, f"shop/{machine}/status", json.dumps({"exec": "READY"}))


def public_pairs(offers: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(o["plant"], o["machine"]) for o in offers}


PAGE_ROWS = ("return [...document.querySelectorAll('#machines tbody tr')]"
             ".map(tr => [tr.dataset.plant, tr.dataset.machine]);")
WANT = {(plant, m) for plant, ms in PUBLIC.items() for m in ms}


def test_two_bridged_plants_show_their_public_machines_and_nothing_else(
        platform: Platform, victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """Test the bridge end to end: both plants' public machines (and only those) reach the
    exchange's offers and search through their bridges, retained (an exchange started later
    rebuilds the same); a forged offer is dropped: another plant's topic on a plant broker is not
    forwarded, a payload naming another plant or breaking the schema is counted and dropped by the
    exchange, and another plant's credentials are refused by the platform broker; a plant
    collector's last will crosses the bridge (its plant shows offline); and the platform's
    VictoriaMetrics holds both plants' public machines' history, no private machine. The offers
    API, the search and the cross-plant page (headless Chromium) agree."""
    brokers = {plant: start_plant_broker(tmp_path / plant, plant, platform) for plant in PUBLIC}
    collectors = {plant: PlantCollector(plant, tmp_path / f"{plant}-collector") for plant in PUBLIC}
    pw = tmp_path / "exchange.pw"
    pw.write_text(USERS["exchange"] + "\n")
    login = ("--username", "exchange", "--password-file", str(pw))
    try:
        for plant, broker in brokers.items():
            machines_idle(broker, PUBLIC[plant] + PRIVATE[plant])
            collectors[plant].start(broker, victoria_metrics.url, PUBLIC[plant], PRIVATE[plant], local_feed(broker))
        with exchanges(platform.broker.port, tmp_path, 1, PREFIX, *login) as (ex,):
            wait_for(lambda: public_pairs(ex.get("/api/v1/offers")) == WANT, 30, "both plants' public machines")
            # the search ranks by the forecast: it holds once a roll-up of the idle time is in a plant's profile
            wait_for(lambda: public_pairs(ex.get("/api/v1/search?hours=0.001&within_days=1")["machines"]) == WANT,
                     30, "both plants' public machines in the search")
            assert {p["plant"]: p["online"] for p in ex.get("/api/v1/plants")} == {"plant-a": True, "plant-b": True}
            assert ex.get("/api/v1/offers?capability.axes>=5&free_now=true") and \
                public_pairs(ex.get("/api/v1/offers?plant=plant-b")) == {("plant-b", m) for m in PUBLIC["plant-b"]}

            # Forgeries. On plant-a's broker (anyone on the plant network may publish there):
            now = dt.datetime.now(dt.UTC)
            a = brokers["plant-a"]
            publish(a, f"{PREFIX}/plant-b/mill-1", payload(offer("plant-b", "mill-1", now, state="busy")))
            publish(a, f"{PREFIX}/plant-a/mill-9", payload(offer("plant-b", "mill-9", now)))  # names plant-b
            publish(a, f"{PREFIX}/plant-a/mill-8", json.dumps({"machine": "mill-8", "plant": "plant-a"}))
            # The two after the first crossed the bridge (in order on one connection) and were dropped
            # by the exchange; the first never crossed (not this plant's topic).
            wait_for(lambda: rejected(ex.get("/metrics")).get("plant_mismatch", 0) >= 1
                     and rejected(ex.get("/metrics")).get("schema", 0) >= 1, 20, "the exchange to drop both")
            # Another plant's credentials, straight on the platform: refused by the broker.
            b_as_a = Client(platform.broker, "plant-b", USERS["plant-b"])
            assert b_as_a.publish(f"{PREFIX}/plant-a/mill-1",
                                  payload(offer("plant-a", "mill-1", now, state="busy"))).getName() == "Not authorized"
            b_as_a.close()
            offers = ex.get("/api/v1/offers")
            assert public_pairs(offers) == WANT and {o["state"] for o in offers} == {"idle"}

            # The cross-plant page, in a real browser: the same machines, nothing else.
            with chromium() as driver:
                driver.get(f"{ex.base}/")
                wait_for(lambda: {tuple(r) for r in driver.execute_script(PAGE_ROWS)} == WANT, 10,
                         "both plants' public machines on the page")
                assert "secret" not in driver.page_source

            # A restart rebuilds from the retained offers alone (the bridge kept the retain flag).
            with exchanges(platform.broker.port, tmp_path, 1, PREFIX, *login) as (late,):
                wait_for(lambda: public_pairs(late.get("/api/v1/offers")) == WANT, 20, "the retained offers")

            # plant-a's collector dies: its will, published by plant-a's broker, crosses the bridge.
            collectors["plant-a"].kill()
            wait_for(lambda: {p["plant"]: p["online"] for p in ex.get("/api/v1/plants")}
                     == {"plant-a": False, "plant-b": True}, 20, "plant-a offline at the exchange")
            assert {o["state"] for o in ex.get("/api/v1/offers?plant=plant-a")} == {"offline"}
            assert "secret" not in httpx.get(f"{ex.base}/api/v1/offers", timeout=10).text

        # History: the public machines of both plants, from both platform outputs; no private machine.
        def history() -> set[tuple[str, str]]:
            return {(s["plant"], s["machine"]) for s in vm_series(victoria_metrics.url, "machine_state_state_code")}
        wait_for(lambda: history() >= WANT, 20, "both plants' history in VictoriaMetrics")
        assert history() == WANT
        assert {(s["plant"], s["machine"]) for s in vm_series(victoria_metrics.url,
                                                               "machine_availability_idle_s")} == WANT
    finally:
        for c in collectors.values():
            c.stop()
        for broker in brokers.values():
            broker.stop()


def test_direct_mode_a_plant_feed_straight_to_the_platform_over_tls(platform: Platform,
                                                                     victoria_metrics: VictoriaMetrics,
                                                                     tmp_path: Path) -> None:
    """Test the direct mode: no plant broker bridge; the collector's feed logs into the platform
    broker's TLS listener as its plant (capacity.feed host, port, username, password, tls) and the
    exchange shows its public machines; the same feed naming another plant is refused (its offers
    never show)."""
    (tmp_path / "own").mkdir()
    own = Mosquitto(free_port(), tmp_path / "own")  # the plant's machines still come from its own broker
    own.start()
    feed = ("{enabled: true, host: 127.0.0.1, port: %d, username: %s, password: %s, topic_prefix: %s, "
            "period: 2s, tls: {ca_file: '%s'}}")
    direct = PlantCollector("plant-c", tmp_path / "plant-c")
    posing = PlantCollector("plant-a", tmp_path / "posing")  # plant-c's credentials, plant-a's name
    pw = tmp_path / "exchange.pw"
    pw.write_text(USERS["exchange"] + "\n")
    try:
        machines_idle(own, ["mill-3", "hidden-3"])
        direct.start(own, victoria_metrics.url, ["mill-3"], ["hidden-3"],
                     feed % (platform.tls_port, "plant-c", USERS["plant-c"], PREFIX, platform.pki.ca))
        posing.start(own, victoria_metrics.url, ["mill-3"], [],
                     feed % (platform.tls_port, "plant-c", USERS["plant-c"], PREFIX, platform.pki.ca))
        with exchanges(platform.broker.port, tmp_path, 1, PREFIX, "--username", "exchange",
                       "--password-file", str(pw)) as (ex,):
            wait_for(lambda: public_pairs(ex.get("/api/v1/offers")) == {("plant-c", "mill-3")}, 30,
                     "plant-c's public machine")
            # the posing feed logs in (plant-c's credentials are good) and every offer it sends is refused
            wait_for(lambda: "refused a message: Not authorized" in posing.log.read_text(), 20,
                     "the broker to refuse the posing feed")
            assert public_pairs(ex.get("/api/v1/offers")) == {("plant-c", "mill-3")}
            assert [p["plant"] for p in ex.get("/api/v1/plants")] == ["plant-c"]
    finally:
        direct.stop()
        posing.stop()
        own.stop()


def test_the_bridge_forwards_the_feed_only() -> None:
    """Test that deploy/mosquitto/plant-bridge.conf forwards one topic tree, the plant's feed, out
    only (nothing of the platform comes in; the machines' raw topics never go out), over TLS, and
    keeps its connection notices to itself."""
    from tests.platform_helpers import BRIDGE

    lines = [line.split() for line in BRIDGE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert [words for words in lines if words[0] == "topic"] == [["topic", "capacity/plant-berlin/#", "out", "1"]]
    keys = {words[0]: words[1:] for words in lines}
    assert keys["remote_username"] == ["plant-berlin"] and keys["address"][0].endswith(":8883")
    assert "bridge_cafile" in keys and keys["notifications"] == ["false"] and keys["cleansession"] == ["false"]
