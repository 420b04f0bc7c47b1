"""The engine's side of a step back (collector/stepback.py): the correction record is committed
behind every point the old line produced (the interval the step closed included) and ahead of
every point of the new line, and what the outputs make of it (collector/core/correction.py) is
a history in time order."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from collector.configfile import load_config_text
from collector.core.correction import Correction, StoredPoint, corrected, is_correction
from collector.core.model import Reading
from collector.engine import Engine
from collector.influx.selection import parse
from tests.test_clock import FakeTime, RecordingSink
from tests.test_stepback_v2 import _value

S = 1_000_000_000


class CorrectingSink(RecordingSink):
    """Records what the engine commits, and says it applies correction records."""

    def corrects(self) -> bool:
        return True


def stored(line: str) -> StoredPoint:
    point = parse(line)
    assert point is not None
    fields = {k: _value(raw.split("=", 1)[1]) for k, raw in point.fields}
    return StoredPoint(point.head.split(",")[0], point.tags, fields, int(point.ts))


async def test_the_record_sits_between_the_old_line_and_the_new_and_puts_the_history_in_order(tmp_path: Path) -> None:
    """Test that after a step back of an hour and a bit the engine commits one record for the
    arrival-stamped machine only, after the old line's points (the closed interval too) and before
    the new line's, spanning them; and that the history corrected by it is in time order with
    roll-ups that never overlap."""
    t = FakeTime()
    clock = t.clock()
    loaded = load_config_text(f"""
site: {{plant: p}}
data_dir: {tmp_path}
sources:
  - {{id: line, type: mqtt, host: 127.0.0.1, subscriptions: [{{topic: "a/{{machine}}", payload: json}}]}}
  - {{id: own, type: mqtt, host: 127.0.0.1, subscriptions: [{{topic: "b/{{machine}}", payload: json, timestamp: ts}}]}}
profiles:
  m: {{signals: {{state: state}}, rules: [{{state: busy, when: "state == 'busy'"}}, {{state: idle}}]}}
machines: [{{id: m1, source: line, profile: m}}, {{id: m2, source: own, profile: m}}]
tracker: {{interval: 10s}}
""", "t.yaml")
    sink = CorrectingSink()
    engine = Engine(loaded, sink, clock=clock)
    states = ["busy", "idle"]
    for i in range(9):  # 9 changes 3.3 s apart on the old line, rolled up as time goes
        t.mono += 3_300_000_000
        await engine._commit(engine._process(Reading("m1", "state", states[i % 2], clock.now_ns())))
        await engine._commit(engine._tick())
    step_at = clock.now_ns()
    t.offset -= 3600 * S + 1_234_567  # NTP: the clock ran an hour and a bit ahead
    t.mono += 100_000_000
    await engine._commit(engine._tick())
    for i in range(9):
        t.mono += 3_300_000_000
        await engine._commit(engine._process(Reading("m1", "state", states[(i + 1) % 2], clock.now_ns())))
        await engine._commit(engine._tick())
    await engine._commit(engine._tick())

    marks = [i for i, line in enumerate(sink.lines) if is_correction(line)]
    assert len(marks) == 1
    record = Correction.from_line(sink.lines[marks[0]])
    assert record.machines == ("m1",) and record.delta_ns == -(3600 * S + 1_234_567) and record.to_ns > step_at
    before = [p for p in map(stored, sink.lines[:marks[0]]) if p.machine == "m1"]
    after = [p for p in map(stored, sink.lines[marks[0] + 1:]) if p.machine == "m1"]
    assert before and after
    assert all(record.covers(p) for p in before)  # every point of the old line is in the span
    assert any(p.measurement == "machine_availability" and p.ts_ns <= step_at < p.ts_ns + 10 * S
               for p in before)  # the interval the step closed is on the old line, before the record
    history = sorted(corrected(before, record) + after, key=lambda p: p.ts_ns)
    changes = [p for p in history if p.measurement == "machine_state"]
    assert [p.fields["state"] for p in changes] == ["busy", "idle"] * 9
    assert all(a.ts_ns < b.ts_ns for a, b in itertools.pairwise(changes))  # in order
    assert max(p.ts_ns for p in corrected(before, record)) <= min(p.ts_ns for p in after)
    end = 0
    for p in (p for p in history if p.measurement == "machine_availability"):  # none overlaps the next
        assert p.ts_ns >= end
        end = p.ts_ns + sum(round(float(v) * S) for k, v in p.fields.items() if k.endswith("_s"))  # type: ignore[arg-type]


def apply(lines: list[str]) -> list[StoredPoint]:
    """What an output holds after taking ``lines`` in order: points stored, each record applied
    to what it holds (its span deleted, the corrected points written)."""
    held: list[StoredPoint] = []
    for line in lines:
        if is_correction(line):
            record = Correction.from_line(line)
            held = [p for p in held if not record.covers(p)] + corrected([p for p in held if record.covers(p)], record)
        else:
            held.append(stored(line))
    return held


@pytest.mark.parametrize("steps", [[-3600 * S - 1_234_567, -90 * S - 7], [86_400 * S + 5, -3600 * S - 3],
                                   [-3600 * S - 3, 86_400 * S + 5, -7_200 * S - 11], [-4 * S - 1]],
                         ids=["back-back", "forward-back", "back-forward-back", "back-a-few-seconds"])
async def test_after_several_steps_every_output_holds_the_history_in_order(tmp_path: Path, steps: list[int]) -> None:
    """Test that after several steps of the clock (backs corrected in turn, a forward one left as it
    is) an output that applied every record in order holds each change once, in time order, and
    roll-ups that never overlap and add up to the time they hold."""
    t = FakeTime()
    clock = t.clock()
    loaded = load_config_text(f"""
site: {{plant: p}}
data_dir: {tmp_path}
sources: [{{id: line, type: mqtt, host: 127.0.0.1, subscriptions: [{{topic: "a/{{machine}}", payload: json}}]}}]
profiles:
  m: {{signals: {{state: state}}, rules: [{{state: busy, when: "state == 'busy'"}}, {{state: idle}}]}}
machines: [{{id: m1, source: line, profile: m}}]
tracker: {{interval: 10s}}
""", "t.yaml")
    sink = CorrectingSink()
    engine = Engine(loaded, sink, clock=clock)
    published = []
    for delta in [0, *steps]:
        t.offset += delta
        for _ in range(7):
            t.mono += 2_700_000_000
            state = ["busy", "idle"][len(published) % 2]
            published.append(state)
            await engine._commit(engine._process(Reading("m1", "state", state, clock.now_ns())))
            await engine._commit(engine._tick())
    held = apply(sink.lines)
    changes = sorted((p for p in held if p.measurement == "machine_state"), key=lambda p: p.ts_ns)
    assert [p.fields["state"] for p in changes] == published
    assert all(a.ts_ns < b.ts_ns for a, b in itertools.pairwise(changes))
    end = 0
    for p in sorted((p for p in held if p.measurement == "machine_availability"), key=lambda p: p.ts_ns):
        total = sum(round(float(v) * S) for k, v in p.fields.items() if k.endswith("_s"))  # type: ignore[arg-type]
        assert p.ts_ns >= end and 0 < total <= 10 * S - p.ts_ns % (10 * S)
        end = p.ts_ns + total
    assert sum(is_correction(line) for line in sink.lines) == sum(d < 0 for d in steps)
