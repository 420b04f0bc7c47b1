"""Outbox throughput: append and drain a backlog of 1,000,000 points to a local influxd.

    python bench/outbox.py [--points 1000000] [--chunk 1000] [--batch 10000]

Starts its own influxd (Debian's, v1 API) on a free port in a temp dir. Appends the backlog in
chunks (as the engine does, one transaction each), measures on-disk bytes per point, then
starts the sender and times the drain until the outbox is empty; checks the count in influxd.
Last line: {"append_points_per_s": …, "drain_points_per_s": …, "bytes_per_point": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.influx.config import InfluxSettings, OutboxSettings
from collector.influx.outbox import OutboxStore
from collector.influx.sink import OutboxSink
from collector.lineprotocol import to_line
from collector.model import MachineInfo, State, StateChange
from tests.fixtures._ports import until
from tests.fixtures.influxdb import start_influxd

STATES = list(State)


def lines(n: int, start: int) -> list[str]:
    out = []
    for i in range(start, start + n):
        m = MachineInfo(id=f"cnc-{i % 500:03d}", plant="plant-1", line=f"line-{i % 7}")
        out.append(to_line(StateChange(m, 1_750_000_000_000_000_000 + i * 1000, STATES[i % 5], STATES[(i + 1) % 5],
                                       (i % 3600) * 1_000_000_007, "execution == 'ACTIVE' (execution='ACTIVE')")))
    return out


def count(url: str) -> int:
    q = urllib.parse.urlencode({"db": "bench", "q": "SELECT count(state_code) FROM machine_state"})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=60) as r:
        body = json.load(r)
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def drain(url: str, path: Path, batch: int, total: int) -> float:
    influx = InfluxSettings(url=url, api="v1", database="bench", create_database=True)
    sink = OutboxSink(influx, OutboxSettings(path=path, batch_size=batch, flush_interval=0.01))
    start = time.perf_counter()
    async with sink:
        await until(lambda: sink.stats()["depth_points"] == 0, 3600, "the outbox drained")
        elapsed = time.perf_counter() - start
    assert sink.counters["written"] == total, sink.counters
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000, help="points per append (one transaction)")
    parser.add_argument("--batch", type=int, default=10_000, help="points per write request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "outbox.sqlite"
        chunks = [lines(args.chunk, i) for i in range(0, args.points, args.chunk)]
        store = OutboxStore(path, sync="full")
        start = time.perf_counter()
        for chunk in chunks:
            store.append(chunk)
        append_s = time.perf_counter() - start
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = store.file_bytes()
        store.close()
        print(f"append: {args.points:,} points in {append_s:.2f}s = {args.points / append_s:,.0f} points/s "
              f"({args.chunk} per transaction, synchronous=FULL); on disk {size:,} bytes = "
              f"{size / args.points:.1f} bytes/point")
        server = start_influxd(root / "influxd")
        try:
            drain_s = asyncio.run(drain(server.url, path, args.batch, args.points))
            stored = count(server.url)
        finally:
            server.stop()
        print(f"drain: {args.points:,} points in {drain_s:.2f}s = {args.points / drain_s:,.0f} points/s "
              f"to influxd 1.6 (v1 /write, {args.batch} per request); influxd holds {stored:,}")
        print(json.dumps({"append_points_per_s": round(args.points / append_s),
                          "drain_points_per_s": round(args.points / drain_s),
                          "bytes_per_point": round(size / args.points, 1)}))


if __name__ == "__main__":
    main()
