"""End-to-end fuzzing: hostile MQTT input through a real mosquitto into a running collector,
while a well-formed machine keeps changing state.

    python bench/fuzz.py [--inputs 100000] [--rate 8000] [--seed 1]

1. Starts mosquitto and influxd on free ports, then ``collector run`` (a subprocess, the real
   CLI) with JSON, plain-value, Sparkplug B and status subscriptions, `discover: *` on JSON and
   Sparkplug (default ``max_machines`` 5,000), and one configured machine, ``good-1``.
2. Publishes ``--inputs`` hostile messages (QoS 0, at most ``--rate`` per second), drawn with
   a seeded RNG from: random bytes, truncated and deeply nested JSON (100,000 levels), payloads
   over ``max_payload``, wrong types, NaN/1e308 values, timestamps in 2100, at 1e23 and as
   77-bit integers, bad ISO strings, a flood of made-up machine ids (past the cap), ids with
   quotes, backslashes, commas, `=` and spaces, random and mutated Sparkplug births and data
   (flipped, cut, inserted, repeated bytes of valid payloads), garbage status payloads,
   unmatched topics, invalid UTF-8.
3. Every 0.3 s (a thread of its own) ``good-1`` publishes a well-formed JSON message (QoS 1,
   payload timestamp) whose ``exec`` alternates between ACTIVE and READY, so each is a state
   change. The expected changes are counted from what was published (every change of the
   published state, the first one from `offline`), not from the tracker.
4. Meanwhile it scrapes /metrics (parsed with prometheus-client's parser) and samples the
   collector's RSS. At the end it waits for ``good-1``'s changes in InfluxDB, stops the collector
   with SIGTERM and reads its peak RSS (VmHWM).

``crashes``: the collector exiting by itself or non-zero on SIGTERM, each traceback in its log,
each ``decoder_error`` (a decoder exception that was caught), each scrape that failed to parse.
A change counts as stored when InfluxDB holds it with its state, in order, within 250 ms of
the stamp it was published with (changes are 300 ms apart and alternate, so the pairing is
unambiguous); ``good_machine_changes_at_exact_time`` counts those stored to the ms, and
``good_machine_max_time_error_ms`` is the largest difference (a message still on its way from
the broker when the engine rolls time forward is placed at the time already rolled up).
Last line: {"inputs", "crashes", "peak_rss_mb", "good_machine_changes_expected",
"good_machine_changes_stored", "good_machine_changes_at_exact_time", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOOD = "good-1"
TOLERANCE_MS = 250
CONFIG = """
site: {{plant: p}}
data_dir: {tmp}/data
http: {{host: 127.0.0.1, port: {http_port}}}
influx: {{url: "{influx}", api: v1, database: fuzz, create_database: true}}
outbox: {{path: {tmp}/outbox.sqlite, flush_interval: 0.2}}
sources:
  - id: mq
    type: mqtt
    host: 127.0.0.1
    port: {mqtt_port}
    client_id: collector-fuzz
    clean_start: true
    max_payload: 65536
    subscriptions:
      - topic: "factory/{{plant}}/{{line}}/{{machine}}/status"
        payload: json
        signals: {{execution: exec, spindle: spindle.speed, alarm: alarm}}
        timestamp: ts
        discover: [{{match: "*", profile: cnc}}]
      - topic: "plc/{{machine}}/{{signal}}"
        payload: value
      - topic: "spBv1.0/{{group}}/#"
        payload: sparkplug_b
        signals: {{execution: "Exec", alarm: "DATA/Alarm"}}
        discover: [{{match: "*", profile: cnc}}]
    status:
      - topic: "factory/{{plant}}/{{line}}/{{machine}}/lwt"
profiles:
  cnc:
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE' or spindle > 50"}}
      - {{state: idle}}
machines:
  - {{id: {good}, line: l1, source: mq, profile: cnc}}
"""

ODD = ['m"8\\,x=y z', "back\\slash", "a,b c", 'q"u"o"t"e', "x=1 y=2", "ünï", "'", "{machine}", "%s%n"]


class Hostile:
    """The generator of hostile inputs: (topic, payload) pairs, from a seeded RNG."""

    def __init__(self, seed: int) -> None:
        from tests.fixtures._sparkplug import BOOLEAN, DOUBLE, INT64, STRING, M, payload

        self.rng = random.Random(seed)
        self.flood = 0
        now = int(time.time() * 1000)
        self.valid_spb = [
            payload([M("bdSeq", datatype=INT64, value=1), M("Node Control/Rebirth", 1, BOOLEAN, False)],
                    seq=0, timestamp=now),
            payload([M("Exec", 10, STRING, "ACTIVE"), M("DATA/Alarm", 11, BOOLEAN, False), M("T", 12, DOUBLE, 1.5)],
                    seq=1, timestamp=now),
            payload([M(alias=10, value="READY"), M(alias=11, datatype=BOOLEAN, value=True)], seq=2, timestamp=now),
        ]
        # (kind, weight): the big ones rarer, so the broker is not the bottleneck.
        kinds = [(self.random_bytes, 10), (self.bad_json, 10), (self.deep_json, 1), (self.huge, 1),
                 (self.wrong_types, 10), (self.bad_time, 10), (self.flood_id, 10), (self.odd_id, 3),
                 (self.spb_random, 10), (self.spb_mutated, 15), (self.value_garbage, 5), (self.status_garbage, 3),
                 (self.unmatched, 3), (self.not_utf8, 3)]
        self.kinds = [k for k, _ in kinds]
        self.weights = [w for _, w in kinds]

    def __call__(self) -> tuple[str, bytes]:
        return self.rng.choices(self.kinds, self.weights)[0]()

    def _id(self) -> str:
        return f"m{self.rng.randrange(50)}"

    def random_bytes(self) -> tuple[str, bytes]:
        return f"factory/p/l1/{self._id()}/status", self.rng.randbytes(self.rng.randrange(1, 200))

    def bad_json(self) -> tuple[str, bytes]:
        text = json.dumps({"exec": "ACTIVE", "spindle": {"speed": 1200}, "alarm": False, "ts": 1})
        return f"factory/p/l1/{self._id()}/status", text[: self.rng.randrange(len(text))].encode()

    def deep_json(self) -> tuple[str, bytes]:
        depth = self.rng.choice([1_000, 30_000])
        return f"factory/p/l1/{self._id()}/status", ("[" * depth + "]" * depth).encode()

    def huge(self) -> tuple[str, bytes]:
        return f"factory/p/l1/{self._id()}/status", b'{"exec": "' + b"A" * 100_000 + b'"}'

    def wrong_types(self) -> tuple[str, bytes]:
        value = self.rng.choice([{"a": 1}, [1, 2], None, 1e308, -1e308, True, "", "x" * 1000])
        body = {"exec": value, "spindle": {"speed": self.rng.choice([value, "NaN", 1e308, [1]])},
                "alarm": self.rng.choice([value, "yes", 0])}
        text = json.dumps(body).replace('"NaN"', "NaN")
        return f"factory/p/l1/{self._id()}/status", text.encode()

    def bad_time(self) -> tuple[str, bytes]:
        ts = self.rng.choice(["4102444800000", "1e23", "99999999999999999999999", "-1e308", '"2024-13-45"',
                              '"9999-12-31T23:59:59"', '"0001-01-01T00:00:00"', "0", "-1", '"not a time"',
                              "1e400", "[1]", '"' + "1" * 4400 + '"'])
        return (f"factory/p/l1/{self._id()}/status",
                f'{{"exec": "ACTIVE", "spindle": {{"speed": 1}}, "alarm": false, "ts": {ts}}}'.encode())

    def flood_id(self) -> tuple[str, bytes]:
        self.flood += 1
        return f"factory/p/l1/flood-{self.flood}/status", b'{"exec": "READY", "spindle": {"speed": 0}, "alarm": false}'

    def odd_id(self) -> tuple[str, bytes]:
        return f"factory/p/l1/{self.rng.choice(ODD)}/status", b'{"exec": "ACTIVE", "alarm": false}'

    def spb_random(self) -> tuple[str, bytes]:
        kind = self.rng.choice(["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "XYZ"])
        device = "" if kind.startswith("N") else f"/d{self.rng.randrange(20)}"
        return f"spBv1.0/G/{kind}/N{self.rng.randrange(20_000)}{device}", self.rng.randbytes(self.rng.randrange(60))

    def spb_mutated(self) -> tuple[str, bytes]:
        index = self.rng.randrange(3)
        buf = bytearray(self.valid_spb[index])
        for _ in range(self.rng.randrange(1, 5)):
            at = self.rng.randrange(len(buf)) if buf else 0
            op = self.rng.randrange(4)
            if op == 0 and buf:
                buf[at] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                del buf[at:at + self.rng.randrange(1, 6)]
            elif op == 2:
                buf[at:at] = self.rng.randbytes(self.rng.randrange(1, 6))
            else:
                buf += buf[at:]
        kind, device = [("NBIRTH", ""), ("DBIRTH", "/d1"), ("DDATA", "/d1")][index]
        return f"spBv1.0/G/{kind}/n{self.rng.randrange(200)}{device}", bytes(buf)

    def value_garbage(self) -> tuple[str, bytes]:
        return f"plc/{self._id()}/rpm", self.rng.choice([b"", b"   ", b"nan", b"inf", b"1e999", b"\xff\xfe",
                                                          self.rng.randbytes(20)])

    def status_garbage(self) -> tuple[str, bytes]:
        return f"factory/p/l1/{self._id()}/lwt", self.rng.choice([b"maybe", b'{"online": 3}', b"{", b"\xff",
                                                                   b'{"online": false}', b"ONLINE"])

    def unmatched(self) -> tuple[str, bytes]:
        return self.rng.choice(["factory/p", "x/y/z", "factory/p/l1//status", "spBv1.0", "plc//x"]), b"{}"

    def not_utf8(self) -> tuple[str, bytes]:
        return f"factory/p/l1/{self._id()}/status", b'{"exec": "\xff\xfe"}'


def match(expected: list[tuple[str, int]], stored: list[tuple[str, int]]) -> tuple[int, list[int]]:
    """Pair each expected change (state, ms) with the next stored one of the same state within
    ``TOLERANCE_MS``, in order: how many are stored, and each one's time error in ms (-1: missing).
    Changes are 300 ms apart and alternate, so a pairing within 250 ms is unambiguous."""
    errors: list[int] = []
    at = 0
    for state, ms in expected:
        for i in range(at, len(stored)):
            if stored[i][0] == state and abs(stored[i][1] - ms) <= TOLERANCE_MS:
                errors.append(abs(stored[i][1] - ms))
                at = i + 1
                break
        else:
            errors.append(-1)
    return sum(e >= 0 for e in errors), errors


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def run(inputs: int, rate: float, seed: int) -> dict[str, Any]:
    import paho.mqtt.client as paho
    import psutil
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.fixtures._ports import free_port, wait_for
    from tests.fixtures._proc import COLLECTOR, collector_env
    from tests.fixtures.influxdb import start_influxd
    from tests.fixtures.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "mosquitto").mkdir()
        broker = Mosquitto(free_port(), tmp / "mosquitto")
        broker.start()
        influxd = start_influxd(tmp / "influxd")
        http_port = free_port()
        config = tmp / "fuzz.yaml"
        config.write_text(CONFIG.format(tmp=tmp, http_port=http_port, influx=influxd.url, mqtt_port=broker.port,
                                        good=GOOD))
        log = (tmp / "collector.log").open("w+")
        proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                env=collector_env())
        base = f"http://127.0.0.1:{http_port}"
        peak_sampled = [0.0]
        stop_sampling = threading.Event()
        good: list[tuple[str, int]] = []
        try:
            def ready() -> bool:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            wait_for(ready, 60, "the collector ready")
            collector_ps = psutil.Process(proc.pid)

            def sample() -> None:
                while not stop_sampling.wait(0.2):
                    try:
                        peak_sampled[0] = max(peak_sampled[0], collector_ps.memory_info().rss / 2**20)
                    except psutil.Error:
                        return
            threading.Thread(target=sample, daemon=True).start()

            hostile_client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-hostile")
            hostile_client.max_queued_messages_set(0)
            hostile_client.connect("127.0.0.1", broker.port, 60)
            hostile_client.loop_start()
            good_client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-good")
            good_client.connect("127.0.0.1", broker.port, 60)
            good_client.loop_start()

            done = threading.Event()

            def good_machine() -> None:
                """good-1: a state change every 0.3 s, stamped when sent, until the hostile stream ends."""
                i = 0
                while True:
                    exec_ = "ACTIVE" if i % 2 == 0 else "READY"
                    ts = int(time.time() * 1000)
                    body = json.dumps({"exec": exec_, "spindle": {"speed": 0}, "alarm": False, "ts": ts})
                    good_client.publish(f"factory/p/l1/{GOOD}/status", body, qos=1).wait_for_publish(10)
                    good.append((exec_, ts))
                    i += 1
                    if done.wait(0.3):
                        return

            good_thread = threading.Thread(target=good_machine, daemon=True)
            good_thread.start()
            hostile = Hostile(seed)
            scrapes_ok = scrapes_failed = 0
            t0 = time.perf_counter()
            for n in range(inputs):
                topic, data = hostile()
                hostile_client.publish(topic, data, qos=0)
                if n % 500 == 499:
                    ahead = (n + 1) / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the publisher to --rate, not waiting for a result
                if n % 20_000 == 19_999 or n == inputs - 1:
                    try:
                        scrape(f"{base}/metrics")
                        scrapes_ok += 1
                    except Exception as exc:
                        print(f"scrape failed: {exc!r}", file=sys.stderr)
                        scrapes_failed += 1
            published_s = time.perf_counter() - t0
            done.set()
            good_thread.join(15)
            hostile_client.loop_stop()
            hostile_client.disconnect()
            good_client.disconnect()
            good_client.loop_stop()

            # Independent of the tracker: every change of the published state, the first from offline.
            states = ["busy" if e == "ACTIVE" else "idle" for e, _ in good]
            expected = [(s, ts) for i, (s, (_, ts)) in enumerate(zip(states, good, strict=True))
                        if i == 0 or s != states[i - 1]]

            def stored() -> list[dict[str, Any]]:
                return influxd.rows(f"SELECT state, previous, reason FROM machine_state WHERE machine = '{GOOD}'"
                                    " AND reason != 'collector stopped'", "fuzz")
            try:
                wait_for(lambda: len(stored()) >= len(expected), 120, "good-1's changes in InfluxDB")
            except TimeoutError:
                pass
            metrics = scrape(f"{base}/metrics")
            alive = proc.poll() is None
            hwm_kb = 0
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm_kb = int(line.split()[1])
        finally:
            stop_sampling.set()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            broker.stop()
        rows = stored()
        influxd.stop()
        log.seek(0)
        log_text = log.read()
        tracebacks = log_text.count("Traceback")
        bad = {dict(labels)["kind"]: int(v) for (name, labels), v in metrics.items()
               if name == "collector_bad_input_total"}
        decoder_errors = bad.get("decoder_error", 0)
        crashes = int(not alive) + int(rc != 0) + tracebacks + decoder_errors + scrapes_failed
        stored_changes = [(r["state"], r["time"] // 1_000_000) for r in rows]
        matched, errors_ms = match(expected, stored_changes)
        if errors_ms != [0] * len(expected):
            print(f"good-1 expected (state, ms): {expected}", file=sys.stderr)
            print(f"good-1 stored: {[(r['time'], r['state'], r['previous'], r['reason']) for r in rows]}",
                  file=sys.stderr)
        return {
            "inputs": inputs,
            "crashes": crashes,
            "peak_rss_mb": round(max(hwm_kb / 1024, peak_sampled[0]), 1),
            "good_machine_changes_expected": len(expected),
            "good_machine_changes_stored": matched,
            "good_machine_changes_at_exact_time": errors_ms.count(0),
            "good_machine_max_time_error_ms": max(errors_ms, default=0),
            "good_machine_extra_rows": len(stored_changes) - matched,
            "machines_tracked": int(sum(v for (name, _), v in metrics.items() if name == "collector_machines")),
            "publish_s": round(published_s, 1),
            "scrapes_ok": scrapes_ok + 1,
            "exit_code": rc,
            "bad_input": dict(sorted(bad.items())),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="hostile messages to publish")
    parser.add_argument("--rate", type=float, default=8_000, help="hostile messages per second, at most")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(args.inputs, args.rate, args.seed)
    print(f"{result['inputs']} hostile inputs in {result['publish_s']}s; collector peak RSS "
          f"{result['peak_rss_mb']} MB, {result['machines_tracked']} machines tracked; good-1 changes stored "
          f"{result['good_machine_changes_stored']}/{result['good_machine_changes_expected']}; "
          f"bad input {result['bad_input']}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
