"""A correction record through the outbox to real servers (collector/influx/correctors.py).

Two machines stamped on arrival wrote a time line on a clock D ahead; the correction record
follows, then points on the corrected clock. Each output must end up holding exactly what it
would hold had the clock been right all along: the state changes D earlier, the roll-ups on the
right clock's intervals, a third machine (not in the record) untouched. The outputs are a real
influxd (InfluxDB 1.x: SELECT, DELETE, write) and a real victoria-metrics (export,
delete_series, import), each with the sender stopped between its delete and its rewrite (a
crash there) and a second sink on the same outbox file finishing the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.core.correction import Correction, StoredPoint
from collector.core.lineprotocol import encode
from collector.core.model import NS_PER_S, State
from collector.influx.config import OutboxSettings, OutputSettings
from collector.influx.outbox import CORRECTION
from collector.influx.sink import OutboxSink
from collector.influx.writers import V1Writer, VictoriaMetricsWriter, WriteError
from tests.fixtures._ports import until
from tests.fixtures.influxdb import InfluxD, VictoriaMetrics
from tests.test_correction import change_points, rollup_points

pytestmark = pytest.mark.integration

S = NS_PER_S
MS = 1_000_000
T0 = 1_750_000_000 * S
INTERVAL = 10 * S
AHEAD = 3600 * S + 7 * MS  # an hour and a bit: not whole intervals, so the roll-ups are rebuilt
STATES = [State.BUSY, State.IDLE, State.DOWN, State.SETUP, State.BUSY]


def segments(machine: int, start: int, count: int) -> list[tuple[int, int, State]]:
    """A time line of ``count`` states, ms-granular (VictoriaMetrics keeps ms), 3.5 s to 12 s long."""
    out, at = [], start
    for i in range(count):
        length = (3_500 + 1_700 * ((i * 7 + machine * 3) % 6)) * MS
        out.append((at, at + length, STATES[(i + machine) % 5]))
        at += length
    return out


def points(machine: str, line: list[tuple[int, int, State]], offset: int) -> list[StoredPoint]:
    out = change_points(line, offset, numeric=False) + rollup_points(line, offset, INTERVAL, numeric=False)
    for p in out:
        p.tags["machine"] = machine
        p.key = tuple(sorted(p.tags.items()))
    return out


def lines(pts: list[StoredPoint]) -> list[str]:
    return [encode(p.measurement, p.tags, p.fields, p.ts_ns) for p in pts]


class Scenario:
    """m1 and m2 on the old line (D ahead) from T0 for 40 states, then the step: the record, then
    20 more states of each on the corrected clock; m3 (stamped by its source) across it all."""

    def __init__(self) -> None:
        self.old = {m: segments(i, T0, 40) for i, m in enumerate(("m1", "m2"))}
        end = max(line[-1][1] for line in self.old.values())
        self.record = Correction(("m1", "m2"), T0 + AHEAD - (T0 + AHEAD) % INTERVAL, end + AHEAD, -AHEAD, INTERVAL)
        # after the step each machine carries on where it was (its time line moved, as the tracker's does)
        self.new = {m: segments(i + 2, line[-1][1], 20) for i, (m, line) in enumerate(self.old.items())}
        self.m3 = points("m3", segments(5, T0 + AHEAD - 30 * S, 40), 0)

    def before(self) -> list[str]:
        return lines([p for m, line in self.old.items() for p in points(m, line, AHEAD)]) + lines(self.m3)

    def after(self) -> list[str]:
        # the new line's points: a change at each boundary after its first, roll-ups from its first
        return lines([p for m, line in self.new.items() for p in points(m, line, 0)])

    def want(self) -> set[tuple[str, str, int]]:
        """(measurement, machine, ns) of every point, had the clock been right: the old line's
        roll-ups end where the step closed their interval, the new line's start there."""
        truth = [p for m, line in self.old.items() for p in points(m, line, 0)]
        truth += [p for m, line in self.new.items() for p in points(m, line, 0)]
        return {(p.measurement, p.machine, p.ts_ns) for p in truth + self.m3}


class BrokenRewrite:
    """Makes the rewrite fail once the output deleted the span (``deleted``, while ``broken``):
    the state a crash between the delete and the rewrite leaves on the server. The rewrite is the
    writer's writes (InfluxDB) or the corrector's import (VictoriaMetrics)."""

    def __init__(self, writer: V1Writer, corrector: Any) -> None:
        self.deleted = False
        self.broken = True
        self.write, self.request = writer.write, getattr(corrector, "_request", None)
        writer.write = self._write  # type: ignore[method-assign]
        if self.request is not None:
            corrector._request = self._request

    def _fail(self) -> None:
        if self.deleted and self.broken:
            raise WriteError("retry", "connection reset (a crash, in this test)")

    async def _write(self, body: bytes) -> None:
        self._fail()
        await self.write(body)

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        if path == "/api/v1/import":
            self._fail()
        assert self.request is not None
        return await self.request(method, path, **kw)


def outbox(tmp_path: Path) -> OutboxSettings:
    return OutboxSettings.model_validate({"path": tmp_path / "outbox.sqlite", "flush_interval": 0.05,
                                          "commit_delay": 0, "retry_initial": 0.05, "retry_max": 0.2,
                                          "stop_deadline": 0.5})


async def run_with_a_crash(output: OutputSettings, writer: V1Writer, tmp_path: Path, scenario: Scenario,
                           stored: Any) -> int:
    """Write the scenario through a sink whose rewrite fails after the delete, stop it there, then
    finish with a second sink on the same file; the points the correction wrote."""
    corrector_writes: list[int] = []
    sink = OutboxSink([output], outbox(tmp_path), writers={output.name: writer})
    sender = sink.senders[output.name]
    assert sender.corrector is not None
    broken = BrokenRewrite(writer, sender.corrector)
    corrector = sender.corrector
    inner_delete, inner_rewrite = corrector.delete, corrector.rewrite

    async def delete(record: Correction) -> None:
        await inner_delete(record)
        broken.deleted = True

    async def rewrite(work: bytes) -> int:
        try:
            n = await inner_rewrite(work)
        finally:
            broken.deleted = False
        corrector_writes.append(n)
        return n

    corrector.delete, corrector.rewrite = delete, rewrite  # type: ignore[method-assign]
    async with sink:
        await sink.write(scenario.before())
        await until(lambda: len(stored()) >= len(scenario.before()), 30, "the old line stored")
        await sink.write([scenario.record.to_line(), *scenario.after()])
        store = sink.store
        assert store is not None
        await until(lambda: sender.counters["retries"] >= 2, 30, "the rewrite failing after the delete")
        kept = store.db.execute("SELECT COUNT(*) FROM correction_work").fetchone()[0]
        kinds = [k for (k,) in store.db.execute("SELECT kind FROM outbox ORDER BY id")]
    assert kept == 1 and CORRECTION in kinds  # what was read back is kept in the outbox
    assert not corrector_writes
    # the span is gone from the server: read back again, it would be lost; the kept work has it
    assert len(stored()) < len(scenario.before())
    broken.broken = False
    again = OutboxSink([output], outbox(tmp_path), writers={output.name: type(writer)(output)})
    async with again:
        await until(lambda: again.stats()["depth_points"] == 0, 60, "the correction and the new line delivered")
        assert again.store is not None
        assert again.store.db.execute("SELECT COUNT(*) FROM correction_work").fetchone()[0] == 0
        written = again.senders[output.name].counters["corrected"]
    return written


async def test_influxdb_v1_holds_the_history_of_the_right_clock_after_a_crash_mid_correction(
        influxd: InfluxD, tmp_path: Path) -> None:
    """Test that after a correction through a real influxd, with a crash between its delete and its
    rewrite, the database holds exactly the points of the right clock, in order, all fields kept,
    every roll-up adding up to the time it holds, and the third machine untouched."""
    output = OutputSettings(name="plant", url=influxd.url, api="v1", database="plant", create_database=True)
    scenario = Scenario()

    def stored() -> list[dict[str, Any]]:
        try:
            return influxd.rows("SELECT * FROM machine_state, machine_availability GROUP BY machine", "plant")
        except RuntimeError:
            return []

    written = await run_with_a_crash(output, V1Writer(output), tmp_path, scenario, stored)
    rows = stored()
    got = {("machine_state" if r.get("state_code") is not None else "machine_availability", r["machine"], r["time"])
           for r in rows}
    assert got == scenario.want()
    assert written == sum(1 for m, line in scenario.old.items() for _ in points(m, line, 0))
    for r in rows:
        if r.get("busy_s") is not None:
            total = round(sum(r[f"{s.value}_s"] for s in State) * S)
            assert 0 < total <= INTERVAL - r["time"] % INTERVAL and isinstance(r["state"], str)
        else:
            assert isinstance(r["state"], str) and isinstance(r["previous"], str) and r["reason"] == "rule"
    print(f"v1: {written} point(s) rewritten")


async def test_victoria_metrics_holds_the_history_of_the_right_clock_after_a_crash_mid_correction(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """Test the same against a real victoria-metrics: its series exported whole, deleted and imported
    again with the span corrected (numeric fields only, as it keeps them)."""
    output = OutputSettings(name="platform", url=victoria_metrics.url, api="victoriametrics")
    scenario = Scenario()

    def stored() -> set[tuple[str, str, int]]:
        out = set()
        for s in victoria_metrics.export('{__name__=~"machine_(state_state_code|availability_busy_s)"}'):
            kind = "machine_state" if s["metric"]["__name__"].endswith("state_code") else "machine_availability"
            out |= {(kind, s["metric"]["machine"], ts * MS) for ts in s["timestamps"]}
        return out

    writer = VictoriaMetricsWriter(output)
    written = await run_with_a_crash(output, writer, tmp_path, scenario, stored)
    victoria_metrics.flush()
    assert stored() == scenario.want()
    totals: dict[tuple[str, int], float] = {}
    for s in victoria_metrics.export('{__name__=~"machine_availability_.+_s"}'):
        for value, ts in zip(s["values"], s["timestamps"], strict=True):
            key = (s["metric"]["machine"], ts * MS)
            totals[key] = totals.get(key, 0.0) + value
    for (_, ts), total in totals.items():  # every roll-up adds up to the time it holds
        assert 0 < round(total * S) <= INTERVAL - ts % INTERVAL
    assert written > 0
    print(f"victoria-metrics: {written} sample(s) imported again")
