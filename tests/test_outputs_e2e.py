"""The plant and the platform, end to end: `collector run` (a process) reads a live MQTT stream
and writes through one outbox to two outputs, the plant's influxd (every machine) and the
platform's victoria-metrics (public machines only, without `reason`). Each output's server is
stopped in turn while the other's latency is measured, then both at once while the collector
is killed with SIGKILL and restarted; the exactness harness's oracle then checks that the
plant holds exactly the history the messages imply, and the platform exactly the public
machines' part of it."""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.core.model import State
from tests.fixtures._exactness import (
    Collector,
    Stream,
    compare,
    config_text,
    create_session,
    expected_changes,
    stored_changes,
    stored_intervals,
)
from tests.fixtures._ports import wait_for
from tests.fixtures.influxdb import InfluxD, VictoriaMetrics
from tests.fixtures.mosquitto import Mosquitto

MS = 1_000_000
MACHINES = 12
PUBLIC = {"m000", "m003", "m006", "m009"}
PROBE = "probe"  # a public machine outside the stream: its changes time each output
DB = "plant"


def two_output_config(broker: Mosquitto, influxd: InfluxD, vm: VictoriaMetrics, data: Path, stream: Stream) -> str:
    """The harness's config with `outputs:` in place of `influx:` and some machines public."""
    lines = []
    for line in config_text(broker, influxd, data, stream, db=DB, client_id="plant").splitlines():
        if line.startswith("influx:"):
            lines += ["outputs:",
                      f"  - {{name: plant, url: '{influxd.url}', api: v1, database: {DB}, create_database: true}}",
                      f"  - {{name: platform, url: '{vm.url}', api: victoriametrics, database: p1,",
                      "      machines: {public: true}, drop_fields: [reason]}"]
        elif line.startswith("outbox:"):
            lines.append(line.replace("flush_interval: 0.2", "flush_interval: 0.2, commit_delay: 0.2"))
        elif line.startswith("  - {id: m"):
            mid = line.split("id: ")[1].split(",")[0]
            lines.append(line.replace("}", ", public: true}") if mid in PUBLIC else line)
        else:
            lines.append(line)
    lines.append(f"  - {{id: {PROBE}, source: line, profile: lathe, public: true}}")
    return "\n".join(lines) + "\n"


class Publisher(threading.Thread):
    """Publishes the stream live: each message once the clock reaches its stamp, one
    `mosquitto_pub -l` per machine (QoS 1, in order), into the collector's persistent session."""

    def __init__(self, broker: Mosquitto, stream: Stream) -> None:
        super().__init__(daemon=True)
        self.broker, self.stream = broker, stream

    def run(self) -> None:
        procs = {mid: subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1",
                                        "-t", f"ex/{mid}/status", "-l", "-i", f"ex-pub-{mid}"],
                                       stdin=subprocess.PIPE) for mid in self.stream.machines}
        ordered = sorted((m for ms in self.stream.messages.values() for m in ms), key=lambda m: m.ts_ns)
        for m in ordered:
            delay = (m.ts_ns - time.time_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            stdin = procs[m.machine].stdin
            assert stdin is not None
            stdin.write((m.payload(True) + "\n").encode())
            stdin.flush()
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(60)


class Probe:
    """Times an output: publishes a change of the probe machine stamped now, and measures until
    the output's server shows it."""

    def __init__(self, broker: Mosquitto, influxd: InfluxD, vm: VictoriaMetrics) -> None:
        self.broker, self.influxd, self.vm = broker, influxd, vm
        self.busy = False

    def in_plant(self, ts: int) -> bool:
        return bool(self.influxd.query(f"SELECT state_code FROM machine_state WHERE machine = '{PROBE}' AND "
                                       f"time = {ts}", DB))

    def in_platform(self, ts: int) -> bool:
        self.vm.flush()
        url = f"{self.vm.url}/api/v1/export?" + urllib.parse.urlencode(
            {"match[]": f'machine_state_state_code{{machine="{PROBE}"}}', "start": str(ts // 10**9 - 1)})
        with urllib.request.urlopen(url, timeout=10) as r:
            return f"{ts // MS}" in r.read().decode()

    def once(self, seen: Callable[[int], bool]) -> float:
        self.busy = not self.busy
        ts = time.time_ns() // 1000 * 1000
        body = json.dumps({"exec": "ACTIVE" if self.busy else "READY", "spindle": 0, "alarm": False, "ts": ts // 1000})
        start = time.monotonic()
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1", "-t",
                        f"ex/{PROBE}/status", "-m", body], check=True, timeout=30)
        wait_for(lambda: seen(ts), 30, "the probe's change")
        return time.monotonic() - start

    def during(self, seconds: float, seen: Callable[[int], bool]) -> list[float]:
        """Latencies measured back to back for ``seconds``."""
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(self.once(seen))
            time.sleep(0.2)
        return out


def platform_changes(vm: VictoriaMetrics, after_ns: int, last_ns: int | None = None) -> dict[str, dict[int, int]]:
    """Per machine: ms -> state_code of the state changes victoria-metrics holds from ``after_ns``
    up to ``last_ns`` (inclusive; None: all). VictoriaMetrics keeps milliseconds, so a bound is
    compared in them: a point of the same millisecond as ``last_ns`` is in."""
    out: dict[str, dict[int, int]] = {}
    for series in vm.export('{__name__="machine_state_state_code"}'):
        mid = series["metric"]["machine"]
        for value, ts in zip(series["values"], series["timestamps"], strict=True):
            if after_ns // MS <= ts and (last_ns is None or ts <= last_ns // MS):
                out.setdefault(mid, {})[ts] = int(value)
    return out


def platform_want(stream: Stream) -> dict[str, dict[int, int]]:
    """The oracle's changes of the public machines, as the platform keeps them (ms, state_code)."""
    codes = {s.value: s.code for s in State}
    return {mid: {t // MS: codes[s] for t, s, _ in changes}
            for mid, changes in expected_changes(stream).items() if mid in PUBLIC and changes}


def plant_public(influxd: InfluxD, after_ns: int) -> dict[str, dict[int, int]]:
    """Every change the plant holds of a public machine (its clean stops' offline points
    included), as the platform keeps them (ms, state_code)."""
    codes = {s.value: s.code for s in State}
    return {mid: {r["time"] // MS: codes[r["state"]] for r in rows}
            for mid, rows in stored_changes(influxd, DB, after_ns).items() if mid in PUBLIC | {PROBE}}


def platform_diff(got: dict[str, dict[int, int]], want: dict[str, dict[int, int]]) -> str:
    """Per machine: the changes the platform lost, holds in excess, or holds with another state."""
    out = []
    for mid in sorted(set(got) | set(want)):
        g, w = got.get(mid, {}), want.get(mid, {})
        lost, extra = sorted(set(w) - set(g)), sorted(set(g) - set(w))
        other = sorted(t for t in set(g) & set(w) if g[t] != w[t])
        if lost or extra or other:
            out.append(f"{mid}: lost {[(t, w[t]) for t in lost]}, extra {[(t, g[t]) for t in extra]}, "
                       f"other state (ms, held, wanted) {[(t, g[t], w[t]) for t in other]}")
    return "; ".join(out) or "none"


@pytest.mark.parametrize("outage_s", [pytest.param(5, id="5s"), pytest.param(30, id="30s", marks=pytest.mark.slow)])
def test_plant_and_platform_outputs_through_outages_and_kill_9(outage_s: int, mosquitto: Mosquitto,
                                                               influxd: InfluxD, victoria_metrics: VictoriaMetrics,
                                                               tmp_path: Path) -> None:
    """Test that with two outputs (plant influxd: all machines; platform victoria-metrics: public
    machines, no reason): an outage of either output leaves the other's latency as it was; SIGKILL
    of the collector twice while both are down loses nothing; and at the end the plant holds
    exactly the history the live stream implies (every change at its exact time, every roll-up)
    and the platform exactly the public machines' changes, no other machine's."""
    data = tmp_path / "collector"
    data.mkdir()
    collector = Collector(data / "config.yaml", data / "collector.log")
    placeholder = Stream([f"m{i:03d}" for i in range(MACHINES)], {}, True)
    collector.config.write_text(two_output_config(mosquitto, influxd, victoria_metrics, data, placeholder))
    after = create_session(collector, mosquitto)
    span_s = 2 * outage_s + 24
    stream = Stream.generate(MACHINES, 60 * span_s, time.time_ns() + 3 * 10**9, span_s * 10**9, seed=21, stamped=True)
    collector.start(wait=True)
    publisher = Publisher(mosquitto, stream)
    publisher.start()
    probe = Probe(mosquitto, influxd, victoria_metrics)
    time.sleep(3)  # the stream is flowing

    latency: dict[str, list[float]] = {}
    latency["plant, both up"] = probe.during(4, probe.in_plant)
    latency["platform, both up"] = probe.during(4, probe.in_platform)
    influxd.stop()
    latency["platform, plant down"] = probe.during(outage_s, probe.in_platform)
    influxd.start()
    probe.once(probe.in_plant)  # the plant caught up with its outage: now time it with the platform down
    victoria_metrics.stop()
    latency["plant, platform down"] = probe.during(outage_s, probe.in_plant)
    influxd.stop()  # both down: kill -9 twice, restarting each time
    for _ in range(2):
        time.sleep(1.5)
        collector.kill()
        collector.start(wait=True)
    time.sleep(1.5)
    influxd.start()
    victoria_metrics.start()
    publisher.join(span_s + 60)
    assert not publisher.is_alive()

    # The oracle covers the stream (up to its last stamp). What comes after it is the collector's
    # own: the offline points of its clean stop, stamped on each machine's time line (the last
    # stamp plus the time since it arrived), so a few ms *before* the moment the test sends
    # SIGTERM. The plant tells them by their reason; the platform has no reason (dropped), so it
    # is checked against the oracle over the stream, then against the plant over everything.
    want = platform_want(stream)
    deadline = time.monotonic() + 120
    while True:  # until the plant holds the oracle's history and the platform its public part
        diff = compare(stream, stored_changes(influxd, DB, after), after_ns=after, stop_ns=time.time_ns(),
                       intervals=stored_intervals(influxd, DB, after))
        platform = platform_changes(victoria_metrics, after, stream.last_ns)
        if (diff.exact and {m: platform.get(m) for m in PUBLIC} == want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    collector.stop()
    report = {k: (round(statistics.median(v), 3), round(max(v), 3), len(v)) for k, v in latency.items()}
    print(f"\nlatency to visible (median s, max s, probes) with {outage_s} s outages: {report}")

    assert diff.exact and diff.stored == diff.expected > 200, diff
    assert diff.intervals_expected > 100 and diff.intervals_wrong == 0, diff
    assert {m: platform.get(m) for m in PUBLIC} == want, platform_diff(platform, want)
    # Everything, the clean stops included: the platform holds exactly the plant's public part.
    plant = plant_public(influxd, after)
    for mid in PUBLIC:  # each ends with its clean stop, after the stream
        last = max(plant[mid])
        assert plant[mid][last] == State.OFFLINE.code and last > stream.last_ns // MS, (mid, last)
    deadline = time.monotonic() + 30
    while (held := platform_changes(victoria_metrics, after)) != plant and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(held) <= PUBLIC | {PROBE}, f"private machines on the platform: {set(held) - PUBLIC - {PROBE}}"
    assert held == plant, platform_diff(held, plant)
    for up, down in (("platform", "plant"), ("plant", "platform")):
        base, during = latency[f"{up}, both up"], latency[f"{up}, {down} down"]
        assert statistics.median(during) <= statistics.median(base) + 0.3, report
        assert max(during) <= max(base) + 1.0, report
    assert collector.log.read_text().count("output platform: writing failed") >= 1
