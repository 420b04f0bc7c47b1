"""A platform and its plants, for the plant-to-platform tests: the platform broker (passwords,
deploy/mosquitto/platform.acl, a TLS listener), plant brokers bridged to it with
deploy/mosquitto/plant-bridge.conf, and plant collectors (`collector run`, as processes) whose
capacity feed publishes to their own broker or straight to the platform's."""

from __future__ import annotations

import signal
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures._ports import free_port, port_open, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env
from tests.fixtures.mosquitto import Mosquitto, TlsFiles, make_certificates

ROOT = Path(__file__).resolve().parent.parent
ACL = ROOT / "deploy" / "mosquitto" / "platform.acl"
BRIDGE = ROOT / "deploy" / "mosquitto" / "plant-bridge.conf"
PREFIX = "capacity"


@dataclass
class Platform:
    broker: Mosquitto  # plain listener on loopback (the exchange); `tls_port` for the plants
    tls_port: int
    pki: TlsFiles
    passwords: dict[str, str]


def start_platform(root: Path, users: dict[str, str]) -> Platform:
    """The platform broker as deploy/mosquitto/platform.conf makes it: every client logs in and
    is held to platform.acl; plants come in over TLS."""
    root.mkdir(parents=True)
    pki = make_certificates(root / "pki")
    passwd = root / "passwd"
    for n, (user, password) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(passwd), user, password],
                       check=True, capture_output=True)
    tls_port = free_port()
    broker = Mosquitto(free_port(), root, anonymous=False, extra=[
        f"password_file {passwd}", f"acl_file {ACL}",
        f"listener {tls_port} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}", "tls_version tlsv1.2"])
    broker.start()
    wait_for(lambda: port_open(tls_port), 10, "the platform's TLS listener")
    return Platform(broker, tls_port, pki, users)


def bridge_lines(plant: str, platform: Platform) -> list[str]:
    """deploy/mosquitto/plant-bridge.conf with its placeholders replaced for ``plant``."""
    text = (BRIDGE.read_text().replace("plant-berlin", plant)
            .replace("platform.example.com:8883", f"127.0.0.1:{platform.tls_port}")
            .replace("CHANGE-ME", platform.passwords[plant])
            .replace("/mosquitto/config/certs/platform-ca.crt", str(platform.pki.ca)))
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def start_plant_broker(root: Path, plant: str, platform: Platform) -> Mosquitto:
    root.mkdir(parents=True)
    broker = Mosquitto(free_port(), root, extra=["log_type information", *bridge_lines(plant, platform)])
    broker.start()
    return broker


PLANT_CONFIG = """
site: {{plant: {plant}}}
data_dir: {data}
sources:
  - id: line
    type: mqtt
    host: 127.0.0.1
    port: {port}
    client_id: collector-{plant}
    clean_start: true
    subscriptions:
      - topic: "shop/{{machine}}/status"
        payload: json
        signals: {{execution: exec}}
profiles:
  cnc:
    rules:
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle, reason: "ready"}}
machines:
{machines}
capacity:
  feed: {feed}
tracker: {{interval: 1s}}
http: {{host: 127.0.0.1, port: 0}}
outputs:
  - {{name: platform, url: '{vm}', api: victoriametrics, machines: {{public: true}}, drop_fields: [reason]}}
outbox: {{path: {data}/outbox.sqlite, flush_interval: 0.2}}
"""


@dataclass
class PlantCollector:
    """``collector run`` of one plant: ``public`` machines (milling) and ``private`` ones, all
    read from ``shop/<machine>/status`` on the plant's broker."""

    plant: str
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data / "collector.log"

    def start(self, broker: Mosquitto, vm_url: str, public: list[str], private: list[str], feed: str) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        machines = [f"  - {{id: {m}, kind: mill, public: true, source: line, profile: cnc, "
                    f"capabilities: {{process: milling, axes: 5}}}}" for m in public]
        machines += [f"  - {{id: {m}, kind: mill, source: line, profile: cnc}}" for m in private]
        config = self.data / "config.yaml"
        config.write_text(PLANT_CONFIG.format(plant=self.plant, data=self.data, port=broker.port, vm=vm_url,
                                              machines="\n".join(machines), feed=feed))
        self.proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(config)], env=collector_env(),
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        wait_for(lambda: "subscribed to" in self.log.read_text(), 30, f"{self.plant}'s collector to subscribe")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None


def local_feed(broker: Mosquitto, period: str = "2s") -> str:
    """The capacity feed on the plant's own broker (which bridges it to the platform)."""
    return f"{{enabled: true, broker: line, topic_prefix: {PREFIX}, period: {period}}}"


def publish(broker: Mosquitto, topic: str, body: str | bytes, *, retain: bool = True) -> None:
    """One QoS 1 message through mosquitto_pub (a client we did not write)."""
    data = body.encode() if isinstance(body, str) else body
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                    *(["-r"] if retain else []), "-t", topic, "-s"], input=data, check=True, timeout=30)


def rejected(metrics: str) -> dict[str, float]:
    """exchange_rejected_offers_total by why, from the exchange's /metrics text."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith('exchange_rejected_offers_total{why="'):
            why = line.split('"')[1]
            out[why] = float(line.rsplit(" ", 1)[1])
    return out


def vm_series(url: str, name: str) -> list[dict[str, Any]]:
    """The label sets of every series called ``name`` in VictoriaMetrics."""
    import json

    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).read()
    query = urllib.parse.urlencode({"match[]": f'{{__name__="{name}"}}'})
    with urllib.request.urlopen(f"{url}/api/v1/series?{query}", timeout=10) as r:
        data: list[dict[str, Any]] = json.loads(r.read())["data"]
    return data
