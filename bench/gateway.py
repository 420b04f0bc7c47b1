"""The cost on a gateway: CPU and memory of the real ``collector run`` for a realistic plant.

    python bench/gateway.py [--machines 1000] [--period 60] [--seconds 300]
                            [--rss-machines 10000] [--rss-seconds 120]

A live plant (bench/live.py): ``--machines`` machines, each changing state once per
``--period`` seconds (random phases; one QoS 1 JSON message per change), into mosquitto; the
real ``collector run`` (MQTT source, payload timestamps, outbox and sender with their defaults,
the HTTP status server on) writes to influxd 1.6. After the start-up burst (every machine's
first state) and ``--warmup`` seconds, psutil measures the collector process over ``--seconds``:
CPU time / wall time (100 % = one core) and its RSS (sampled every second: the largest, and at
the end). Then the same for ``--rss-machines`` machines over ``--rss-seconds`` (how RSS grows
with the plant). Publisher, broker and influxd run in other processes and are not counted.

Target: <= 2 % of one core at 1,000 machines x one change a minute; RSS <= 100 MB.
Last line: {"cpu_percent", "rss_mb", "peak_rss_mb", "changes_per_s", "machines", "seconds",
"rss_mb_<N>", "peak_rss_mb_<N>", "cpu_percent_<N>"} (N = --rss-machines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.latency import wait_ready  # noqa: E402
from bench.live import collector, config_text, publisher, services  # noqa: E402
from tests.fixtures._ports import free_port  # noqa: E402


def measure(machines: int, period: float, seconds: float, warmup: float) -> dict[str, float]:
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, services(Path(tmp)) as (mqtt_port, url):
        http_port = free_port()
        config = config_text(mqtt_port=mqtt_port, influx_url=url, machines=machines, data_dir=Path(tmp) / "data",
                             database="gateway", http_port=http_port)
        with collector(config, Path(tmp)) as proc:
            wait_ready(http_port)
            with publisher(mqtt_port, machines, period, warmup + seconds + 5) as pub:
                until = time.monotonic() + 60
                while len(pub.snapshot()) < machines and time.monotonic() < until:
                    time.sleep(0.1)
                time.sleep(warmup)
                p = psutil.Process(proc.pid)
                spy = _pyspy(proc.pid, seconds)
                cpu0, wall0, n0 = p.cpu_times(), time.monotonic(), len(pub.snapshot())
                peak = 0.0
                while time.monotonic() - wall0 < seconds:
                    time.sleep(1)
                    peak = max(peak, p.memory_info().rss)
                    if proc.poll() is not None:
                        raise SystemExit(f"the collector exited: {(Path(tmp) / 'collector.log').read_text()[-2000:]}")
                cpu1, wall1, n1 = p.cpu_times(), time.monotonic(), len(pub.snapshot())
                rss = p.memory_info().rss
                if spy is not None:
                    spy.wait(timeout=60)
    wall = wall1 - wall0
    user, system = (cpu1.user - cpu0.user) / wall * 100, (cpu1.system - cpu0.system) / wall * 100
    return {"cpu_percent": round(user + system, 2), "cpu_user_percent": round(user, 2),
            "cpu_system_percent": round(system, 2), "rss_mb": round(rss / 2**20, 1),
            "peak_rss_mb": round(peak / 2**20, 1),
            "changes_per_s": round((n1 - n0) / (wall1 - wall0), 1)}


def _pyspy(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """``BENCH_PYSPY=prefix``: py-spy raw stacks of the measured collector in ``prefix.<pid>.txt``
    (read with bench/profile_summary.py; needs ``pip install py-spy``). Adds py-spy's own sampling to the
    figures, so profile and measure in separate runs."""
    prefix = os.environ.get("BENCH_PYSPY")
    if not prefix:
        return None
    # --gil: only samples holding the GIL (Python's own work), not threads waiting in epoll or a queue
    return subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "1000", "--gil",
                             "--duration", str(int(seconds)), "--pid", str(pid), "-o", f"{prefix}.{pid}.txt"],
                            stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--period", type=float, default=60.0, help="seconds between two changes of one machine")
    parser.add_argument("--seconds", type=float, default=300.0, help="measured time at --machines")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the start-up burst, not measured")
    parser.add_argument("--rss-machines", type=int, default=10_000, help="the larger plant (0: skip)")
    parser.add_argument("--rss-seconds", type=float, default=120.0, help="measured time at --rss-machines")
    args = parser.parse_args()
    small = measure(args.machines, args.period, args.seconds, args.warmup)
    print(f"{args.machines} machines, one change each per {args.period:g}s ({small['changes_per_s']:g}/s), "
          f"{args.seconds:g}s: collector CPU {small['cpu_percent']:g}% of one core, RSS {small['rss_mb']:g} MB "
          f"(peak {small['peak_rss_mb']:g} MB)", flush=True)
    out: dict[str, float] = {**small, "machines": args.machines, "seconds": args.seconds}
    if args.rss_machines:
        big = measure(args.rss_machines, args.period, args.rss_seconds, args.warmup)
        print(f"{args.rss_machines} machines, {args.rss_seconds:g}s ({big['changes_per_s']:g}/s): collector CPU "
              f"{big['cpu_percent']:g}%, RSS {big['rss_mb']:g} MB (peak {big['peak_rss_mb']:g} MB)", flush=True)
        n = args.rss_machines
        out |= {f"rss_mb_{n}": big["rss_mb"], f"peak_rss_mb_{n}": big["peak_rss_mb"],
                f"cpu_percent_{n}": big["cpu_percent"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
