"""How fast the collector drains a backlog from its persistent MQTT session, next to the floor
any paho-based Python consumer pays, the broker's own delivery limit, and a Node-RED flow.

    python bench/mqtt_ingest.py [--machines 500] [--messages 200000] [--repeat 5] [--no-nodered]

1. Starts mosquitto (``max_queued_messages 0``: unlimited session queues) on a free port.
2. Two stream shapes, each on its own topic tree: ``factory/...`` messages carry a payload
   timestamp that the subscribers use (``ts``), ``arrival/...`` messages carry none and the
   subscribers stamp arrival time (``arrival``). Per shape it creates persistent sessions
   (MQTT 5, QoS 1) subscribed to ``<tree>/+/+/+/status``, then disconnects them: ``--repeat``
   each for the collector, a do-nothing paho subscriber and Node-RED, and one ``mosquitto_sub``.
3. Publishes each stream while they are away (``mosquitto_pub -l``, one process per machine
   topic, QoS 1): ``--messages`` JSON messages round-robin over ``--machines`` machines, e.g.
   ``{"exec": "ACTIVE", "spindle": {"speed": 1200}, "alarm": false, "ts": 1764372000123}``.
   Every other round changes each machine's state (busy <-> idle), so half of the messages
   are state changes; the last round is one.
4. Drains each session in its own process, the roles taking turns per shape (this shared
   machine's speed drifts; turns and medians keep the drift out of the ratios):
   - the do-nothing paho subscriber (``loop_forever``, ``on_message`` counts), timed from
     connect to the last message;
   - ``mosquitto_sub -C N`` (the broker's delivery limit, C client), once, ``ts`` shape;
   - the collector: ``collector.engine.Engine`` with the MQTT source (JSON path per signal,
     payload timestamps or arrival time), the configured machines and
     ``collector.influx.make_sink`` (the SQLite outbox and its sender) writing to a local
     influxd 1.6 (v1 API), timed from start until every state change is stored in InfluxDB
     (counted with InfluxQL every 0.1 s);
   - Node-RED 4 (bench/nodered.py: ``mqtt in`` with a persistent session -> a function node
     with the same rules -> ``join`` -> ``influxdb batch``; ``--nodered-per-point``: the naive
     ``influxdb out``, which loses points under a backlog), timed from its "Started flows" log line (its
     MQTT connect follows) until every state change is stored, counted the same way; its
     peak RSS is the node process's VmHWM.

Payload timestamps are those of the publishing, one second per round. The collector's clock is
set to one second before the first of them, as for a collector that was running when the
stream was produced and drains the backlog its session kept (a fresh collector ignores readings
older than its own start; a restarted one carries on from its checkpoint). Until this round the
stamps lay an hour ahead of a collector on the wall clock instead: every machine first rolled up
sixty empty minutes (30,000 roll-up points per run that no real backlog has).

Rates are messages per second (each message is one JSON reading of a machine with two signals).
Last line: one JSON object {"readings_per_s", "paho_floor_per_s", "mosquitto_sub_per_s",
"ratio_to_paho", "peak_rss_mb", "nodered_per_s", "ratio_to_nodered", "nodered_rss_mb"} for the
``ts`` shape and the same keys with the suffix ``_arrival`` for the other (no mosquitto_sub),
and ``changes_lost``: state changes the collector did not store (the worst run; see
``role_collector``), medians over the repeats:
medians over the repeats, ratios of the medians, peak RSS the largest of the processes'.
Profiling the first collector run of each shape: ``BENCH_PROFILE=prefix`` writes cProfile
files ``prefix.ts`` and ``prefix.arrival``; ``BENCH_PYSPY=prefix`` runs it under
``py-spy record`` (raw collapsed stacks, ``prefix.ts.txt``; needs ``pip install py-spy``).
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
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {"ts": "factory", "arrival": "arrival"}
"""Stream shape -> its topic tree."""
SUB_ID = "bench-mosquitto-sub"


def topic_filter(shape: str) -> str:
    return f"{SHAPES[shape]}/+/+/+/status"


def topic(shape: str, m: int) -> str:
    return f"{SHAPES[shape]}/p1/line-{m % 10}/m{m:03d}/status"


def exec_of(round_: int) -> str:
    return "ACTIVE" if (round_ + 1) // 2 % 2 == 0 else "READY"


def message(shape: str, m: int, round_: int, base_ms: int) -> str:
    e = exec_of(round_)
    body: dict[str, object] = {"exec": e, "spindle": {"speed": 1200 if e == "ACTIVE" else 0}, "alarm": False}
    if shape == "ts":
        body["ts"] = base_ms + round_ * 1000 + m
    return json.dumps(body, separators=(",", ":"))


def expected_changes(machines: int, rounds: int) -> int:
    """State changes every subscriber must store: each machine's first state, then one per
    change of ``exec`` (computed from the stream, not from any subscriber's code)."""
    per_machine = 1 + sum(exec_of(r) != exec_of(r - 1) for r in range(1, rounds))
    return machines * per_machine


def influxql(influx_url: str, database: str, q: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"db": database, "q": q})
    with urllib.request.urlopen(f"{influx_url}/query?{query}", timeout=30) as r:
        series: list[dict[str, Any]] = json.load(r)["results"][0].get("series", [])
    return series


def stored_changes(influx_url: str, database: str) -> int:
    """State changes (to a non-offline state) stored in ``database``."""
    series = influxql(influx_url, database, "SELECT count(state_code) FROM machine_state WHERE state_code > 0")
    return int(series[0]["values"][0][1]) if series else 0


def final_states(influx_url: str, database: str, code: int) -> int:
    """Machines whose last stored (non-offline) state has state code ``code``."""
    series = influxql(influx_url, database,
                      "SELECT last(state_code) FROM machine_state WHERE state_code > 0 GROUP BY machine")
    return sum(1 for s in series if s["values"][0][1] == code)


# -- roles: each runs in its own process -----------------------------------------------------

def role_session(port: int, client_id: str, shape: str) -> None:
    """Create a persistent session subscribed to the stream, then leave."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    done: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter(shape), qos=1)
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


def collector_config(*, shape: str, port: int, machines: int, influx_url: str, client_id: str, data_dir: str,
                     flush_interval: float = 0.2) -> str:
    database = client_id.replace("-", "_")  # one per run: each counts only its own changes
    lines = ["site: {plant: p1}", f"data_dir: {data_dir}", "http: {enabled: false}",
             "tracker: {max_future: 2h}",  # a long stream's stamps run ahead of the drain's clock (see above)
             f"influx: {{url: '{influx_url}', api: v1, database: {database}, create_database: true}}",
             f"outbox: {{path: {data_dir}/outbox.sqlite, flush_interval: {flush_interval}}}",
             "sources:", "  - id: line", "    type: mqtt", "    host: 127.0.0.1", f"    port: {port}",
             f"    client_id: {client_id}", "    session_expiry: 3600", "    subscriptions:",
             f"      - topic: '{SHAPES[shape]}/{{plant}}/{{line}}/{{machine}}/status'", "        payload: json",
             "        signals: {execution: exec, spindle_rpm: spindle.speed}"]
    if shape == "ts":
        lines.append("        timestamp: ts")
    lines += ["profiles:", "  cnc:", "    rules:", "      - {state: busy, when: \"execution == 'ACTIVE'\"}",
              "      - {state: idle}", "machines:"]
    lines += [f"  - {{id: m{m:03d}, line: line-{m % 10}, source: line, profile: cnc}}" for m in range(machines)]
    return "\n".join(lines)


def role_collector(shape: str, port: int, machines: int, n: int, expect: int, final_code: int, influx_url: str,
                   client_id: str, base_ms: int) -> None:
    """The collector: MQTT adapter + engine + InfluxDB outbox, timed until every state change
    is stored in InfluxDB.

    With arrival timestamps, a collector that stores several changes of one machine at one
    timestamp (the engine before the watermark did under a backlog: a reading that waited in
    its queue past a wall-clock tick was moved forward to the tick) loses all but the last of
    them in InfluxDB, and the count could never reach ``expect``. So for that shape the run is
    done when every message was processed, the outbox is empty and every machine's last stored
    state is the final one; ``stored`` says how many changes landed (``changes_lost``).
    """
    from collector.configfile import load_config_text
    from collector.engine import Engine
    from collector.influx import make_sink

    data_dir = tempfile.mkdtemp(prefix="bench-collector-")
    loaded = load_config_text(collector_config(shape=shape, port=port, machines=machines, influx_url=influx_url,
                                               client_id=client_id, data_dir=data_dir), "bench.yaml")
    database = client_id.replace("-", "_")

    async def run() -> dict[str, float]:
        sink = make_sink(loaded.config)
        # payload stamps: the clock of a collector running when they were made (module docstring)
        offset = base_ms * 1_000_000 - 1_000_000_000 - time.time_ns() if shape == "ts" else 0
        engine = Engine(loaded, sink, clock=lambda: time.time_ns() + offset)
        gc.freeze()  # as `collector run` does
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.run(stop))
        deadline = t0 + float(os.environ.get("BENCH_TIMEOUT", "600"))
        ok = False
        while time.perf_counter() < deadline and not task.done():
            await asyncio.sleep(0.1)
            if shape == "ts":
                ok = await asyncio.to_thread(stored_changes, influx_url, database) >= expect
            else:
                ok = (engine.stats.events >= n and sink.stats()["depth_points"] == 0
                      and await asyncio.to_thread(final_states, influx_url, database, final_code) >= machines)
            if ok:
                break
        elapsed = time.perf_counter() - t0
        stored = await asyncio.to_thread(stored_changes, influx_url, database)
        stop.set()
        await task
        return {"seconds": elapsed, "ok": ok, "events": engine.stats.events, "lines": engine.stats.lines_written,
                "state_changes": engine.stats.state_changes, "stored": stored, "expected": expect}

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

def child(*args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None) -> dict[str, float]:
    out = subprocess.run([*(wrap or []), sys.executable, __file__, *args], capture_output=True, text=True,
                         timeout=900, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{args[1]} failed:\n{out.stderr}")
    if out.stderr.strip():
        print(out.stderr.strip()[-3000:], file=sys.stderr)
    result: dict[str, float] = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    return result


def publish_stream(shape: str, port: int, machines: int, messages: int, base_ms: int) -> float:
    rounds = messages // machines

    def one(m: int) -> None:
        body = "\n".join(message(shape, m, r, base_ms) for r in range(rounds)) + "\n"
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic(shape, m),
                        "-l", "-i", f"bench-pub-{shape}-{m}"], input=body.encode(), check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(machines)))
    return time.perf_counter() - t0


def run_nodered(tmp: Path, shape: str, mqtt_port: int, influx_port: int, influx_url: str, client_id: str,
                expect: int, batch: bool = True) -> dict[str, float]:
    from bench.nodered import drain, flow
    from tests.fixtures._ports import free_port

    database = client_id.replace("-", "_")
    urllib.request.urlopen(urllib.request.Request(
        f"{influx_url}/query", data=urllib.parse.urlencode({"q": f"CREATE DATABASE {database}"}).encode()),
        timeout=30).close()
    flows = flow(mqtt_port=mqtt_port, client_id=client_id, topic_filter=topic_filter(shape),
                 influx_port=influx_port, database=database, payload_time=shape == "ts", batch=batch)
    return drain(tmp / client_id, free_port(), flows, lambda: stored_changes(influx_url, database), expect,
                 float(os.environ.get("BENCH_TIMEOUT", "600")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="drains of each role per stream shape")
    parser.add_argument("--no-nodered", action="store_true", help="leave Node-RED out (needs node and npm)")
    parser.add_argument("--nodered-per-point", action="store_true",
                        help="Node-RED's naive flow: `influxdb out`, one request per point (loses points under load)")
    parser.add_argument("--shapes", default="ts,arrival", help="stream shapes to run: ts, arrival or both")
    parser.add_argument("--role", choices=["session", "paho", "collector"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=list(SHAPES), default="ts", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--influx", help=argparse.SUPPRESS)
    parser.add_argument("--base-ms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.messages // args.machines
    n = rounds * args.machines
    expect = expected_changes(args.machines, rounds)
    if args.role == "session":
        return role_session(args.port, args.client_id, args.shape)
    if args.role == "paho":
        return role_paho(args.port, n, args.client_id)
    if args.role == "collector":
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        final_code = 1 if exec_of(rounds - 1) == "ACTIVE" else 2
        return role_collector(args.shape, args.port, args.machines, n, expect, final_code, args.influx,
                              args.client_id, args.base_ms)

    from tests.fixtures._ports import free_port
    from tests.fixtures.influxdb import start_influxd
    from tests.fixtures.mosquitto import Mosquitto

    assert exec_of(rounds - 1) != exec_of(rounds - 2), "the last round must change every machine's state"
    shapes = [s for s in args.shapes.split(",") if s]
    roles = ["paho", "collector"] + ([] if args.no_nodered else ["nodered"])
    if not args.no_nodered:
        from bench.nodered import ensure_installed
        ensure_installed()
    ids = {(shape, role, i): f"bench-{role}-{shape}-{i}" for shape in shapes for role in roles
           for i in range(args.repeat)}
    sizes = ["--machines", str(args.machines), "--messages", str(args.messages)]
    rates: dict[tuple[str, str], list[float]] = {(shape, role): [] for shape in shapes for role in roles}
    rss: dict[tuple[str, str], list[float]] = {(shape, role): [] for shape in shapes for role in roles}
    sub_rate = 0.0
    stored: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        (Path(tmp) / "mosquitto").mkdir()
        broker = Mosquitto(free_port(), Path(tmp) / "mosquitto")
        broker.start()
        influxd = start_influxd(Path(tmp) / "influxd")
        try:
            port = str(broker.port)
            for (shape, _, _), client_id in ids.items():
                child("--role", "session", "--port", port, "--client-id", client_id, "--shape", shape)
            if "ts" in shapes:
                child("--role", "session", "--port", port, "--client-id", SUB_ID, "--shape", "ts")
            base_ms = int(time.time() * 1000)
            for shape in shapes:
                took = publish_stream(shape, broker.port, args.machines, n, base_ms)
                print(f"published {n} QoS 1 messages ({shape}) over {args.machines} topics into "
                      f"{len(roles) * args.repeat + (shape == 'ts')} sessions in {took:.1f}s", flush=True)

            if "ts" in shapes:
                t0 = time.perf_counter()
                subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-c", "-x", "3600",
                                "-q", "1", "-i", SUB_ID, "-t", topic_filter("ts"), "-C", str(n)],
                               check=True, stdout=subprocess.DEVNULL, timeout=900)
                sub_rate = n / (time.perf_counter() - t0)
                print(f"mosquitto_sub: {n} messages = {sub_rate:,.0f}/s", flush=True)

            profiled: set[str] = set()
            for i in range(args.repeat):
                for shape in shapes:
                    for role in roles:
                        client_id = ids[shape, role, i]
                        if role == "paho":
                            run = child("--role", "paho", "--port", port, "--client-id", client_id, *sizes)
                            assert run["messages"] == n, run
                        elif role == "collector":
                            env, wrap = dict(os.environ), None
                            if shape not in profiled:
                                profiled.add(shape)
                                if env.get("BENCH_PROFILE"):
                                    env["BENCH_PROFILE"] = f"{env['BENCH_PROFILE']}.{shape}"
                                if env.get("BENCH_PYSPY"):
                                    wrap = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "250",
                                            "-f", "raw", "-o", f"{env['BENCH_PYSPY']}.{shape}.txt", "--"]
                            else:
                                env.pop("BENCH_PROFILE", None)
                            run = child("--role", "collector", "--shape", shape, "--port", port, "--client-id",
                                        client_id, "--influx", influxd.url, "--base-ms", str(base_ms), *sizes,
                                        env=env, wrap=wrap)
                        else:
                            run = run_nodered(Path(tmp), shape, broker.port, influxd.port, influxd.url, client_id,
                                              expect, batch=not args.nodered_per_point)
                        if role != "paho" and not run["ok"]:
                            raise SystemExit(f"{role} did not store every state change: {run}")
                        rates[shape, role].append(n / run["seconds"])
                        if "peak_rss_mb" in run:
                            rss[shape, role].append(run["peak_rss_mb"])
                        extra = "" if role == "paho" else (f", CPU {run['cpu_s']:.1f}s, "
                                                           f"peak RSS {run['peak_rss_mb']:.0f} MB")
                        if role == "collector":
                            stored[shape] = min(stored.get(shape, expect), int(run["stored"]))
                            extra += f", {int(run['stored'])} of {expect} state changes stored"
                        print(f"[{shape}] {role}: {n} messages in {run['seconds']:.2f}s = "
                              f"{rates[shape, role][-1]:,.0f}/s{extra}", flush=True)
        finally:
            influxd.stop()
            broker.stop()
    out: dict[str, float] = {}
    for shape in shapes:
        sfx = "" if shape == "ts" else f"_{shape}"
        rate, paho_rate = median(rates[shape, "collector"]), median(rates[shape, "paho"])
        out |= {f"readings_per_s{sfx}": round(rate), f"paho_floor_per_s{sfx}": round(paho_rate)}
        if shape == "ts":
            out["mosquitto_sub_per_s"] = round(sub_rate)
        out |= {f"ratio_to_paho{sfx}": round(rate / paho_rate, 3),
                f"peak_rss_mb{sfx}": round(max(rss[shape, "collector"]), 1),
                f"changes_lost{sfx}": expect - stored[shape]}
        if "nodered" in roles:
            red = median(rates[shape, "nodered"])
            out |= {f"nodered_per_s{sfx}": round(red), f"ratio_to_nodered{sfx}": round(rate / red, 3),
                    f"nodered_rss_mb{sfx}": round(max(rss[shape, "nodered"]), 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
