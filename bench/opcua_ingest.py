"""OPC UA ingest: a server with 1,000 machines changing state, read by one collector.

    python bench/opcua_ingest.py [--server node-opcua|asyncua] [--machines 1000]
                                 [--rates 2000,4000,6000,8000,12000,16000] [--seconds 20]

The server runs in a subprocess (its CPU is not counted): by default node-opcua
(bench/opcua_server.js, installed with npm into bench/.node-opcua on first use), an OPC UA
stack not written with asyncua, so neither the server's speed nor asyncua's own blind spots
bound the figure; ``--server asyncua`` runs the asyncua server of earlier figures. It changes
the Execution tag (ACTIVE/READY) of random machines at a given rate in total; each machine also
has SpindleSpeed and Alarm tags, so the collector holds 3 x machines monitored items on one
session (publishing interval 0.2 s, queue size 50). The collector (engine + OPC UA adapter +
rules + trackers, sink discarded) runs in this process.

For each rate of ``--rates`` in turn (a fresh server and collector each), measured over
``--seconds`` after every machine reported: value changes the server made per second (from its
own count), value changes the collector handled per second, this process's CPU (100 = one core)
and peak RSS, and the server process's CPU (near 100: the server, one Node.js thread, is the
limit). The collector keeps up at a rate when it handles >= 95 % of what the server made
and the server made >= 95 % of the rate (else the server is the limit, said so). Last line:
{"server", "max_rate_kept_up", "value_changes_per_s", "cpu_percent", "peak_rss_mb", "server_limited",
"rates": [{"rate", "server_per_s", "value_changes_per_s", "cpu_percent", "server_cpu_percent",
"kept_up"}, ...]}, the
top-level figures those of the highest rate kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import threading
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
  - {{id: cell, type: opcua, endpoint: "opc.tcp://127.0.0.1:{port}", publishing_interval: 0.2,
     sampling_interval: 0, queue_size: 50}}
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
            "state_changes": changes, "t0": t0, "t1": t1}


class Server:
    """The bench server subprocess; ``reports`` fills with (monotonic time, changes written)."""

    def __init__(self, kind: str, port: int, machines: int, rate: float, tmp: Path) -> None:
        if kind == "node-opcua":
            from bench.npm import ensure

            modules = ensure(ROOT / "bench" / ".node-opcua", ["node-opcua-server@2"], "node-opcua-server")
            cmd = ["node", str(ROOT / "bench" / "opcua_server.js"), str(port), str(machines), str(rate), str(tmp)]
            env = {**os.environ, "NODE_PATH": str(modules)}
        else:
            cmd = [sys.executable, __file__, "--serve", str(port), "--machines", str(machines), "--rate", str(rate)]
            env = dict(os.environ)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.ready = threading.Event()
        self.reports: list[tuple[float, int]] = []
        self.cpu: list[tuple[float, float]] = []  # (monotonic time, the server's CPU seconds so far)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample_cpu, daemon=True).start()

    def _sample_cpu(self) -> None:
        import psutil

        proc = psutil.Process(self.proc.pid)
        while self.proc.poll() is None:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                return
            self.cpu.append((time.monotonic(), times.user + times.system))
            time.sleep(0.5)

    def cpu_between(self, t0: float, t1: float) -> float:
        """The server's CPU percent (100 = one core) between t0 and t1."""
        inside = [c for c in self.cpu if t0 <= c[0] <= t1]
        if len(inside) < 2:
            return float("nan")
        (a, ca), (b, cb) = inside[0], inside[-1]
        return 100 * (cb - ca) / (b - a)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready.set()
            elif line.startswith("{"):
                self.reports.append((time.monotonic(), json.loads(line)["written"]))

    def rate_between(self, t0: float, t1: float) -> float:
        """Changes per second the server made between its first report after t0 and its last before t1."""
        inside = [r for r in self.reports if t0 <= r[0] <= t1]
        if len(inside) < 2:
            return float("nan")
        (a, wa), (b, wb) = inside[0], inside[-1]
        return (wb - wa) / (b - a)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def one_rate(kind: str, machines: int, rate: float, seconds: float) -> dict[str, float]:
    import tempfile

    from tests.fixtures._ports import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(kind, port, machines, rate, Path(tmp))
        try:
            if not server.ready.wait(120):
                raise SystemExit(f"the {kind} bench server did not start")
            result = asyncio.run(collect(port, machines, seconds, Path(tmp) / "collector"))
        finally:
            server.stop()
    made = server.rate_between(result["t0"], result["t1"])
    handled = result["value_changes_per_s"]
    return {"rate": rate, "server_per_s": round(made, 1), "value_changes_per_s": handled,
            "cpu_percent": result["cpu_percent"], "peak_rss_mb": result["peak_rss_mb"],
            "server_cpu_percent": round(server.cpu_between(result["t0"], result["t1"]), 1),
            "kept_up": handled >= 0.95 * made, "server_limited": made < 0.95 * rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["node-opcua", "asyncua"], default="node-opcua")
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--rates", default="2000,4000,6000,8000,12000,16000",
                        help="value changes per second the server makes, one run each, in turn")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=4000, help=argparse.SUPPRESS)  # the asyncua server's
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.machines, args.rate))
        return

    runs = []
    for rate in (float(r) for r in args.rates.split(",")):
        run = one_rate(args.server, args.machines, rate, args.seconds)
        runs.append(run)
        print(f"{args.server}: {args.machines} machines, {3 * args.machines} monitored items, rate {rate:g}/s: "
              f"server made {run['server_per_s']:g}/s, collector handled {run['value_changes_per_s']:g}/s, "
              f"{run['cpu_percent']:g}% CPU, peak RSS {run['peak_rss_mb']:g} MB, "
              f"server CPU {run['server_cpu_percent']:g}%"
              + (" (kept up)" if run["kept_up"] else " (fell behind)")
              + (" (server below the rate)" if run["server_limited"] else ""), flush=True)
        if not run["kept_up"]:
            break
    kept = [r for r in runs if r["kept_up"]]
    best = max(kept, key=lambda r: r["value_changes_per_s"]) if kept else runs[0]
    print(json.dumps({"server": args.server, "max_rate_kept_up": best["server_per_s"] if kept else 0,
                      "value_changes_per_s": best["value_changes_per_s"], "cpu_percent": best["cpu_percent"],
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                      "server_limited": any(r["server_limited"] for r in runs),
                      "rates": [{k: r[k] for k in ("rate", "server_per_s", "value_changes_per_s", "cpu_percent",
                                                  "server_cpu_percent", "kept_up")} for r in runs]}))


if __name__ == "__main__":
    main()
