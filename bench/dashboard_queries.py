"""How long each panel query of the generated boards takes on a real influxd (1.x) holding
days of history for the example plant (config/example.yaml).

    python bench/dashboard_queries.py [--days 7] [--repeat 5]

Writes one roll-up per machine per minute and a state change every ~10 minutes, then runs every
panel's queries (macros substituted as Grafana does) over the last 24 h (fleet, detail) and the
board's 7 days (capacity). Prints the median milliseconds per panel; the last line is one JSON
object {"points": …, "slowest_ms": …, "total_ms": …}.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.core.lineprotocol import encode
from collector.core.model import State
from dashboards.boards import build_boards
from dashboards.build import SOURCE_CONFIG, load
from tests.fixtures.influxdb import InfluxD, start_influxd
from tests.test_dashboards_queries import interpolate

DB = "availability"
MIN_NS = 60 * 10**9


def fill(server: InfluxD, days: int) -> int:
    config = load(SOURCE_CONFIG)
    rng = random.Random(3)
    now_min = time.time_ns() // MIN_NS
    first = now_min - days * 24 * 60
    points = 0
    for m in config.machines:
        tags = {"machine": m.id, "plant": m.plant or config.site.plant, "line": m.line}
        state, since = State.IDLE, first
        batch: list[str] = []
        for minute in range(first, now_min):
            if rng.random() < 0.1:
                new = rng.choice(list(State))
                if new is not state:
                    batch.append(encode("machine_state", tags, {
                        "state": new.value, "state_code": new.code, "previous": state.value,
                        "previous_s": float((minute - since) * 60), "reason": "bench"}, minute * MIN_NS))
                    state, since = new, minute
            fields: dict[str, object] = {f"{s.value}_s": 60.0 if s is state else 0.0 for s in State}
            fields["state"] = state.value
            batch.append(encode("machine_availability", tags, fields, minute * MIN_NS))
            if len(batch) >= 20_000:
                server.write("\n".join(batch), DB)
                points += len(batch)
                batch = []
        server.write("\n".join(batch), DB)
        points += len(batch)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-dash-"))
    server = start_influxd(root)
    try:
        server.query(f'CREATE DATABASE "{DB}"')
        t = time.perf_counter()
        points = fill(server, args.days)
        print(f"wrote {points} points in {time.perf_counter() - t:.1f} s")
        now_ms = time.time_ns() // 10**6
        variables = {"plant": ["$__all"], "line": ["$__all"], "machine": ["lathe-01"]}
        results: list[tuple[str, float]] = []
        for board in build_boards(load(SOURCE_CONFIG)):
            span_ms = (7 if board.shared else 1) * 86_400_000
            defs = {v["name"]: v for v in board.json["templating"]["list"]}
            for panel in board.json["panels"]:
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    for target in panel["targets"]:
                        server.query(interpolate(target["query"], variables, defs, start_ms=now_ms - span_ms,
                                                 end_ms=now_ms, interval="5m"), DB)
                    times.append((time.perf_counter() - t) * 1000)
                results.append((f"{board.uid} / {panel['title']}", statistics.median(times)))
        for name, ms in results:
            print(f"{ms:8.1f} ms  {name}")
        print(json.dumps({"points": points, "slowest_ms": round(max(ms for _, ms in results), 1),
                          "total_ms": round(sum(ms for _, ms in results), 1)}))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
