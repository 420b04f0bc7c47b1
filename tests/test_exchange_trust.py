"""Trust on the platform broker: a real mosquitto with deploy/mosquitto/platform.acl and a
password file. A plant's credentials publishing under another plant are refused by the broker and
the exchange never shows the forged offer; the exchange's credentials cannot publish at all; and
the exchange reads over TLS with a client certificate."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.exchange_helpers import exchanges, offer, payload, status
from tests.fixtures._ports import free_port, wait_for
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
ACL = ROOT / "deploy" / "mosquitto" / "platform.acl"
USERS = {"plant-a": "secret-a", "plant-b": "secret-b", "exchange": "secret-x"}


@pytest.fixture
def platform_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    directory = tmp_path / "platform"
    directory.mkdir()
    passwd = directory / "passwd"
    for n, (user, password) in enumerate(USERS.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(passwd), user, password],
                       check=True, capture_output=True)
    broker = Mosquitto(free_port(), directory, anonymous=False,
                       extra=[f"password_file {passwd}", f"acl_file {ACL}"])
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """An MQTT 5 client that records each QoS 1 publish's PUBACK reason code."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"trust-{user}-{free_port()}",
                                  protocol=paho.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else USERS[user])
        self.acks: dict[int, ReasonCode] = {}
        self.connack: ReasonCode | None = None
        self.done = threading.Event()
        self.client.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)

        def on_connect(c: paho.Client, u: object, flags: object, reason: ReasonCode, props: object) -> None:
            self.connack = reason
            self.done.set()

        self.client.on_connect = on_connect
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        assert self.done.wait(10), "no CONNACK"

    def publish(self, topic: str, body: bytes) -> ReasonCode:
        info = self.client.publish(topic, body, qos=1, retain=True)
        wait_for(lambda: info.mid in self.acks, 10, f"the PUBACK of {topic}")
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_plant_cannot_publish_as_another_and_the_exchange_cannot_publish(platform_broker: Mosquitto,
                                                                          tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    (tmp_path / "exchange.pw").write_text(USERS["exchange"] + "\n")
    a = Client(platform_broker, "plant-a")
    assert a.connack is not None and not a.connack.is_failure
    assert a.publish("capacity/plant-a/_status", status("plant-a", True, now)).is_failure is False
    assert a.publish("capacity/plant-a/mill", payload(offer("plant-a", "mill", now))).is_failure is False
    with exchanges(platform_broker.port, tmp_path, 1, "capacity", "--username", "exchange", "--password-file",
                   str(tmp_path / "exchange.pw")) as (ex,):
        wait_for(lambda: [o["machine"] for o in ex.get("/api/v1/offers")] == ["mill"], 10, "plant-a's offer")
        # plant-a's credentials, plant-b's name (topic and payload agree: only the broker can stop it).
        forged = a.publish("capacity/plant-b/mill", payload(offer("plant-b", "mill", now)))
        assert forged.is_failure and forged.getName() == "Not authorized"
        assert a.publish("capacity/plant-b/_status", status("plant-b", False, now)).getName() == "Not authorized"
        # A later good offer from the same connection: once the exchange shows it, the forged one
        # (sent before it on that connection) would have arrived too.
        assert a.publish("capacity/plant-a/lathe", payload(offer("plant-a", "lathe", now))).is_failure is False
        wait_for(lambda: len(ex.get("/api/v1/offers")) == 2, 10, "plant-a's second offer")
        assert {(o["plant"], o["machine"]) for o in ex.get("/api/v1/offers")} == {("plant-a", "mill"),
                                                                                   ("plant-a", "lathe")}
        assert [p["plant"] for p in ex.get("/api/v1/plants")] == ["plant-a"]

        x = Client(platform_broker, "exchange")
        for topic in ("capacity/plant-a/mill", "capacity/exchange/mill", "capacity/plant-a/_status", "other"):
            assert x.publish(topic, payload(offer("plant-a", "mill", now, state="busy"))).getName() \
                == "Not authorized", topic
        x.close()
        b = Client(platform_broker, "plant-b")
        assert b.publish("capacity/plant-b/mill", payload(offer("plant-b", "mill", now))).is_failure is False
        wait_for(lambda: len(ex.get("/api/v1/offers")) == 3, 10, "plant-b's own offer")
        assert {o["state"] for o in ex.get("/api/v1/offers")} == {"idle"}  # the exchange's busy never landed
        b.close()
    a.close()
    wrong = Client(platform_broker, "plant-a", "not-the-password")
    assert wrong.connack is not None and wrong.connack.is_failure
    wrong.close()
    anonymous = Client(platform_broker, None)
    assert anonymous.connack is not None and anonymous.connack.is_failure
    anonymous.close()


def test_the_exchange_reads_over_tls_with_a_client_certificate(mosquitto_tls: Mosquitto, tmp_path: Path) -> None:
    tls = mosquitto_tls.tls
    assert tls is not None
    now = dt.datetime.now(dt.UTC)
    plant = paho.Client(CallbackAPIVersion.VERSION2, client_id="tls-plant", protocol=paho.MQTTv5)
    plant.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    plant.connect(mosquitto_tls.host, mosquitto_tls.port, 30)
    plant.loop_start()
    plant.publish("capacity/plant-t/mill", payload(offer("plant-t", "mill", now)), qos=1,
                  retain=True).wait_for_publish(10)
    with exchanges(mosquitto_tls.port, tmp_path, 1, "capacity", "--ca-file", str(tls.ca), "--cert-file",
                   str(tls.client_cert), "--key-file", str(tls.client_key)) as (ex,):
        wait_for(lambda: [o["machine"] for o in ex.get("/api/v1/offers")] == ["mill"], 10, "the offer over TLS")
    plant.disconnect()
    plant.loop_stop()
