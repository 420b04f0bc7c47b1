"""The correction of stored history after a step back (collector/core/correction.py), against an
oracle: a machine's true time line written as the collector would write it on a clock D ahead,
then corrected, must give exactly what the collector writes on the right clock: the changes D
earlier, the roll-ups on the right clock's intervals, each adding up to the time it holds."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core.correction import Correction, StoredPoint, corrected, spans
from collector.core.model import NS_PER_S, State
from collector.influx.outbox import CORRECTION, POINTS, SCHEMA_VERSION, OutboxStore

S = NS_PER_S
T0 = 1_750_000_000 * S
TAGS = {"machine": "m1", "plant": "p", "line": "L1"}
STATES = list(State)

Segment = tuple[int, int, State]  # start, end, state


def change_points(segments: list[Segment], offset: int, numeric: bool) -> list[StoredPoint]:
    out = []
    for (began, _, before), (start, _, state) in itertools.pairwise(segments):
        previous_s = (start - began) / S
        fields: dict[str, object] = {"state": state.value, "state_code": state.code, "previous": before.value,
                                     "previous_s": previous_s, "reason": "rule"}
        if numeric:  # as VictoriaMetrics keeps them
            fields = {"state_code": float(state.code), "previous_s": previous_s}
        out.append(StoredPoint("machine_state", dict(TAGS), fields, start + offset))
    return out


def rollup_points(segments: list[Segment], offset: int, interval: int, numeric: bool) -> list[StoredPoint]:
    """Aligned on the clock the points are labelled with, each stamped at the first instant it holds."""
    buckets: dict[int, tuple[int, dict[State, int], State]] = {}
    for start, end, state in segments:
        a, b = start + offset, end + offset
        while a < b:
            k = a - a % interval
            cut = min(b, k + interval)
            first, held, _ = buckets.get(k, (a, dict.fromkeys(State, 0), state))
            held[state] += cut - a
            buckets[k] = (first, held, state)
            a = cut
    out = []
    for k in sorted(buckets):
        first, held, last = buckets[k]
        fields: dict[str, object] = {f"{s.value}_s": held[s] / S for s in State}
        if not numeric:
            fields["state"] = last.value
        out.append(StoredPoint("machine_availability", dict(TAGS), fields, first))
    return out


@st.composite
def time_lines(draw: st.DrawFn) -> tuple[list[Segment], int, int]:
    interval = draw(st.sampled_from([10 * S, 60 * S, 7 * S + 3]))
    at = T0 + draw(st.integers(0, 10**12))
    segments: list[Segment] = []
    state = draw(st.sampled_from(STATES))
    for _ in range(draw(st.integers(1, 12))):
        length = draw(st.one_of(st.integers(1, 3 * interval), st.just(1)))
        segments.append((at, at + length, state))
        at += length
        state = draw(st.sampled_from([s for s in STATES if s is not state]))
    ahead = draw(st.one_of(st.integers(S // 2, 2 * 3600 * S), st.just(3600 * S), st.just(3600 * S + 17)))
    return segments, interval, ahead


def key(p: StoredPoint) -> tuple[int, str]:
    return p.ts_ns, p.measurement


@settings(max_examples=400, deadline=None)
@given(time_lines(), st.booleans())
def test_a_corrected_history_is_the_one_written_on_the_right_clock(line: tuple[list[Segment], int, int],
                                                                    numeric: bool) -> None:
    """Test that the points of a time line written D ahead, corrected, are exactly the points written
    on the right clock: changes moved, roll-ups rebuilt on its intervals to the nanosecond."""
    segments, interval, ahead = line
    stored = change_points(segments, ahead, numeric) + rollup_points(segments, ahead, interval, numeric)
    other = StoredPoint("machine_state", {**TAGS, "machine": "m2"}, {"state_code": 1}, segments[0][0] + ahead)
    record = Correction(("m1",), segments[0][0] + ahead, segments[-1][1] + ahead, -ahead, interval)
    got = sorted(corrected([*stored, other], record), key=key)
    want = sorted(change_points(segments, 0, numeric) + rollup_points(segments, 0, interval, numeric), key=key)
    assert [(p.measurement, p.ts_ns, p.fields) for p in got] == [(p.measurement, p.ts_ns, p.fields) for p in want]
    for p in got:  # each roll-up holds no more than the rest of its interval
        if p.measurement == "machine_availability":
            total = sum(round(float(v) * S) for k, v in p.fields.items() if k.endswith("_s"))  # type: ignore[arg-type]
            assert 0 < total <= interval - p.ts_ns % interval


def test_spans_take_the_first_state_from_what_is_left_of_the_roll_up() -> None:
    """Test that a roll-up's first state, with no roll-up before it, is the one its changes leave time for."""
    rollup = StoredPoint("machine_availability", dict(TAGS), {"busy_s": 4.0, "idle_s": 6.0}, 10 * S)
    change = StoredPoint("machine_state", dict(TAGS), {"state_code": 1}, 16 * S)
    assert spans([rollup], [change]) == [(10 * S, 16 * S, State.IDLE), (16 * S, 20 * S, State.BUSY)]


def test_the_record_is_a_line_protocol_comment_that_reads_back() -> None:
    """Test that a correction record survives its line and is a comment to line protocol."""
    record = Correction(("a b", 'q"x'), 1, 2, -3, 4)
    assert record.to_line().startswith("#") and Correction.from_line(record.to_line()) == record


# -- the record in the outbox ---------------------------------------------------------------------

def test_a_correction_is_a_row_of_its_own_and_comes_alone(tmp_path: Path) -> None:
    """Test that a correction record appended among points is stored as its own row, in place, and
    that an output reads the points before it, then it alone, then the points after it."""
    store = OutboxStore(tmp_path / "outbox.sqlite", outputs=["a", "b"])
    try:
        record = Correction(("m1",), 1, 2, -3, 4)
        store.append(["p 1", "p 2", record.to_line(), "p 3"], {"m1": b"{}"})
        assert [c.kind for c in store.peek(100, "a")] == [POINTS]
        assert store.pending_points["a"] == 3
        store.advance("a", store.peek(100, "a")[-1].id)
        (alone,) = store.peek(100, "a")
        assert alone.kind == CORRECTION and Correction.from_line(alone.body.decode()) == record
        store.save_correction_work("a", alone.id, b"work")
        assert store.correction_work("a", alone.id) == b"work" and store.correction_work("b", alone.id) is None
        store.advance("a", alone.id)
        assert store.correction_work("a", alone.id) is None  # gone with the cursor move
        assert [c.lines for c in store.peek(100, "a")] == [["p 3"]]
        assert [c.kind for c in store.peek(100, "b")] == [POINTS]  # b has not moved: its turn is its own
    finally:
        store.close()


def test_an_outbox_file_of_schema_2_is_migrated_and_keeps_its_points(tmp_path: Path) -> None:
    """Test that a file of the multi-output release (schema 2, tests/data/outbox-schema2.sqlite: two
    outputs, one a row ahead) opens at schema 3 with its cursors, points and checkpoint as they were."""
    path = tmp_path / "outbox.sqlite"
    path.write_bytes((Path(__file__).parent / "data" / "outbox-schema2.sqlite").read_bytes())
    store = OutboxStore(path, outputs=["plant", "platform"])
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert store.pending_points == {"plant": 2, "platform": 3}
        assert [c.kind for c in store.peek(100, "platform")] == [POINTS, POINTS]
        assert [line for c in store.peek(100, "plant") for line in c.lines] == [
            "machine_state,machine=cnc-02 state_code=2i 2000", "machine_state,machine=cnc-01 state_code=4i 3000"]
        assert store.load_state()["cnc-01"][0] == b'{"state": "busy"}'
    finally:
        store.close()


def test_roll_ups_missing_a_field_an_output_drops_move_as_they_are() -> None:
    """Test that roll-ups an output stores without one of the state fields (drop_fields) cannot be
    taken apart and move whole by the step rather than be rebuilt wrongly."""
    rollup = StoredPoint("machine_availability", dict(TAGS), {"busy_s": 4.0, "idle_s": 6.0}, T0 + 3600 * S)
    record = Correction(("m1",), T0, T0 + 7200 * S, -3600 * S - 7, 10 * S)
    (moved,) = corrected([rollup], record)
    assert (moved.ts_ns, moved.fields) == (T0 - 7, rollup.fields)


@given(st.integers(0, 4_102_444_800 * S - 1))
def test_rfc3339_with_nanoseconds_reads_back_what_is_written(ns: int) -> None:
    """Test that the times of the v2 read-back and delete (RFC 3339, nine digits) read back to the ns."""
    from collector.influx.correctors import _rfc3339, rfc3339_ns

    assert rfc3339_ns(_rfc3339(ns)) == ns
    assert rfc3339_ns(_rfc3339(ns - ns % S).replace(".000000000", "")) == ns - ns % S  # no fraction at all
    assert rfc3339_ns(_rfc3339(ns).rstrip("Z").rstrip("0").rstrip(".") + "Z") == ns  # RFC3339Nano trims zeros
