"""`collector run` whose wall clock steps mid-stream, against mosquitto and influxd.

Debian's libfaketime moves the collector process's wall clock (``CLOCK_REALTIME``) by what a
file says, re-read on every call, and leaves its monotonic clock alone
(``FAKETIME_DONT_FAKE_MONOTONIC``): the case of a gateway whose clock NTP steps. The publishers
(this test) and mosquitto keep the real clock. Four machines publish without timestamps (arrival
time), each changing state every 2 s and publishing every 0.5 s. The history in InfluxDB must
hold every change, in order, none offline, with roll-ups that add up exactly and never overlap,
and the changes after the step dated within 1 s of their publication (docs/DESIGN.md, "The
collector's clock"). After the step back, the points written before it are rewritten on the
corrected clock: the whole history is in order and dated within 1 s.
On a loaded machine the collector may be scheduled late now and then, so the 1 s bound is on the
median change, none dated before its publication and none 2.5 s late: a clock that labels
wrongly shifts them all.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.fixtures._ports import free_port, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env
from tests.fixtures.influxdb import InfluxD, VictoriaMetrics
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

# Debian's faketime package puts the library under the architecture's multiarch folder.
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
MACHINES = ("m1", "m2", "m3", "m4")
INTERVAL_S = 10
HOUR, DAY = 3600.0, 86400.0
EXACT = 1e-6  # roll-up fields are seconds as floats of integer ns: equal to this


@dataclass(frozen=True)
class Case:
    name: str
    before: str  # libfaketime offsets of the collector's wall clock before and after the step
    after: str
    before_s: float
    after_s: float


CASES = [
    Case("back one hour (a clock that ran ahead, corrected)", "+1h", "+0", HOUR, 0.0),
    Case("forward one hour", "-1h", "+0", -HOUR, 0.0),
    Case("boot a day behind, then synced", "-1d", "+0", -DAY, 0.0),
]


def _config(tmp: Path, broker: Mosquitto, influxd: InfluxD, http_port: int, vm: VictoriaMetrics | None) -> Path:
    config = tmp / "plant.yaml"
    # A step back is corrected in every output: that case writes to victoria-metrics as well.
    outputs = (f"""outputs:
  - {{name: influx, url: "{influxd.url}", api: v1, database: clk, create_database: true}}
  - {{name: platform, url: "{vm.url}", api: victoriametrics}}""" if vm is not None else
               f'influx: {{url: "{influxd.url}", api: v1, database: clk, create_database: true}}')
    config.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: line, type: mqtt, host: 127.0.0.1, port: {broker.port}, qos: 1,
     subscriptions: [{{topic: "clk/{{machine}}/state", payload: json}}]}}
profiles:
  m:
    stale_after: 3s
    signals: {{state: state}}
    rules:
      - {{state: busy, when: "state == 'busy'"}}
      - {{state: idle}}
machines:
{chr(10).join(f"  - {{id: {m}, source: line, profile: m}}" for m in MACHINES)}
tracker: {{interval: {INTERVAL_S}s}}
clock: {{require_sync: false}}
{outputs}
outbox: {{flush_interval: 0.2, sync: normal}}  # no fsync per commit: the test is about time, not power loss
http: {{port: {http_port}}}
data_dir: {tmp / "data"}
""")
    return config


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Publishers:
    """Each machine publishes its state every 0.5 s and changes it every 2 s (machines offset by
    0.5 s); every change is recorded with the real time of its first publication: when it was
    sent and when the broker acknowledged it (the broker passes it on to the collector then)."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="clock-publishers")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.changes: dict[str, list[tuple[str, float, float]]] = {m: [] for m in MACHINES}
        self.tick = 0

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for k, machine in enumerate(MACHINES):
                state = "busy" if ((self.tick + k) // 4) % 2 == 0 else "idle"
                history = self.changes[machine]
                sent = time.time()
                self.client.publish(f"clk/{machine}/state", json.dumps({"state": state}), qos=1).wait_for_publish(5)
                if not history or history[-1][0] != state:
                    history.append((state, sent, time.time()))  # from the publish to the broker's PUBACK
            self.tick += 1
            time.sleep(0.5)  # the publishers' pace: the scenario, not a wait for a result

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.split(" (")[0].replace(" ", "-"))
def test_a_step_of_the_collectors_wall_clock_loses_nothing(case: Case, tmp_path: Path, mosquitto: Mosquitto,
                                                           influxd: InfluxD, request: pytest.FixtureRequest) -> None:
    """Test that with the collector's wall clock stepped mid-stream every published change is stored,
    in time order across the step (after a step back: the history before it rewritten on the
    corrected clock), none of the machines that kept publishing goes offline, roll-ups add up to
    their intervals exactly and never overlap, changes are dated within 1 s of their publication
    (on the clock of their side of a step forward), the step is counted on /metrics and logged
    with its size."""
    if LIBFAKETIME is None:
        pytest.fail("libfaketime not installed: run ./dev test (installs Debian's faketime)")
    spec = tmp_path / "faketime"
    spec.write_text(case.before + "\n")
    http_port = free_port()
    back = case.after_s < case.before_s
    vm: VictoriaMetrics | None = request.getfixturevalue("victoria_metrics") if back else None
    config = _config(tmp_path, mosquitto, influxd, http_port, vm)
    env = collector_env(LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(spec), FAKETIME_NO_CACHE="1",
                        FAKETIME_DONT_FAKE_MONOTONIC="1")
    stderr = (tmp_path / "collector.log").open("w")
    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    publishers = Publishers(mosquitto.port)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{http_port}/readyz")[0] == 200, 30, "the collector ready")
        publishers.run(6.0)
        step_real = time.time()
        spec.write_text(case.after + "\n")
        publishers.run(8.0)
        if back:  # the correction is on /metrics once each output applied it
            wait_for(lambda: len(re.findall(r'collector_output_points_corrected_total\{output="\w+"\} [1-9]',
                                            _get(f"http://127.0.0.1:{http_port}/metrics")[1])) == 2, 30,
                     "the correction applied by both outputs")
        status, metrics = _get(f"http://127.0.0.1:{http_port}/metrics")
        # Everything published is in InfluxDB before the stop (a loaded machine may be slow to send).
        wait_for(lambda: len(influxd.rows("SELECT state FROM machine_state", "clk"))
                 >= sum(len(c) for c in publishers.changes.values()), 30, "the changes in InfluxDB")
    finally:
        publishers.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stderr.close()
    log = (tmp_path / "collector.log").read_text()
    assert code == 0, log
    assert status == 200 and "collector_clock_steps_total 1.0" in metrics
    assert f"the system clock stepped {'back' if case.after_s < case.before_s else 'forward'} by" in log

    changes = influxd.rows("SELECT state, previous, previous_s, reason FROM machine_state GROUP BY machine", "clk")
    rollups = influxd.rows("SELECT * FROM machine_availability GROUP BY machine", "clk")
    rewrote = re.findall(r"output (\w+): rewrote (\d+) point\(s\) of 4 machine\(s\) on the corrected clock "
                         r"\(3600s earlier\) in ([\d.]+)s", log)
    assert sorted(name for name, _, _ in rewrote) == (["influx", "platform"] if back else []), log
    lags_old: list[float] = []
    lags_new: list[float] = []
    for machine in MACHINES:
        published = publishers.changes[machine]
        rows = [r for r in changes if r["machine"] == machine]
        # Each side of the step on its own clock: the labels the old clock gave and the new one
        # gives. After a step forward the time order is the order of events. After a step back
        # the points written before it were rewritten on the corrected clock (DESIGN.md): every
        # point is on it, none is left on the old one. Either way the stored history, in time
        # order, is the published one.
        old = [r for r in rows if abs(r["time"] / 1e9 - case.before_s - step_real) < 60]
        new = [r for r in rows if abs(r["time"] / 1e9 - case.after_s - step_real) < 60]
        assert len(old) + len(new) == len(rows)
        assert old + new == rows
        if back:
            assert old == [], rows
        ordered = rows
        assert ordered[-1]["state"] == "offline" and ordered[-1]["reason"] == "collector stopped"
        # No machine that kept publishing went offline: the only offline state is the stop's (the
        # start's, no data yet, is where a tracker begins, not a change).
        stored = ordered[:-1]
        assert [r for r in stored if r["state"] == "offline"] == [], rows
        assert [r["state"] for r in stored] == [s for s, _, _ in published], (machine, stored, published)
        for side, offset, lags in ((old, case.before_s, lags_old), (new, case.after_s, lags_new)):
            for row, (_, sent, acked) in zip(stored, published, strict=True):
                if row in side:
                    dated = row["time"] / 1e9 - offset  # on the clock of its side of the step
                    assert dated > sent - 0.01, (machine, row, sent)  # never before its publication
                    lags.append(dated - acked)
        # previous_s is the real time between the changes, across the step too (never the step).
        for row, before, after in zip(stored[1:], published, published[1:], strict=False):
            assert after[1] - before[2] - 2.0 < row["previous_s"] < after[2] - before[1] + 2.0, (machine, row)

        short = 0
        until = 0.0
        for r in (r for r in rollups if r["machine"] == machine):  # in time order: none overlaps the next
            assert r["time"] / 1e9 >= until - EXACT, (machine, r)
            until = r["time"] / 1e9 + sum(r[f"{s}_s"] for s in ("busy", "idle", "setup", "down", "offline"))
            total = sum(r[f"{s}_s"] for s in ("busy", "idle", "setup", "down", "offline"))
            start = r["time"]
            aligned = start % (INTERVAL_S * 10**9) == 0
            expected = INTERVAL_S if aligned else (INTERVAL_S * 10**9 - start % (INTERVAL_S * 10**9)) / 1e9
            assert total <= expected + EXACT, (machine, r, expected)
            if total < expected - EXACT:
                # the interval the step closed early (its time is all it holds); after a step back
                # it is on the corrected clock, where it may start off a boundary
                short += 1
        assert short <= 1
    # Within 1 s of their publication, but for the collector's scheduling on a loaded machine: the
    # median change within 1 s, none 2.5 s late (a clock that labels wrongly shifts them all, by
    # the step or at least the step threshold).
    if vm is not None:  # victoria-metrics holds the same history, in order, on the corrected clock
        codes = {"busy": 1, "idle": 2}
        want = {m: [codes[s] for s, _, _ in publishers.changes[m]] + [0] for m in MACHINES}

        def in_vm() -> dict[str, list[tuple[int, int]]]:
            # Distinct samples: the stop's drain runs beside the sender loop and may send the last
            # batch twice; InfluxDB overwrites a point, VictoriaMetrics keeps both.
            return {s["metric"]["machine"]: sorted(set(zip(s["timestamps"], map(int, s["values"]), strict=True)))
                    for s in vm.export('{__name__="machine_state_state_code"}')}

        # VictoriaMetrics shows a sample a moment after it acknowledged it (its own delay)
        wait_for(lambda: all(len(in_vm().get(m, [])) >= len(want[m]) for m in MACHINES), 30, "the stop in VM")
        for machine, samples in in_vm().items():
            assert [v for _, v in samples] == want[machine], (machine, samples)
            assert all(abs(ts / 1e3 - case.after_s - step_real) < 60 for ts, _ in samples), samples
    for lags in (lags_new, *([] if back else [lags_old])):
        assert lags and statistics.median(lags) < 1.0 and max(lags) < 2.5, lags
    print(f"{case.name}: changes dated after the broker acknowledged them: median "
          f"{statistics.median(lags_new) * 1000:.0f} ms, at most {max(lags_old + lags_new) * 1000:.0f} ms"
          + "".join(f"; {name}: {n} point(s) rewritten in {took} s" for name, n, took in rewrote))
