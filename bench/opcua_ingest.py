"""OPC UA ingest: an asyncua server with 1,000 machines changing state, read by the collector.

    python bench/opcua_ingest.py [--machines 1000] [--rate 4000] [--seconds 20]

The server runs in a subprocess (its CPU is not counted) and changes the Execution tag
(ACTIVE/READY) of random machines at ``--rate`` changes per second in total; each machine also
has SpindleSpeed and Alarm tags, so the collector holds 3 x machines monitored items on one
session. The collector (engine + OPC UA adapter + rules + trackers, sink discarded) runs in this
process. Measured over ``--seconds`` after every machine reported: value changes handled per
second, this process's CPU (100 = one core) and peak RSS. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

URI = "urn:bench:cnc"


async def serve(port: int, machines: int, rate: float) -> None:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    idx = await server.register_namespace(URI)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Machines", idx), ua.QualifiedName("Machines", idx))
    names = [f"M{i:04d}" for i in range(machines)]
    for name in names:
        obj = await folder.add_object(ua.NodeId(name, idx), ua.QualifiedName(name, idx))
        await obj.add_variable(ua.NodeId(f"{name}.Execution", idx), "Execution", "READY", ua.VariantType.String)
        await obj.add_variable(ua.NodeId(f"{name}.SpindleSpeed", idx), "SpindleSpeed", 0.0, ua.VariantType.Double)
        await obj.add_variable(ua.NodeId(f"{name}.Alarm", idx), "Alarm", False, ua.VariantType.Boolean)
    running = dict.fromkeys(names, False)
    rng = random.Random(1)
    async with server:
        print("ready", flush=True)
        written, start, last_report = 0, time.monotonic(), time.monotonic()
        while True:
            due = int((time.monotonic() - start) * rate) - written
            for _ in range(min(due, 500)):  # write in slices so the server's publishing keeps up
                name = rng.choice(names)
                running[name] = not running[name]
                now = dt.datetime.now(dt.UTC)
                await server.write_attribute_value(ua.NodeId(f"{name}.Execution", idx), ua.DataValue(
                    ua.Variant("ACTIVE" if running[name] else "READY", ua.VariantType.String),
                    SourceTimestamp=now, ServerTimestamp=now))
                written += 1
            if time.monotonic() - last_report >= 1:
                last_report = time.monotonic()
                print(json.dumps({"written": written}), flush=True)
            await asyncio.sleep(0.005)


def config_text(port: int, machines: int, data_dir: Path) -> str:
    lines = [f"  - {{id: M{i:04d}, source: cell, profile: lathe, vars: {{node: M{i:04d}}}}}" for i in range(machines)]
    return f"""
site: {{plant: bench}}
data_dir: {data_dir}
http: {{enabled: false}}
sources:
  - {{id: cell, type: opcua, endpoint: "opc.tcp://127.0.0.1:{port}", publishing_interval: 0.2, queue_size: 50}}
profiles:
  lathe:
    signals:
      execution: "nsu={URI};s={{node}}.Execution"
      spindle_rpm: "nsu={URI};s={{node}}.SpindleSpeed"
      alarm: "nsu={URI};s={{node}}.Alarm"
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE' or spindle_rpm > 50"}}
      - {{state: idle}}
machines:
""" + "\n".join(lines) + "\n"


async def collect(port: int, machines: int, seconds: float, data_dir: Path) -> dict[str, float]:
    import psutil

    from collector.configfile import load_config_text
    from collector.engine import Engine
    from collector.sinks import NullSink

    engine = Engine(load_config_text(config_text(port, machines, data_dir)), NullSink())
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    deadline = time.monotonic() + 120
    while sum(1 for s in engine.snapshot().values() if s.last_reading_ns is not None) < machines:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise SystemExit("not every machine reported within 120 s")
        await asyncio.sleep(0.1)
    proc = psutil.Process()
    proc.cpu_percent()
    events0, t0 = engine.stats.events, time.monotonic()
    await asyncio.sleep(seconds)
    events1, t1 = engine.stats.events, time.monotonic()
    cpu = proc.cpu_percent()
    changes = engine.stats.state_changes
    stop.set()
    await task
    return {"value_changes_per_s": round((events1 - events0) / (t1 - t0), 1), "cpu_percent": round(cpu, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "state_changes": changes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=4000, help="value changes per second the server makes")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.machines, args.rate))
        return

    import tempfile

    from tests.fixtures._ports import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--machines", str(args.machines),
                               "--rate", str(args.rate)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("bench server did not start")
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(collect(port, args.machines, args.seconds, Path(tmp)))
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=15)
    written = [json.loads(line)["written"] for line in out.splitlines() if line.startswith("{")]
    print(f"server: {args.machines} machines, {3 * args.machines} monitored items, offered {args.rate:g} "
          f"changes/s ({written[-1] if written else '?'} written in total)")
    print(f"collector: {result['value_changes_per_s']:g} value changes/s handled, {result['cpu_percent']:g}% CPU, "
          f"peak RSS {result['peak_rss_mb']:g} MB, {result['state_changes']:g} state changes")
    print(json.dumps({k: result[k] for k in ("value_changes_per_s", "cpu_percent", "peak_rss_mb")}))


if __name__ == "__main__":
    main()
