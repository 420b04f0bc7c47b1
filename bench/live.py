"""Shared parts of the live benchmarks (bench/latency.py, bench/gateway.py): a plant of JSON
publishers on a schedule, and the real ``collector run`` process reading them into influxd.

The publisher runs in its own process (``python bench/live.py publish ...``; its CPU is not the
collector's): each machine changes state (busy <-> idle) every ``period`` seconds at its own
random phase, one QoS 1 message per change with the source timestamp in the payload, e.g.
``{"exec": "ACTIVE", "spindle": {"speed": 1200}, "alarm": false, "ts": 1764372000123}``.
It prints one line per message, ``machine ts_ms``, so the caller knows every change it made.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def machine_id(m: int) -> str:
    return f"m{m:05d}"


def topic(m: int) -> str:
    return f"factory/p1/line-{m % 10}/{machine_id(m)}/status"


def config_text(*, mqtt_port: int, influx_url: str, machines: int, data_dir: Path, database: str,
                flush_interval: float | None = None, http_port: int | None = None) -> str:
    """The collector's config for the live plant: one MQTT source, payload timestamps, the
    bench's rules, the outbox's defaults unless ``flush_interval`` is given."""
    outbox = f"{{path: {data_dir}/outbox.sqlite" + (f", flush_interval: {flush_interval}" if flush_interval else "")
    outbox += os.environ.get("BENCH_OUTBOX_EXTRA", "") + "}"
    http = f"{{host: 127.0.0.1, port: {http_port}}}" if http_port else "{enabled: false}"
    lines = ["site: {plant: p1}", f"data_dir: {data_dir}", f"http: {http}",
             f"influx: {{url: '{influx_url}', api: v1, database: {database}, create_database: true}}",
             f"outbox: {outbox}",
             "sources:", "  - id: line", "    type: mqtt", "    host: 127.0.0.1", f"    port: {mqtt_port}",
             "    client_id: bench-live", "    subscriptions:",
             "      - topic: 'factory/{plant}/{line}/{machine}/status'", "        payload: json",
             "        signals: {execution: exec, spindle_rpm: spindle.speed}", "        timestamp: ts",
             "profiles:", "  cnc:", "    rules:", "      - {state: busy, when: \"execution == 'ACTIVE'\"}",
             "      - {state: idle}", "machines:"]
    lines += [f"  - {{id: {machine_id(m)}, line: line-{m % 10}, source: line, profile: cnc}}" for m in range(machines)]
    return "\n".join(lines) + "\n"


@dataclass
class Publisher:
    """The publisher process; ``changes`` fills with (machine, ts_ms) as it publishes."""

    proc: subprocess.Popen[str]
    changes: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            machine, ts = line.split()
            with self.lock:
                self.changes.append((machine, int(ts)))

    def snapshot(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.changes)


@contextmanager
def publisher(mqtt_port: int, machines: int, period: float, seconds: float) -> Iterator[Publisher]:
    proc = subprocess.Popen([sys.executable, __file__, "publish", "--port", str(mqtt_port), "--machines",
                             str(machines), "--period", str(period), "--seconds", str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    pub = Publisher(proc)
    threading.Thread(target=pub._read, daemon=True).start()
    try:
        yield pub
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def collector(config: str, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``collector run`` (the installed command) on ``config``; stopped with SIGTERM."""
    path = root / "collector.yaml"
    path.write_text(config)
    log = (root / "collector.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "collector"), "--log-level", "WARNING", "run",
                             "-c", str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def services(root: Path) -> Iterator[tuple[int, str]]:
    """mosquitto and influxd on free ports under ``root``: (mqtt port, influx url)."""
    from tests.fixtures._ports import free_port
    from tests.fixtures.influxdb import start_influxd
    from tests.fixtures.mosquitto import Mosquitto

    (root / "mosquitto").mkdir(parents=True)
    broker = Mosquitto(free_port(), root / "mosquitto")
    broker.start()
    influxd = start_influxd(root / "influxd")
    try:
        yield broker.port, influxd.url
    finally:
        influxd.stop()
        broker.stop()


def payload(running: bool, ts_ms: int) -> bytes:
    return json.dumps({"exec": "ACTIVE" if running else "READY", "spindle": {"speed": 1200 if running else 0},
                       "alarm": False, "ts": ts_ms}, separators=(",", ":")).encode()


def publish(port: int, machines: int, period: float, seconds: float) -> None:
    """Every machine publishes its first state at once, then changes state every ``period``
    seconds at its own random phase, until ``seconds`` have passed."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-live-publisher", protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    rng = random.Random(1)
    start = time.time()
    running = [rng.random() < 0.5 for _ in range(machines)]
    due = [(start + rng.uniform(0, period), m) for m in range(machines)]
    heapq.heapify(due)
    out = sys.stdout
    for m in range(machines):  # the first state of every machine
        ts = int(time.time() * 1000)
        client.publish(topic(m), payload(running[m], ts), qos=1)
        out.write(f"{machine_id(m)} {ts}\n")
    out.flush()
    end = start + seconds
    while due and due[0][0] < end:
        at, m = heapq.heappop(due)
        wait = at - time.time()
        if wait > 0:
            out.flush()
            time.sleep(wait)
        running[m] = not running[m]
        ts = int(time.time() * 1000)
        client.publish(topic(m), payload(running[m], ts), qos=1)
        out.write(f"{machine_id(m)} {ts}\n")
        heapq.heappush(due, (at + period, m))
    out.flush()
    client.loop_stop()
    client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--port", type=int, required=True)
    pub.add_argument("--machines", type=int, required=True)
    pub.add_argument("--period", type=float, required=True)
    pub.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    publish(args.port, args.machines, args.period, args.seconds)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
