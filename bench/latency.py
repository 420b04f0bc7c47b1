"""Latency to queryable: how long after a live state change its point can be read from InfluxDB.

    python bench/latency.py [--machines 1000] [--period 3] [--seconds 60] [--flush-interval 1.0]

A live plant, not a backlog (bench/live.py): ``--machines`` machines each change state every
``--period`` seconds (random phases, one QoS 1 JSON message per change with its source
timestamp) into mosquitto; the real ``collector run`` (MQTT source, payload timestamps, the
outbox with ``--flush-interval``) writes them to influxd 1.6. This process polls influxd with
InfluxQL every ``--poll`` seconds for the points from the oldest change not yet seen on; a
change's latency is the wall-clock time when the poll that first returned its point came back,
minus its source timestamp (an upper bound: the point may have landed up to one poll earlier).
The machines' first states (one burst at the start) are not counted. Points the collector
stored later than their source timestamp (a tracker moves a change that arrives after the time
it already rolled up to forward to that time) are matched all the same and counted (``moved``).

Target: p99 <= flush interval + 250 ms. Last line: {"changes", "p50_ms", "p99_ms", "max_ms",
"flush_interval_s", "target_p99_ms", "poll_s", "moved", "moved_max_ms"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import collector, config_text, publisher, services  # noqa: E402
from tests.fixtures._ports import free_port  # noqa: E402


def query(url: str, db: str, q: str) -> list[dict[str, object]]:
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as r:
        series: list[dict[str, object]] = json.load(r)["results"][0].get("series", [])
    return series


def wait_ready(http_port: int, timeout: float = 120) -> None:
    """Until the collector's /readyz says every source is connected (subscribed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the collector did not become ready")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--period", type=float, default=3.0, help="seconds between two changes of one machine")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the plant publishes")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="the outbox's (its default: 1 s)")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between two InfluxQL polls")
    args = parser.parse_args()
    db = "latency"
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, services(Path(tmp)) as (mqtt_port, url):
        http_port = free_port()
        config = config_text(mqtt_port=mqtt_port, influx_url=url, machines=args.machines, data_dir=Path(tmp) / "data",
                             database=db, flush_interval=args.flush_interval, http_port=http_port)
        with collector(config, Path(tmp)) as proc:
            wait_ready(http_port)
            with publisher(mqtt_port, args.machines, args.period, args.seconds) as pub:
                # Per machine, its changes not seen yet (ts ns, oldest first). A point is matched to
                # the oldest unseen change of its machine at or before the point's time, less than
                # half a period before it: a tracker may move a change forward to the time it
                # already rolled up to (counted as `moved`), never backward.
                unseen: dict[str, list[int]] = {}
                taken = moved = 0
                shift_max = 0
                window = int(args.period * 1e9 / 2)
                deadline = time.time() + args.seconds + 60
                while time.time() < deadline:
                    time.sleep(args.poll)
                    changes = pub.snapshot()
                    for machine, ts_ms in changes[taken:]:
                        if taken >= args.machines:  # the first states are not counted
                            unseen.setdefault(machine, []).append(ts_ms * 1_000_000)
                        taken += 1
                    pending = [ts for tss in unseen.values() for ts in tss]
                    if not pending:
                        if pub.proc.poll() is not None and taken > args.machines:
                            break
                        continue
                    series = query(url, db, f"SELECT state_code FROM machine_state WHERE time >= {min(pending)} "
                                            "GROUP BY machine")
                    now = time.time()
                    for s in series:
                        tss = unseen.get(s["tags"]["machine"])  # type: ignore[index]
                        for t, _ in s["values"]:  # type: ignore[attr-defined]
                            if tss and tss[0] <= t < tss[0] + window:
                                ts = tss.pop(0)
                                latencies.append(now - ts / 1e9)
                                if t != ts:
                                    moved += 1
                                    shift_max = max(shift_max, t - ts)
                    if proc.poll() is not None:
                        raise SystemExit(f"the collector exited: {(Path(tmp) / 'collector.log').read_text()[-2000:]}")
                unseen = {m: tss for m, tss in unseen.items() if tss}
                if unseen:
                    raise SystemExit(f"changes never became queryable: {list(unseen.items())[:5]}")
    latencies.sort()
    p50, p99, worst = (percentile(latencies, 50), percentile(latencies, 99), latencies[-1])
    target = args.flush_interval + 0.25
    print(f"{len(latencies)} live state changes of {args.machines} machines (one every {args.period:g}s each): "
          f"source timestamp -> queryable in influxd p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms (flush interval {args.flush_interval:g}s, target p99 <= {target * 1000:.0f} ms); "
          f"{moved} point(s) stored later than their source timestamp (by up to {shift_max / 1e6:.1f} ms)")
    print(json.dumps({"changes": len(latencies), "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1),
                      "max_ms": round(worst * 1000, 1), "flush_interval_s": args.flush_interval,
                      "target_p99_ms": round(target * 1000), "poll_s": args.poll, "moved": moved,
                      "moved_max_ms": round(shift_max / 1e6, 1)}))


if __name__ == "__main__":
    main()
