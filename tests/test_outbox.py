"""The outbox and the InfluxDB writers against real servers: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import signal
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from collector.configfile import load_config
from collector.core.lineprotocol import to_line
from collector.core.model import MachineInfo, State, StateChange
from collector.engine import Engine
from collector.influx.config import InfluxSettings, OutboxSettings
from collector.influx.outbox import OutboxStore
from collector.influx.sink import OutboxSink
from collector.influx.writers import WriteError, classify, with_precision
from collector.metrics import metrics_text
from tests.fixtures._ports import free_port, until, wait_for
from tests.fixtures._proc import COLLECTOR, ROOT, collector_env
from tests.fixtures.influxdb import InfluxD, VictoriaMetrics
from tests.fixtures.recorder import Recorder

S = 1_000_000_000
T0 = 1_750_000_000 * S
STATES = [State.BUSY, State.IDLE, State.DOWN, State.SETUP]


def changes(n: int, machines: int = 4, start: int = 0) -> list[str]:
    """``n`` state changes over ``machines`` machines, 1 ms apart, with exact float durations."""
    out = []
    for i in range(start, start + n):
        m = MachineInfo(id=f"m{i % machines}", plant="p", line="l")
        out.append(to_line(StateChange(m, T0 + i * 1_000_000, STATES[i % 4], STATES[(i + 1) % 4],
                                       (i * 7919) % 100_000 * 1_000_000 + 1, f"rule {i}")))
    return out


def outbox(tmp_path: Path, **kw: object) -> OutboxSettings:
    return OutboxSettings.model_validate({"path": tmp_path / "outbox.sqlite", "flush_interval": 0.05,
                                          "retry_initial": 0.05, "retry_max": 0.3, **kw})


def v1(influxd: InfluxD | None, db: str = "avail", **kw: object) -> InfluxSettings:
    url = influxd.url if influxd else f"http://127.0.0.1:{free_port()}"
    return InfluxSettings.model_validate({"url": url, "api": "v1", "database": db, "create_database": True, **kw})


# -- one suite over both APIs ----------------------------------------------------------------

@dataclass
class Target:
    """A real server behind one writer API, and how to read back what it stored."""

    api: str
    settings: InfluxSettings
    influxd: InfluxD | None = None
    vm: VictoriaMetrics | None = None

    def previous_s(self) -> dict[tuple[str, int], float]:
        """(machine, ts ns) -> previous_s, as stored."""
        if self.influxd is not None:
            rows = self.influxd.rows("SELECT previous_s, machine FROM machine_state", db="avail")
            return {(r["machine"], r["time"]): r["previous_s"] for r in rows}
        assert self.vm is not None
        out = {}
        for series in self.vm.export('{__name__="machine_state_previous_s"}'):
            for value, ts in zip(series["values"], series["timestamps"], strict=True):
                out[(series["metric"]["machine"], ts * 1_000_000)] = value
        return out


@pytest.fixture(params=["v1", "v2"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "v1":
        server: InfluxD = request.getfixturevalue("influxd")
        yield Target("v1", v1(server), influxd=server)
    else:
        vm: VictoriaMetrics = request.getfixturevalue("victoria_metrics")
        # VM keeps millisecond timestamps: write at ms precision so values compare exactly
        yield Target("v2", InfluxSettings(url=vm.url, api="v2", org="acme", bucket="avail",
                                          token=SecretStr("t0k3n"), precision="ms"), vm=vm)


def expected(lines: list[str], precision_ns: int) -> dict[tuple[str, int], float]:
    out = {}
    for line in lines:
        machine = line.split("machine=")[1].split(",")[0]
        ts = int(line.rsplit(" ", 1)[1]) // precision_ns * precision_ns
        out[(machine, ts)] = float(line.split("previous_s=")[1].split(",")[0])
    return out


async def test_points_are_written_exactly(target: Target, tmp_path: Path) -> None:
    """Test that points appended to the outbox reach the server with exact values, and the outbox empties."""
    lines = changes(2_000)
    sink = OutboxSink(target.settings, outbox(tmp_path, batch_size=500))
    async with sink:
        for i in range(0, len(lines), 100):
            await sink.write(lines[i:i + 100])
        await until(lambda: sink.stats()["depth_points"] == 0, what="outbox drained")
    assert sink.counters["written"] == 2_000 and sink.counters["dead_lettered"] == 0
    precision = 1_000_000 if target.api == "v2" else 1
    assert target.previous_s() == expected(lines, precision)
    # every write is in the duration histogram /metrics serves
    scrape = metrics_text(Engine(load_config(ROOT / "config" / "example.yaml"), sink)).decode()
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    histogram = families["collector_outbox_write_duration_seconds"]
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert histogram.type == "histogram" and samples["collector_outbox_write_duration_seconds_count", None] == \
        samples["collector_outbox_write_duration_seconds_bucket", "+Inf"] == sink.counters["requests"] >= 4
    assert 0 < samples["collector_outbox_write_duration_seconds_sum", None] < 10 * sink.counters["requests"]


async def test_v2_request_carries_token_org_bucket_gzip_precision(
        victoria_metrics: VictoriaMetrics, recording_proxy: Recorder, tmp_path: Path) -> None:
    """Test that the v2 writer sends Authorization: Token, org, bucket, precision and a gzip body that VM accepts."""
    recording_proxy.target = victoria_metrics.url
    settings = InfluxSettings(url=recording_proxy.url, api="v2", org="acme", bucket="avail",
                              token=SecretStr("t0k3n"), gzip=True, precision="s")
    lines = changes(10)
    async with OutboxSink(settings, outbox(tmp_path)) as sink:
        await sink.write(lines)
        await until(lambda: sink.stats()["depth_points"] == 0, what="outbox drained")
    writes = [r for r in recording_proxy.requests if r.path.startswith("/api/v2/write")]
    assert writes, recording_proxy.requests
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(writes[0].path).query)
    assert query == {"org": ["acme"], "bucket": ["avail"], "precision": ["s"]}
    headers = {k.lower(): v for k, v in writes[0].headers.items()}
    assert headers["authorization"] == "Token t0k3n" and headers["content-encoding"] == "gzip"
    assert gzip.decompress(writes[0].body) == with_precision("\n".join(lines).encode(), "s")
    stored = victoria_metrics.export('{__name__="machine_state_state_code"}')
    assert {ts // 1000 for s in stored for ts in s["timestamps"]} == {T0 // S}


# -- reliability against a real influxd ------------------------------------------------------

async def test_outage_mid_stream_loses_nothing_and_duplicates_nothing(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that stopping influxd mid-stream and starting it again delivers every point exactly once in effect."""
    lines = changes(6_000, machines=6)
    sink = OutboxSink(v1(influxd), outbox(tmp_path, batch_size=400))
    async with sink:
        for i in range(0, 2_000, 50):
            await sink.write(lines[i:i + 50])
        influxd.stop()
        for i in range(2_000, 4_000, 50):
            await sink.write(lines[i:i + 50])
            await asyncio.sleep(0.001)
        await until(lambda: sink.counters["retries"] > 0, what="a failed write while influxd is down")
        assert sink.stats()["link_up"] == 0 and sink.stats()["depth_points"] > 0
        await asyncio.to_thread(influxd.start)
        for i in range(4_000, 6_000, 50):
            await sink.write(lines[i:i + 50])
        await until(lambda: sink.stats()["depth_points"] == 0, 60, "outbox drained after the outage")
    stored = influxd.rows("SELECT previous_s, machine FROM machine_state", db="avail")
    assert len(stored) == 6_000
    assert {(r["machine"], r["time"]): r["previous_s"] for r in stored} == expected(lines, 1)


async def test_poison_point_is_dead_lettered_while_neighbours_land(influxd: InfluxD, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Test that a field-type conflict dead-letters that point only, logged once, and the rest lands."""
    good = changes(300)
    poison = good[150].replace('state="', "state=7i,x=\"")  # `state` as an integer: a type conflict
    batch = [*good[:150], poison, *good[150:]]
    caplog.set_level(logging.ERROR)
    sink = OutboxSink(v1(influxd), outbox(tmp_path, batch_size=1_000))
    async with sink:
        await sink.write(good[:1])  # the field's type is fixed as string by the first write
        await until(lambda: sink.stats()["depth_points"] == 0)
        await sink.write(batch)
        await until(lambda: sink.stats()["depth_points"] == 0, what="batch delivered")
        assert sink.store is not None
        dead = sink.store.dead_lines()
    assert [line for line, _ in dead] == [poison]
    assert "field type conflict" in dead[0][1]
    assert sink.counters["dead_lettered"] == 1
    assert sum("dead-letter" in r.message for r in caplog.records) == 1
    assert len(influxd.rows("SELECT previous_s FROM machine_state", db="avail")) == 300


async def test_size_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    """Test that with InfluxDB away, a tiny max_mb keeps the newest points and counts the dropped ones."""
    sink = OutboxSink(v1(None), outbox(tmp_path, max_mb=0.02))
    lines = changes(3_000)
    async with sink:
        for i in range(0, 3_000, 100):
            await sink.write(lines[i:i + 100])
        stats = sink.stats()
        assert sink.store is not None
        kept = [line for c in sink.store.peek(10_000) for line in c.lines]
    assert stats["dropped_total"] > 0 and stats["depth_bytes"] <= 0.02 * 1024 * 1024
    assert stats["dropped_total"] + len(kept) == 3_000
    assert kept == lines[-len(kept):]  # the oldest went, the newest stayed, in order


async def test_missing_database_is_reported_and_points_wait(influxd: InfluxD, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Test that a missing database is logged clearly at start-up and the points wait in the outbox."""
    caplog.set_level(logging.INFO)
    sink = OutboxSink(v1(influxd, db="nope", create_database=False), outbox(tmp_path))
    async with sink:
        await sink.write(changes(5))
        await until(lambda: sink.counters["retries"] > 0, what="a refused write")
        assert sink.stats()["depth_points"] == 5
    assert any("database 'nope' does not exist" in r.message for r in caplog.records)


def test_errors_are_classified_by_cause() -> None:
    """Test that status codes map to retry, throttle (with Retry-After), config and data."""
    assert classify(503, "", None).kind == "retry"
    throttled = classify(429, '{"message": "slow down"}', "7")
    assert (throttled.kind, throttled.retry_after, str(throttled)) == ("throttle", 7.0, "throttled (429): slow down")
    assert classify(401, '{"error": "unauthorized"}', None).kind == "config"
    assert classify(404, '{"error": "database not found"}', None).kind == "config"
    assert classify(400, '{"error": "partial write: field type conflict"}', None).kind == "data"
    assert isinstance(classify(500, "boom", None), WriteError)


def test_store_survives_reopen_and_counts(tmp_path: Path) -> None:
    """Test that appended chunks are on disk after a reopen, oldest first, with their counts."""
    store = OutboxStore(tmp_path / "o.sqlite")
    store.append(["a 1", "b 2"])
    store.append(["c 3"])
    store.close()
    again = OutboxStore(tmp_path / "o.sqlite")
    assert (again.points, [c.lines for c in again.peek(10)]) == (3, [["a 1", "b 2"], ["c 3"]])
    again.advance("influx", again.peek(1)[0].id)
    assert again.points == 1 and again.bytes > 0


def test_kill_9_then_restart_drains_the_backlog(influxd: InfluxD, tmp_path: Path) -> None:
    """Test that a collector killed with SIGKILL while InfluxDB is down loses nothing it had stored."""
    influxd.stop()
    config = tmp_path / "plant.yaml"
    config.write_text((ROOT / "config" / "example.yaml").read_text().replace(
        "url: ${INFLUX_URL:-http://localhost:8086}", f"url: {influxd.url}\n  create_database: true"))
    env = collector_env(COLLECTOR_HTTP__PORT="0", COLLECTOR_TRACKER__INTERVAL="1s",
                        COLLECTOR_OUTBOX__FLUSH_INTERVAL="0.1", COLLECTOR_OUTBOX__RETRY_MAX="0.5")
    db = tmp_path / "data" / "outbox.sqlite"

    def stored_points() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT COALESCE(SUM(points), 0) FROM outbox").fetchone()[0])

    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: db.exists() and stored_points() >= 24, 30, "a backlog in the outbox")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with sqlite3.connect(db) as conn:
        import zlib
        backlog = [line for (payload,) in conn.execute("SELECT payload FROM outbox ORDER BY id")
                   for line in zlib.decompress(payload).decode().split("\n")]
    assert len(backlog) >= 24
    influxd.start()
    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def delivered() -> bool:
            have = {(r["machine"], r["time"]) for r in influxd.rows(
                "SELECT state_code, machine FROM machine_state", db="availability")}
            want = {(ln.split("machine=")[1].split(",")[0], int(ln.rsplit(" ", 1)[1]))
                    for ln in backlog if ln.startswith("machine_state,")}
            return want <= have
        wait_for(delivered, 30, "the backlog in influxd")
        rolls = influxd.rows("SELECT count(busy_s) FROM machine_availability", db="availability")
        # no row at all when the backlog held no roll-up and none is written yet
        assert (rolls[0]["count"] if rolls else 0) >= sum(ln.startswith("machine_availability,") for ln in backlog)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_an_outbox_file_of_release_0_1_is_migrated_and_keeps_its_points(tmp_path: Path) -> None:
    """Test that a file written by release 0.1 (no schema version, no tracker state;
    tests/data/outbox-0.1.sqlite, written by that release's OutboxStore) opens: it is migrated to
    the current schema, its undelivered points and dead letters are all still there, and the
    trackers' checkpoint can be committed into it."""
    from collector.influx.outbox import SCHEMA_VERSION

    path = tmp_path / "outbox.sqlite"
    path.write_bytes((ROOT / "tests" / "data" / "outbox-0.1.sqlite").read_bytes())
    store = OutboxStore(path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.points == 3 and store.dead == {"influx": 1}
        lines = [line for chunk in store.peek(100) for line in chunk.lines]
        assert lines[0].startswith("machine_state,machine=cnc-07") and lines[2].startswith("machine_availability")
        store.append(["m v=1i 1"], {"cnc-07": b'{"state": "idle"}'})
        assert store.load_state()["cnc-07"][0] == b'{"state": "idle"}'
    finally:
        store.close()


def test_an_outbox_file_of_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Test that a file with a newer schema version stops start-up with a clear error and is not touched."""
    from collector.influx.outbox import SchemaError

    path = tmp_path / "outbox.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=r"schema version 99.*written by a newer collector"):
        OutboxStore(path)
    assert path.read_bytes() == before


class GatedWriter:
    """A server whose first write hangs until released: a delivery in flight when the stop comes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, body: bytes) -> None:
        self.entered.set()
        await self.release.wait()
        self.bodies.append(body)

    async def check(self) -> str:
        return "gated"

    async def close(self) -> None:
        return None


async def test_the_stop_drain_waits_for_a_delivery_in_flight_and_sends_nothing_twice(tmp_path: Path) -> None:
    """Test that a stop while the sender loop has a batch in flight delivers every line exactly
    once: the stop's drain and the loop share the output's cursor, one delivery at a time."""
    writer = GatedWriter()
    lines = changes(40)
    sink = OutboxSink(v1(None), outbox(tmp_path, batch_size=10), writer=writer)
    await sink.__aenter__()
    await sink.write(lines)
    await asyncio.wait_for(writer.entered.wait(), 10)
    stopping = asyncio.create_task(sink.__aexit__(None, None, None))
    await asyncio.sleep(0)  # the drain starts while the loop's write is still in flight
    writer.release.set()
    await asyncio.wait_for(stopping, 10)
    sent = [line for body in writer.bodies for line in body.decode().split("\n")]
    assert sorted(sent) == sorted(lines), f"{len(sent)} lines sent for {len(lines)}"


async def test_an_unexpected_error_in_the_start_up_check_does_not_stop_the_output(tmp_path: Path) -> None:
    """Test that a check failing with something other than a WriteError (influxdb-client refusing
    a server's bucket list, say) is logged and the output still delivers."""

    class OddServer(GatedWriter):
        async def check(self) -> str:
            raise ValueError("Invalid value for `retention_rules`, must not be `None`")

    writer = OddServer()
    writer.release.set()
    lines = changes(5)
    async with OutboxSink(v1(None), outbox(tmp_path), writer=writer) as sink:
        await sink.write(lines)
        await until(lambda: sink.stats()["depth_points"] == 0, what="the outbox drained")
    assert sorted(line for b in writer.bodies for line in b.decode().split("\n")) == sorted(lines)
