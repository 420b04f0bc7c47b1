"""Outbox throughput: append and drain a backlog of 1,000,000 points to a local influxd, and
the drain as a ratio to influxd's own ingest of the same batches.

    python bench/outbox.py [--points 1000000] [--chunk 1000] [--batch 10000] [--repeat 3]

Starts its own influxd (Debian's, v1 API) on a free port in a temp dir. Appends the backlog in
chunks (as the engine does, one transaction each), measures on-disk bytes per point. Then, in
turns (``--repeat`` each; this shared machine's speed drifts, the ratio of medians does not):
- influxd's own ingest: a plain client (httpx, ``POST /write``) sends the same points in
  batches of ``--batch`` lines, as many requests in flight as the sender keeps
  (``IN_FLIGHT``), into a fresh database; timed until the last response;
- the drain: a copy of the appended outbox, the sender started on it, timed until the outbox
  is empty, into a fresh database;
each checks the count in influxd. Last line: {"append_points_per_s", "drain_points_per_s",
"influxd_points_per_s", "drain_ratio_to_influxd", "bytes_per_point"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from statistics import median

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.core.lineprotocol import to_line
from collector.core.model import MachineInfo, State, StateChange
from collector.influx.config import InfluxSettings, OutboxSettings
from collector.influx.outbox import OutboxStore
from collector.influx.sink import IN_FLIGHT, OutboxSink
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


def count(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": "SELECT count(state_code) FROM machine_state"})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=60) as r:
        body = json.load(r)
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def plain(url: str, db: str, bodies: list[bytes]) -> float:
    """influxd's own ingest: POST /write of ready bodies, IN_FLIGHT requests at once."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        (await client.post("/query", params={"q": f"CREATE DATABASE {db}"})).raise_for_status()
        queue = list(reversed(bodies))

        async def worker() -> None:
            while queue:
                body = queue.pop()
                r = await client.post("/write", params={"db": db, "precision": "ns"}, content=body,
                                      headers={"Content-Type": "text/plain; charset=utf-8"})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - start


async def drain(url: str, db: str, path: Path, batch: int, total: int) -> float:
    influx = InfluxSettings(url=url, api="v1", database=db, create_database=True)
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
    parser.add_argument("--repeat", type=int, default=3, help="turns of the plain client and of the drain each")
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
        every = [line for chunk in chunks for line in chunk]
        bodies = ["\n".join(every[i:i + args.batch]).encode() for i in range(0, len(every), args.batch)]
        del every
        server = start_influxd(root / "influxd")
        drains: list[float] = []
        plains: list[float] = []
        try:
            for turn in range(args.repeat):
                db = f"plain_{turn}"
                plains.append(args.points / asyncio.run(plain(server.url, db, bodies)))
                assert count(server.url, db) == args.points, "influxd did not store every point"
                print(f"influxd's own ingest (httpx POST /write, {args.batch} per request, {IN_FLIGHT} in flight): "
                      f"{plains[-1]:,.0f} points/s", flush=True)
                db = f"drain_{turn}"
                copy = root / f"drain-{turn}.sqlite"
                shutil.copyfile(path, copy)
                drains.append(args.points / asyncio.run(drain(server.url, db, copy, args.batch, args.points)))
                stored = count(server.url, db)
                assert stored == args.points, f"influxd holds {stored:,} of {args.points:,} points"
                copy.unlink()
                print(f"drain: {args.points:,} points = {drains[-1]:,.0f} points/s to influxd 1.6 "
                      f"(v1 /write, {args.batch} per request); influxd holds {stored:,}", flush=True)
        finally:
            server.stop()
        drain_rate, plain_rate = median(drains), median(plains)
        print(json.dumps({"append_points_per_s": round(args.points / append_s),
                          "drain_points_per_s": round(drain_rate), "influxd_points_per_s": round(plain_rate),
                          "drain_ratio_to_influxd": round(drain_rate / plain_rate, 3),
                          "bytes_per_point": round(size / args.points, 1)}))


if __name__ == "__main__":
    main()
