"""Node-RED as a plant would set it up instead of the collector, for bench/mqtt_ingest.py.

The flow: ``mqtt in`` (QoS 1, persistent session: clean session off, MQTT 5 session expiry)
-> a ``function`` node with the bench's state rules (``busy`` when ``exec == 'ACTIVE'``, else
``idle``; a point per state change with the collector's fields) -> ``join`` (up to 1,000
points or 0.2 s) -> ``influxdb batch`` (node-red-contrib-influxdb, InfluxDB 1.x) into its own
database. The naive flow (``influxdb out``, one request per point; ``batch=False``) loses
points under a backlog, see ``flow``.

Node-RED 4 and the InfluxDB nodes are installed with npm into ``bench/.nodered`` on first use
(git-ignored; the test command never installs them). Node-RED runs headless (no editor, no HTTP
nodes) with its own user directory in a temp dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.npm import ensure

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / ".nodered"
PACKAGES = ["node-red@4", "node-red-contrib-influxdb@0.7"]

# The collector's bench rules, as a plant engineer would write them in a function node.
FUNCTION = """
const p = msg.payload;
%(time)s
const parts = msg.topic.split('/');
const machine = parts[3];
const state = p.exec === 'ACTIVE' ? 'busy' : 'idle';
const states = context.get('states') || {};
const prev = states[machine];
if (prev !== undefined && prev.state === state) {
    return null;
}
states[machine] = {state: state, since: t};
context.set('states', states);
const fields = {
    state: state,
    state_code: state === 'busy' ? 1 : 2,
    previous: prev === undefined ? 'offline' : prev.state,
    previous_s: prev === undefined ? 0 : (t - prev.since) / 1e6,
    reason: state === 'busy' ? "execution == 'ACTIVE' (execution='" + p.exec + "')" : 'default',
};
const tags = {machine: machine, plant: parts[1], line: parts[2]};
%(point)s
return msg;
"""
# `influxdb out`: [fields (time among them), tags]; `influxdb batch`: node-influx points.
POINT_OUT = "fields.time = t;\nmsg.payload = [fields, tags];"
POINT_BATCH = "msg.payload = {measurement: 'machine_state', fields: fields, tags: tags, timestamp: t};"


# Times in microseconds. Arrival time: Date.now() has milliseconds only, and Node-RED handles a
# backlog's messages of one machine within the same millisecond, so a change would overwrite the
# one before it in InfluxDB (same series, same time); strictly increasing microseconds keep
# every change, as the collector's nanosecond arrival times are meant to.
PAYLOAD_TIME = "const t = p.ts * 1000;"
ARRIVAL_TIME = """const t = Math.max(Date.now() * 1000, (context.get('last') || 0) + 1);
context.set('last', t);"""


def ensure_installed() -> Path:
    """Install Node-RED and the InfluxDB nodes into bench/.nodered once; return red.js."""
    modules = ensure(NODE_DIR, PACKAGES, "node-red-contrib-influxdb/influxdb.js")
    return modules / "node-red" / "red.js"


def flow(*, mqtt_port: int, client_id: str, topic_filter: str, influx_port: int, database: str,
         payload_time: bool, batch: bool = True) -> list[dict[str, object]]:
    """The flow. ``batch``: a ``join`` node gathers up to 1,000 points (or what came within
    0.2 s) into one ``influxdb batch`` write; without it, ``influxdb out`` writes each point in a
    request of its own, all at once, and under a backlog influxd 1.6 answers many of them with
    500 Internal Server Error, which the node logs and drops (points lost)."""
    broker = {"id": "broker", "type": "mqtt-broker", "name": "bench broker", "broker": "127.0.0.1",
              "port": str(mqtt_port), "clientid": client_id, "autoConnect": True, "usetls": False,
              "protocolVersion": "5", "keepalive": "60", "cleansession": False, "autoUnsubscribe": False,
              "sessionExpiry": "3600", "birthTopic": "", "closeTopic": "", "willTopic": ""}
    influx = {"id": "influx", "type": "influxdb", "hostname": "127.0.0.1", "port": str(influx_port),
              "protocol": "http", "database": database, "name": "bench influxd", "usetls": False,
              "influxdbVersion": "1.x"}
    code = FUNCTION % {"time": PAYLOAD_TIME if payload_time else ARRIVAL_TIME,
                       "point": POINT_BATCH if batch else POINT_OUT}
    if batch:
        writer: list[dict[str, object]] = [
            {"id": "write", "type": "join", "z": "tab", "name": "batch", "mode": "custom", "build": "array",
             "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n", "joinerType": "str",
             "accumulate": False, "timeout": "0.2", "count": "1000", "reduceRight": False, "wires": [["out"]]},
            {"id": "out", "type": "influxdb batch", "z": "tab", "influxdb": "influx", "name": "",
             "precision": "u", "retentionPolicy": "", "wires": []}]
    else:
        writer = [{"id": "write", "type": "influxdb out", "z": "tab", "influxdb": "influx", "name": "",
                   "measurement": "machine_state", "precision": "u", "retentionPolicy": "", "wires": []}]
    return [
        {"id": "tab", "type": "tab", "label": "machine states"},
        broker, influx,
        {"id": "in", "type": "mqtt in", "z": "tab", "name": "", "topic": topic_filter, "qos": "1",
         "datatype": "json", "broker": "broker", "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "wires": [["rules"]]},
        {"id": "rules", "type": "function", "z": "tab", "name": "state rules", "func": code, "outputs": 1,
         "wires": [["write"]]},
        *writer,
    ]


SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %(port)d,
    httpAdminRoot: false,
    httpNodeRoot: false,
    flowFile: "flows.json",
    credentialSecret: false,
    logging: {console: {level: "info", metrics: false, audit: false}},
    contextStorage: {default: {module: "memory"}},
};
"""


@dataclass
class NodeRed:
    """One headless Node-RED process with one flow; ``started`` is set at its "Started flows" log line."""

    user_dir: Path
    port: int
    proc: subprocess.Popen[str] | None = None
    started: threading.Event = field(default_factory=threading.Event)
    started_at: float = 0.0
    log: list[str] = field(default_factory=list)

    def start(self, flows: list[dict[str, object]]) -> None:
        red = ensure_installed()
        self.user_dir.mkdir(parents=True, exist_ok=True)
        (self.user_dir / "flows.json").write_text(json.dumps(flows, indent=1))
        (self.user_dir / "settings.js").write_text(SETTINGS % {"port": self.port})
        self.proc = subprocess.Popen(
            ["node", str(red), "--settings", str(self.user_dir / "settings.js"), "--userDir", str(self.user_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.user_dir,
            env={**os.environ, "NODE_ENV": "production"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            if "Started flows" in line and not self.started.is_set():
                self.started_at = time.perf_counter()
                self.started.set()

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the node process so far."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def drain(user_dir: Path, port: int, flows: list[dict[str, object]], stored: Callable[[], int], expect: int,
          timeout_s: float, stall_s: float = 60.0) -> dict[str, float]:
    """Run the flow until ``stored()`` (polled every 0.1 s) reaches ``expect``; time from
    "Started flows" (the MQTT connect follows it) to the poll that saw it. Gives up after
    ``timeout_s``, or when ``stored()`` has not grown for ``stall_s`` (Node-RED lost points)."""
    red = NodeRed(user_dir, port)
    red.start(flows)
    count = 0
    try:
        if not red.started.wait(60):
            raise SystemExit("Node-RED did not start:\n" + "\n".join(red.log[-30:]))
        deadline = red.started_at + timeout_s
        ok = False
        grew = time.perf_counter()
        while time.perf_counter() < deadline and time.perf_counter() - grew < stall_s:
            time.sleep(0.1)
            now = stored()
            if now != count:
                count, grew = now, time.perf_counter()
            if count >= expect:
                ok = True
                break
        elapsed = time.perf_counter() - red.started_at
        rss, cpu = red.peak_rss_mb(), red.cpu_s()
    finally:
        red.stop()
    # Warnings every headless start gives (no projects, no credential secret) are left out.
    said = [line for line in red.log if ("[error]" in line or "[warn]" in line)
            and "Projects disabled" not in line and "unencrypted credentials" not in line]
    if said or not ok:
        print("Node-RED said:\n" + "\n".join((said or red.log)[-20:]), flush=True)
    return {"seconds": elapsed, "ok": ok, "peak_rss_mb": rss, "cpu_s": cpu, "stored": count}
