"""What the capacity feed costs a gateway: feeding the hour-of-week profile from the roll-ups
(SQLite on disk, one transaction per batch as the engine emits them), and building every public
machine's record (forecast included) as the API, page and MQTT feed do.

    python bench/capacity.py [--machines 200] [--weeks 1]

Last line: one JSON object {"rollups_per_s": …, "records_ms": … (forecasts built), "records_cached_ms": …
(forecasts kept for the hour, as the service does), "record_bytes": …, "db_bytes": …}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.base import BoundMachine
from collector.capacity.forecast import forecast
from collector.capacity.profile import ProfileStore
from collector.capacity.records import record
from collector.capacity_settings import CapacitySettings
from collector.core.model import NS_PER_S, Interval, MachineInfo, State
from collector.machines import ResolvedMachine
from collector.rules import RuleSet, compile_rule
from collector.tracker import TrackerStatus

MINUTE = 60 * NS_PER_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--weeks", type=int, default=1, help="history fed before timing the records")
    args = parser.parse_args()
    settings = CapacitySettings(timezone="Europe/Berlin")
    infos = [MachineInfo(f"m{i}", "p", kind="lathe", public=True) for i in range(args.machines)]
    with tempfile.TemporaryDirectory() as tmp:
        store = ProfileStore(Path(tmp) / "capacity.sqlite", ZoneInfo(settings.timezone), settings.decay)
        start = (time.time_ns() // MINUTE - args.weeks * 7 * 24 * 60) * MINUTE
        minutes = args.weeks * 7 * 24 * 60
        t0 = time.perf_counter()
        for minute in range(minutes):  # one engine tick's batch: every machine's 60 s roll-up
            ts = start + minute * MINUTE
            state = State.IDLE if (minute // 60) % 24 < 6 else State.BUSY
            seconds = dict.fromkeys(State, 0)
            seconds[state] = MINUTE
            store.add([Interval(info, ts, ts + MINUTE, seconds, state) for info in infos])
        feed_s = time.perf_counter() - t0
        rules = RuleSet([compile_rule(State.IDLE, None)])
        machines = [ResolvedMachine("s", "p", BoundMachine(info, {}), rules, 0, None,
                                    {"process": "turning", "max_diameter_mm": 300}) for info in infos]
        now = time.time_ns()
        statuses = [TrackerStatus(info, State.IDLE, now - 600 * NS_PER_S, "") for info in infos]
        timings, body = [], b""
        for _ in range(5):
            t1 = time.perf_counter()
            recs = [record(m, st, store, settings, now) for m, st in zip(machines, statuses, strict=True)]
            timings.append(time.perf_counter() - t1)
            body = json.dumps(recs, separators=(",", ":")).encode()
        forecasts = [forecast(store.profile(info.id), dt.datetime.fromtimestamp(now / NS_PER_S, store.zone),
                              settings.threshold) for info in infos]
        cached = []
        for _ in range(5):  # as the service answers: forecasts kept for the hour
            t1 = time.perf_counter()
            for m, st, fc in zip(machines, statuses, forecasts, strict=True):
                record(m, st, store, settings, now, fc)
            cached.append(time.perf_counter() - t1)
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("capacity.sqlite*"))
        store.close()
    result = {"machines": args.machines, "rollups": minutes * args.machines,
              "rollups_per_s": round(minutes * args.machines / feed_s),
              "records_ms": round(statistics.median(timings) * 1000, 1),
              "records_cached_ms": round(statistics.median(cached) * 1000, 1),
              "record_bytes": len(body) // args.machines, "db_bytes": db_bytes}
    print(f"fed {result['rollups']} roll-ups in {feed_s:.1f}s; {args.machines} records in "
          f"{result['records_ms']} ms (median of 5; {result['records_cached_ms']} ms with forecasts kept), "
          f"{result['record_bytes']} bytes each; database {db_bytes} bytes")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
