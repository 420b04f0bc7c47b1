"""How fast the collector drains a backlog from its persistent MQTT session, next to the floor
any paho-based Python consumer pays and the broker's own delivery limit.

    python bench/mqtt_ingest.py [--machines 500] [--messages 200000] [--repeat 5]

1. Starts mosquitto (``max_queued_messages 0``: unlimited session queues) on a free port.
2. Creates persistent sessions (MQTT 5, QoS 1) subscribed to ``factory/+/+/+/status``, then
   disconnects them: ``--repeat`` for the collector, as many for a do-nothing paho subscriber,
   and one for ``mosquitto_sub``.
3. Publishes the fixed stream while they are away (``mosquitto_pub -l``, one process per machine
   topic, QoS 1): ``--messages`` JSON messages round-robin over ``--machines`` machines, e.g.
   ``{"exec": "ACTIVE", "spindle": {"speed": 1200}, "alarm": false, "ts": 1764372000123}``.
   Every other round changes each machine's state (busy <-> idle), so half of the messages
   are state changes; the last round is one.
4. Drains each session in its own process and times it from connect to the last message,
   the paho floor and the collector taking turns (this shared machine's speed drifts; turns
   and medians keep the drift out of the ratio):
   - the do-nothing paho subscriber (``loop_forever``, ``on_message`` counts);
   - ``mosquitto_sub -C N`` (the broker's delivery limit, C client);
   - the collector: ``collector.engine.Engine`` with the MQTT source (JSON path per signal,
     payload timestamps), 500 configured machines and ``collector.influx.make_sink`` (the SQLite
     outbox and its sender) writing to a local influxd 1.6 (v1 API), until every machine's last
     state change is stored in InfluxDB (polled with InfluxQL every 0.1 s).

Payload timestamps lie an hour ahead of the run: the tracker ignores readings older than its
own start (a collector restart would otherwise discard its whole backlog, see the MQTT README).

Rates are messages per second (each message is one JSON reading of a machine with two signals).
Last line: one JSON object {"readings_per_s", "paho_floor_per_s", "mosquitto_sub_per_s",
"ratio_to_paho", "peak_rss_mb"}: medians over the repeats, ``ratio_to_paho`` the ratio of the
medians, peak RSS the largest of the collector processes'. ``BENCH_PROFILE=file`` writes a
cProfile of the (first) collector run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILTER = "factory/+/+/+/status"
SUB_ID = "bench-mosquitto-sub"


def topic(m: int) -> str:
    return f"factory/p1/line-{m % 10}/m{m:03d}/status"


def exec_of(round_: int) -> str:
    return "ACTIVE" if (round_ + 1) // 2 % 2 == 0 else "READY"


def message(m: int, round_: int, base_ms: int) -> str:
    e = exec_of(round_)
    return json.dumps({"exec": e, "spindle": {"speed": 1200 if e == "ACTIVE" else 0}, "alarm": False,
                       "ts": base_ms + round_ * 1000 + m}, separators=(",", ":"))


# -- roles: each runs in its own process -----------------------------------------------------

def role_session(port: int, client_id: str) -> None:
    """Create a persistent session subscribed to the stream, then leave."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    done: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(FILTER, qos=1)
    client.on_subscribe = lambda c, u, mid, codes, p: (done.append(True), c.disconnect())
    client.connect("127.0.0.1", port, 60, clean_start=False, properties=props)
    client.loop_forever()
    assert done, "subscription not acknowledged"
    print(json.dumps({"subscribed": True}))


def role_paho(port: int, n: int, client_id: str) -> None:
    """The do-nothing paho subscriber: the floor every paho-based consumer pays."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    count = [0]

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == n:
            c.disconnect()

    client.on_message = on_message
    t0 = time.perf_counter()
    client.connect("127.0.0.1", port, 60, clean_start=False, properties=props)
    client.loop_forever()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed, "messages": count[0]}))


def role_collector(port: int, machines: int, base_ms: int, final_round: int, influx_url: str, client_id: str) -> None:
    """The collector: MQTT adapter + engine + InfluxDB outbox, timed until every machine's last
    state change is stored in InfluxDB."""
    import urllib.parse
    import urllib.request

    from collector.configfile import load_config_text
    from collector.engine import Engine
    from collector.influx import make_sink

    data_dir = tempfile.mkdtemp(prefix="bench-collector-")
    database = client_id.replace("-", "_")  # one per run: each counts only its own final changes
    lines = ["site: {plant: p1}", f"data_dir: {data_dir}", "http: {enabled: false}",
             "tracker: {max_future: 2h}",  # the payload timestamps lie an hour ahead (see above)
             f"influx: {{url: '{influx_url}', api: v1, database: {database}, create_database: true}}",
             f"outbox: {{path: {data_dir}/outbox.sqlite, flush_interval: 0.2}}",
             "sources:", "  - id: line", "    type: mqtt", "    host: 127.0.0.1", f"    port: {port}",
             f"    client_id: {client_id}", "    session_expiry: 3600", "    subscriptions:",
             "      - topic: 'factory/{plant}/{line}/{machine}/status'", "        payload: json",
             "        signals: {execution: exec, spindle_rpm: spindle.speed}", "        timestamp: ts",
             "profiles:", "  cnc:", "    rules:", "      - {state: busy, when: \"execution == 'ACTIVE'\"}",
             "      - {state: idle}", "machines:"]
    lines += [f"  - {{id: m{m:03d}, line: line-{m % 10}, source: line, profile: cnc}}" for m in range(machines)]
    loaded = load_config_text("\n".join(lines), "bench.yaml")
    final_ns = (base_ms + final_round * 1000) * 1_000_000
    query = urllib.parse.urlencode({"db": database, "q": "SELECT count(state_code) FROM machine_state "
                                                       f"WHERE time >= {final_ns} AND state_code > 0"})

    def stored_finals() -> int:
        with urllib.request.urlopen(f"{influx_url}/query?{query}", timeout=30) as r:
            series = json.load(r)["results"][0].get("series", [])
        return int(series[0]["values"][0][1]) if series else 0

    async def run() -> dict[str, float]:
        sink = make_sink(loaded.config)
        engine = Engine(loaded, sink)
        gc.freeze()  # as `collector run` does
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.run(stop))
        deadline = t0 + float(os.environ.get("BENCH_TIMEOUT", "600"))
        ok = False
        while time.perf_counter() < deadline and not task.done():
            await asyncio.sleep(0.1)
            if await asyncio.to_thread(stored_finals) >= machines:
                ok = True
                break
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        return {"seconds": elapsed, "ok": ok, "events": engine.stats.events, "lines": engine.stats.lines_written,
                "state_changes": engine.stats.state_changes}

    cpu0 = time.process_time()
    if os.environ.get("BENCH_PROFILE"):  # e.g. BENCH_PROFILE=/tmp/collector.prof, read with pstats
        import cProfile
        with cProfile.Profile() as prof:
            result = asyncio.run(run())
        prof.dump_stats(os.environ["BENCH_PROFILE"])
    else:
        result = asyncio.run(run())
    result["cpu_s"] = time.process_time() - cpu0
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- the orchestration -----------------------------------------------------------------------

def child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"{args[1]} failed:\n{out.stderr}")
    if out.stderr.strip():
        print(out.stderr.strip()[-3000:], file=sys.stderr)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def publish_stream(port: int, machines: int, messages: int, base_ms: int) -> float:
    rounds = messages // machines

    def one(m: int) -> None:
        body = "\n".join(message(m, r, base_ms) for r in range(rounds)) + "\n"
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic(m), "-l",
                        "-i", f"bench-pub-{m}"], input=body.encode(), check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(machines)))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="drains of the paho floor and of the collector each")
    parser.add_argument("--role", choices=["session", "paho", "collector"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--base-ms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--influx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.messages // args.machines
    n = rounds * args.machines
    if args.role == "session":
        return role_session(args.port, args.client_id)
    if args.role == "paho":
        return role_paho(args.port, n, args.client_id)
    if args.role == "collector":
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        return role_collector(args.port, args.machines, args.base_ms, rounds - 1, args.influx, args.client_id)

    from tests.fixtures._ports import free_port
    from tests.fixtures.influxdb import start_influxd
    from tests.fixtures.mosquitto import Mosquitto

    assert exec_of(rounds - 1) != exec_of(rounds - 2), "the last round must change every machine's state"
    paho_ids = [f"bench-paho-floor-{i}" for i in range(args.repeat)]
    collector_ids = [f"bench-collector-{i}" for i in range(args.repeat)]
    sizes = ["--machines", str(args.machines), "--messages", str(args.messages)]
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        (Path(tmp) / "mosquitto").mkdir()
        broker = Mosquitto(free_port(), Path(tmp) / "mosquitto")
        broker.start()
        influxd = start_influxd(Path(tmp) / "influxd")
        try:
            port = str(broker.port)
            for client_id in (*paho_ids, *collector_ids, SUB_ID):
                child("--role", "session", "--port", port, "--client-id", client_id)
            base_ms = int(time.time() * 1000) + 3_600_000
            took = publish_stream(broker.port, args.machines, n, base_ms)
            print(f"published {n} QoS 1 messages over {args.machines} topics into {2 * args.repeat + 1} sessions "
                  f"in {took:.1f}s", flush=True)

            t0 = time.perf_counter()
            subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-c", "-x", "3600",
                            "-q", "1", "-i", SUB_ID, "-t", FILTER, "-C", str(n)],
                           check=True, stdout=subprocess.DEVNULL, timeout=900)
            sub_rate = n / (time.perf_counter() - t0)
            print(f"mosquitto_sub: {n} messages = {sub_rate:,.0f}/s", flush=True)

            paho_rates: list[float] = []
            rates: list[float] = []
            rss: list[float] = []
            for paho_id, collector_id in zip(paho_ids, collector_ids, strict=True):
                paho_run = child("--role", "paho", "--port", port, "--client-id", paho_id, *sizes)
                assert paho_run["messages"] == n, paho_run
                paho_rates.append(n / paho_run["seconds"])
                print(f"do-nothing paho subscriber: {n} messages in {paho_run['seconds']:.2f}s "
                      f"= {paho_rates[-1]:,.0f}/s", flush=True)
                run = child("--role", "collector", "--port", port, "--client-id", collector_id, "--base-ms",
                            str(base_ms), "--influx", influxd.url, *sizes)
                if not run["ok"]:
                    raise SystemExit(f"the collector did not deliver every last state change: {run}")
                os.environ.pop("BENCH_PROFILE", None)  # profile the first run only
                rates.append(n / run["seconds"])
                rss.append(run["peak_rss_mb"])
                print(f"collector (MQTT adapter + engine + outbox -> influxd): {n} messages ({int(run['events'])} "
                      f"events, {int(run['state_changes'])} state changes, {int(run['lines'])} lines) in "
                      f"{run['seconds']:.2f}s = {rates[-1]:,.0f}/s, CPU {run['cpu_s']:.1f}s, "
                      f"peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
        finally:
            influxd.stop()
            broker.stop()
    rate, paho_rate = median(rates), median(paho_rates)
    print(json.dumps({"readings_per_s": round(rate), "paho_floor_per_s": round(paho_rate),
                      "mosquitto_sub_per_s": round(sub_rate), "ratio_to_paho": round(rate / paho_rate, 3),
                      "peak_rss_mb": round(max(rss), 1)}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
