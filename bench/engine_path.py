"""The engine's hot path without I/O, for comparing two commits on a loaded machine where the
end-to-end benchmarks vary more than the change under test.

    python bench/engine_path.py [machines 10000] [events 200000]

The live plant's config (bench/live.py: one MQTT source, payload timestamps, so every tracker is
on its own time line); ``--events`` readings through ``Engine._process_all`` (the trackers, the
time bounds, the dirty set), then ``Engine._tick`` over every tracker; best of five each.
Last line: {"process_us_per_event", "tick_ms", "machines"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import config_text  # noqa: E402
from collector.configfile import load_config_text  # noqa: E402
from collector.core.model import Reading  # noqa: E402
from collector.engine import Engine  # noqa: E402
from collector.sinks import NullSink  # noqa: E402


async def measure(machines: int, events: int) -> dict[str, float]:
    loaded = load_config_text(config_text(mqtt_port=1883, influx_url="http://127.0.0.1:1", machines=machines,
                                          data_dir=Path("/tmp/engine-path"), database="x"), "bench.yaml")
    engine = Engine(loaded, NullSink())
    ids = list(engine.trackers)
    start = time.time_ns() - 10**9
    readings = [Reading(ids[i % machines], "execution", "ACTIVE" if (i // machines) % 2 else "READY", start + i)
                for i in range(events)]
    best_process = best_tick = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        engine._process_all(readings)
        best_process = min(best_process, time.perf_counter() - t)
        engine._enqueue([])  # the commit's snapshot of the changed trackers (NullSink stores nothing)
        for _ in range(5):
            engine._next_due = 0  # every tracker due: the full walk
            t = time.perf_counter()
            engine._tick()
            best_tick = min(best_tick, time.perf_counter() - t)
    return {"process_us_per_event": round(best_process / events * 1e6, 3), "tick_ms": round(best_tick * 1e3, 2),
            "machines": machines}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps(asyncio.run(measure(n, int(sys.argv[2]) if len(sys.argv) > 2 else 200_000))))
