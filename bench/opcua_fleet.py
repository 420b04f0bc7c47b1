"""A gateway reading a fleet of machine tools, each with its own OPC UA server.

    python bench/opcua_fleet.py [--servers 200] [--per-process 50] [--period 60] [--steady 120]
                                [--warmup 10] [--seed 1] [--down 5] [--rebuild] [--timeout 300]
                                [--source-options "keepalive: 10"] [--keep]

``--servers`` node-opcua servers (bench/opcua_fleet_servers.js, ``--per-process`` of them per
node process, installed with npm into bench/.node-opcua on first use), one OPC 40001 machine
each, each machine changing state (Executing <-> NotExecuting) once per ``--period`` s at its
own seeded phase. The real ``collector run`` (``--print``, its output discarded: no database,
only the collector's own work is measured) has one ``type: opcua`` source per server with
``discover: machinery``: no machine is configured, each is found on its server.

1. **Start.** From starting the collector until every machine has a state (its
   ``/api/v1/machines`` shows every one of them, none offline): ``seconds_to_all_states``.
2. **Steady state.** After ``--warmup`` s, over ``--steady`` s: the collector process's CPU
   time / wall time (100 = one core) and its RSS (sampled every second; the last and the
   largest); the node processes' CPU and RSS alongside (``server_*``).
3. **Restart storm.** Every server ends its sessions (and subscriptions) and connections at
   once and refuses connections for ``--down`` s, then listens again (``--rebuild``: every
   server shut down and a new one built on its port, in turn: node-opcua builds an address
   space in ~0.1 s, 50 of them on a loaded machine in over a minute, which measures node);
   ``servers_restart_s``: until the last server listens again. From the storm until every
   source has been reopened (its reconnect count went up) and every machine has a state again:
   ``seconds_to_all_states_after_restart`` (``seconds_after_servers_back``: the same from the
   last server listening again); with the collector's reconnect attempts in that time
   (``reconnects_after_restart``, all sources: one each is the least).

A wait that runs out after ``--timeout`` s is a figure, not an error: the time is null and
``machines_with_state`` / ``machines_with_state_after_restart`` say how many machines had a
state by then. ``sessions``: the sessions the servers held in the steady state (one per server
is right; fewer: sources still failing to open; more: sessions timed-out opens left behind).
``--keep`` keeps the temp dir with collector.log and each node process's servers.log.

Targets: all states within 30 s of the start and of the storm, <= 5 % of one core steady,
RSS <= 300 MB. Last line: {"servers", "seconds_to_all_states", "machines_with_state",
"cpu_percent", "rss_mb", "peak_rss_mb", "seconds_to_all_states_after_restart",
"machines_with_state_after_restart", "seconds_after_servers_back", "reconnects_after_restart",
"servers_restart_s", "sessions", "server_cpu_percent", "server_rss_mb", "state_changes_per_min", "steady_s"}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures._ports import free_port  # noqa: E402

# Each node process takes consecutive free ports from its own base on, below the ephemeral range
# (32768-60999): a client's socket must not take a server's port while the server restarts.
PORT_BASE = 20000
PORT_STRIDE = 1000


class Servers:
    """One node process of ``count`` servers; its stdout lines read on a thread."""

    def __init__(self, modules: Path, first_port: int, count: int, first_machine: int, period: float, seed: int,
                 root: Path) -> None:
        env = {**os.environ, "NODE_PATH": str(modules)}
        self.log_path = root / "servers.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["node", str(ROOT / "bench" / "opcua_fleet_servers.js"), str(first_port), str(count), str(first_machine),
             str(period), str(seed), str(root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self.ports: list[int] = []
        self.restarted: float | None = None
        self.sessions = 0
        self.changes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "ready" in msg:
                    self.ports = msg["ready"]
                elif "restarted" in msg:
                    self.restarted = msg["seconds"]
                elif "sessions" in msg:
                    self.sessions, self.changes = msg["sessions"], msg["changes"]

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"a node process of servers exited: {self.log_path.read_text()[-3000:]}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    if not until(condition, timeout, poll):
        raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


def until(condition: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Poll ``condition`` until true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body


def config_text(ports: list[int], http_port: int, data_dir: Path, options: str = "") -> str:
    extra = f", {options}" if options else ""
    lines = [f"  - {{id: s{i:03d}, type: opcua, endpoint: \"opc.tcp://127.0.0.1:{port}\", discover: machinery{extra}}}"
             for i, port in enumerate(ports)]
    return (f"site: {{plant: fleet}}\ndata_dir: {data_dir}\nhttp: {{host: 127.0.0.1, port: {http_port}}}\n"
            "sources:\n" + "\n".join(lines) + "\n")


class Collector:
    def __init__(self, config: str, root: Path) -> None:
        path = root / "collector.yaml"
        path.write_text(config)
        self.log_path = root / "collector.log"
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "collector"), "--log-level", "WARNING", "run",
                                      "-c", str(path), "--print"], stdout=subprocess.DEVNULL, stderr=self._log)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"the collector exited: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def machines(http_port: int) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = json.loads(get(f"http://127.0.0.1:{http_port}/api/v1/machines"))
    return body


def with_state(http_port: int) -> int:
    """Machines the collector shows in a state other than offline."""
    try:
        return sum(1 for m in machines(http_port) if m["state"] != "offline")
    except OSError:
        return 0


METRIC = re.compile(r'^(collector_source_reconnects_total|collector_source_up)\{source="([^"]+)"\} (\S+)$', re.M)


def source_figures(http_port: int) -> tuple[dict[str, int], dict[str, bool]]:
    """(reconnects per source, up per source) from /metrics."""
    reconnects: dict[str, int] = {}
    up: dict[str, bool] = {}
    for name, source, value in METRIC.findall(get(f"http://127.0.0.1:{http_port}/metrics").decode()):
        if name == "collector_source_up":
            up[source] = float(value) == 1
        else:
            reconnects[source] = int(float(value))
    return reconnects, up


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from bench.npm import ensure

    modules = ensure(ROOT / "bench" / ".node-opcua", ["node-opcua-server@2"], "node-opcua-server")
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
            print(f"logs and data kept in {root}", flush=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        groups: list[Servers] = []
        try:
            t0 = time.monotonic()
            for i, first in enumerate(range(0, args.servers, args.per_process)):
                count = min(args.per_process, args.servers - first)
                (root / f"node{i}").mkdir()
                groups.append(Servers(modules, PORT_BASE + i * PORT_STRIDE, count, first, args.period, args.seed + i,
                                      root / f"node{i}"))
            wait(lambda: all(g.ports for g in groups) or any(g.proc.poll() is not None for g in groups), 300,
                 "the servers")
            if any(g.proc.poll() is not None for g in groups):
                raise SystemExit("a node process of servers exited")
            ports = [p for g in groups for p in g.ports]
            print(f"{len(ports)} servers in {len(groups)} node process(es) up in {time.monotonic() - t0:.1f}s",
                  flush=True)
            http_port = free_port()
            collector = Collector(config_text(ports, http_port, root / "data", args.source_options), root)
            try:
                return measure(args, collector, groups, http_port, psutil)
            finally:
                collector.stop()
        finally:
            for g in groups:
                g.stop()


def measure(args: argparse.Namespace, collector: Collector, groups: list[Servers], http_port: int,
            psutil: Any) -> dict[str, Any]:
    n = args.servers

    def states() -> bool:
        collector.check()
        for g in groups:
            g.check()
        return with_state(http_port) >= n

    # A time-out is a figure too (null, with how many machines had a state by then), not an error.
    to_all: float | None = None
    if until(states, args.timeout):
        to_all = time.monotonic() - collector.started
        print(f"every machine has a state {to_all:.1f}s after the collector started", flush=True)
    first = with_state(http_port)
    if to_all is None:
        print(f"only {first} of {n} machines have a state {args.timeout:g}s after the collector started", flush=True)
    time.sleep(args.warmup)

    proc = psutil.Process(collector.proc.pid)
    nodes = [psutil.Process(g.proc.pid) for g in groups]
    cpu0, node0, wall0 = proc.cpu_times(), [p.cpu_times() for p in nodes], time.monotonic()
    changes0 = sum(g.changes for g in groups)
    peak = 0.0
    while time.monotonic() - wall0 < args.steady:
        time.sleep(1)
        collector.check()
        peak = max(peak, proc.memory_info().rss)
    cpu1, node1, wall1 = proc.cpu_times(), [p.cpu_times() for p in nodes], time.monotonic()
    wall = wall1 - wall0
    rss = proc.memory_info().rss
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
    node_cpu = sum(b.user + b.system - a.user - a.system for a, b in zip(node0, node1, strict=True)) / wall * 100
    node_rss = sum(p.memory_info().rss for p in nodes)
    changes = sum(g.changes for g in groups) - changes0
    sessions = sum(g.sessions for g in groups)
    print(f"steady, {wall:.0f}s: collector CPU {cpu:.2f}% of one core, RSS {rss / 2**20:.1f} MB "
          f"(peak {peak / 2**20:.1f}); servers CPU {node_cpu:.1f}%, RSS {node_rss / 2**20:.0f} MB, "
          f"{sessions} sessions", flush=True)

    before, _ = source_figures(http_port)
    sources = [f"s{i:03d}" for i in range(n)]
    storm = time.monotonic()
    for g in groups:
        g.restarted = None
        g.send("restart" if args.rebuild else f"cycle {args.down}")
    most_down = 0

    def recovered() -> bool:
        nonlocal most_down
        collector.check()
        for g in groups:
            g.check()
        try:
            reconnects, up = source_figures(http_port)
        except OSError:
            return False
        most_down = max(most_down, sum(1 for v in up.values() if not v))
        if any(reconnects.get(s, 0) <= before.get(s, 0) for s in sources):
            return False
        return with_state(http_port) >= n

    after: float | None = None
    if until(recovered, args.timeout, poll=0.25):
        after = time.monotonic() - storm
    again = with_state(http_port)
    wait(lambda: all(g.restarted is not None for g in groups), 60, "the servers' restart report")
    reconnects, _ = source_figures(http_port)
    attempts = sum(reconnects.values()) - sum(before.values())
    restart_s = max(g.restarted or 0.0 for g in groups)
    print(f"restart storm: servers listening again {restart_s:.1f}s after it; "
          + (f"every machine has its state again {after:.1f}s after the storm" if after is not None else
             f"only {again} of {n} machines have a state {args.timeout:g}s after the storm")
          + f"; {attempts} reconnect(s), at most {most_down} sources down at once", flush=True)
    return {"servers": n, "seconds_to_all_states": _round(to_all), "machines_with_state": first,
            "cpu_percent": round(cpu, 2),
            "rss_mb": round(rss / 2**20, 1), "peak_rss_mb": round(max(peak, rss) / 2**20, 1),
            "seconds_to_all_states_after_restart": _round(after), "machines_with_state_after_restart": again,
            "seconds_after_servers_back": _round(None if after is None else after - restart_s),
            "reconnects_after_restart": attempts,
            "servers_restart_s": round(restart_s, 2), "sessions": sessions,
            "server_cpu_percent": round(node_cpu, 1), "server_rss_mb": round(node_rss / 2**20, 0),
            "state_changes_per_min": round(changes / wall * 60, 1), "steady_s": round(wall, 1)}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # the servers are stopped on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--per-process", type=int, default=50, help="servers per node process")
    parser.add_argument("--period", type=float, default=60.0, help="seconds between two changes of one machine")
    parser.add_argument("--steady", type=float, default=120.0, help="measured steady-state seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after every first state, not measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--down", type=float, default=5.0, help="seconds the servers refuse connections in the storm")
    parser.add_argument("--rebuild", action="store_true",
                        help="storm: shut every server down and build a new one (slow in node-opcua) instead")
    parser.add_argument("--source-options", default="",
                        help='more keys for every source, YAML flow style, e.g. "keepalive: 10, rescan_interval: 1h"')
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (collector.log, node*/servers.log)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a wait after this long")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
