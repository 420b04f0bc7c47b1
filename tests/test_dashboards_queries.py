"""Every panel query of the generated boards runs against a real influxd filled with a known
history and returns the numbers computed by hand. Grafana's macros and variables are substituted
the way its InfluxDB data source does (InfluxQL mode)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from collector.configfile import load_config_text
from collector.core.lineprotocol import to_line
from collector.core.model import Reading, State
from collector.machines import resolve_all
from collector.tracker import Tracker
from dashboards.boards import Board, build_boards
from tests.fixtures.influxdb import InfluxD

DB = "availability"
MIN = 60 * 10**9
CONFIG = """
site: {plant: p1}
sources: [{id: sim, type: simulate}]
profiles:
  direct:
    signals: {mode: mode}
    rules:
      - {state: down, when: "mode == 'alarm'", reason: "alarm active"}
      - {state: busy, when: "mode == 'run'", reason: "executing"}
      - {state: idle, reason: "ready"}
machines:
  - {id: m1, name: Lathe A, line: L1, kind: lathe, public: true, source: sim, profile: direct}
  - {id: m2, line: L1, kind: lathe, source: sim, profile: direct}
  - {id: m3, line: L2, kind: mill, public: true, source: sim, profile: direct}
  - {id: m4, plant: p2, line: L9, kind: press, public: true, source: sim, profile: direct}
"""

# The known history, in minutes from T0 (an aligned hour); the range under test is [T0, T0+60m).
# m1: 30 busy, 20 idle, 10 down, then idle again at T0+60m (idle now).
# m2: no data for the first 15 minutes (offline), then 45 busy (busy now).
# m3: idle since T0-10m, before the range (idle now).
# m4: another plant: 60 busy, then down (down now).
STARTS = {"m1": -2, "m2": 0, "m3": -15, "m4": 0}
READINGS = [("m3", -10, "wait"), ("m1", 0, "run"), ("m4", 0, "run"), ("m2", 15, "run"),
            ("m1", 30, "wait"), ("m1", 50, "alarm"), ("m1", 60, "wait"), ("m4", 60, "alarm")]
END = 65


def history(t0: int) -> str:
    """The history as the collector writes it: the real rules and tracker, the real line protocol."""
    config = load_config_text(CONFIG).config
    trackers = {r.bound.id: Tracker(r.info, r.rules, start_ns=t0 + STARTS[r.bound.id] * MIN, interval_ns=MIN)
                for r in resolve_all(config)}
    out = []
    for machine, minute, mode in READINGS:
        out += trackers[machine].reading(Reading(machine, "mode", mode, t0 + minute * MIN))
    for tracker in trackers.values():
        out += tracker.tick(t0 + END * MIN)
    return "\n".join(to_line(o) for o in out)


# -- Grafana's substitution (public/app/plugins/datasource/influxdb: interpolateQueryExpr) --------

def regex_escape(value: str) -> str:
    """Grafana's ``escapeRegex`` for values put into an InfluxQL regex."""
    return re.sub(r"[\\^$*+?.()|[\]{}/-]", lambda m: "\\" + m.group(0), value)


def interpolate(query: str, variables: dict[str, list[str]], defs: dict[str, dict[str, Any]], *,
                start_ms: int, end_ms: int, interval: str = "1m") -> str:
    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$__interval", interval)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            return match.group(0)
        values, var = variables[name], defs[name]
        if values == ["$__all"]:
            return str(var["allValue"])
        if not var.get("multi") and not var.get("includeAll"):
            return values[0]
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", value, query)


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def boards() -> dict[str, Board]:
    config = load_config_text(CONFIG).config
    return {b.uid: b for b in build_boards(config)}


class Runner:
    def __init__(self, influxd: InfluxD, t0: int) -> None:
        self.influxd, self.t0 = influxd, t0
        self.start_ms = t0 // 10**6
        self.end_ms = self.start_ms + 3600_000 - 1  # exactly the hour

    def rows(self, board: Board, title: str, variables: dict[str, list[str]] | None = None,
             target: int = 0, interval: str = "1m") -> list[dict[str, Any]]:
        panel = panel_by_title(board, title)
        return self.run(board, panel["targets"][target]["query"], variables, interval)

    def run(self, board: Board, query: str, variables: dict[str, list[str]] | None = None,
            interval: str = "1m") -> list[dict[str, Any]]:
        defs = {v["name"]: v for v in board.json["templating"]["list"]}
        text = interpolate(query, variables or {}, defs, start_ms=self.start_ms, end_ms=self.end_ms, interval=interval)
        assert not re.search(r"\$\{?\w", text), f"unsubstituted macro in {text}"
        return self.influxd.rows(text, DB)


@pytest.fixture
def runner(influxd: InfluxD) -> Runner:
    influxd.query(f'CREATE DATABASE "{DB}"')
    t0 = (time.time_ns() // 3600_000_000_000) * 3600_000_000_000 - 3 * 3600_000_000_000  # hours back
    influxd.write(history(t0), DB)
    return Runner(influxd, t0)


def panel_by_title(board: Board, title: str) -> dict[str, Any]:
    matches = [p for p in board.json["panels"] if p["title"] == title]
    assert len(matches) == 1, f"{board.uid}: no single panel {title!r}"
    return matches[0]


ALL = {"plant": ["$__all"], "line": ["$__all"], "machine": ["$__all"]}
P1 = {"plant": ["p1"], "line": ["$__all"], "machine": ["$__all"]}


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


# -- tests ------------------------------------------------------------------------------------

def test_every_panel_query_runs(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that every target of every generated panel and variable is valid InfluxQL that influxd executes."""
    count = 0
    for board in boards.values():
        variables = {"plant": ["p1"], "line": ["$__all"], "machine": ["m1"]}
        for panel in board.json["panels"]:
            for target in panel["targets"]:
                runner.run(board, target["query"], variables)
                count += 1
        for var in board.json["templating"]["list"]:
            if var["type"] == "query":
                runner.run(board, var["query"], variables)
    assert count >= 20


def test_variables_list_tag_values(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that the plant, line and machine variables list the tag values, lines and machines filtered."""
    fleet = boards["machine-fleet"]
    defs = {v["name"]: v for v in fleet.json["templating"]["list"]}
    values = lambda name, vs: sorted(r["value"] for r in runner.run(fleet, defs[name]["query"], vs))  # noqa: E731
    assert values("plant", {}) == ["p1", "p2"]
    assert values("line", {"plant": ["p1"]}) == ["L1", "L2"]
    assert values("machine", {"plant": ["p1"], "line": ["L1"]}) == ["m1", "m2"]
    assert values("machine", {"plant": ["$__all"], "line": ["$__all"]}) == ["m1", "m2", "m3", "m4"]


def test_fleet_current_state(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that the current-state board shows each machine's last state, since when, and its reason."""
    rows = by(runner.rows(boards["machine-fleet"], "Current state", ALL), "machine")
    assert {m: r["state"] for m, r in rows.items()} == {"m1": "idle", "m2": "busy", "m3": "idle", "m4": "down"}
    assert rows["m1"]["time"] == runner.t0 + 60 * MIN and rows["m1"]["reason"] == "ready"
    assert rows["m3"]["time"] == runner.t0 - 10 * MIN  # older than the range: still current
    assert rows["m4"]["reason"] == "alarm active"
    assert (rows["m3"]["plant"], rows["m3"]["line"]) == ("p1", "L2")
    assert rows["m2"]["code"] == State.BUSY.code
    only_l2 = runner.rows(boards["machine-fleet"], "Current state", {**P1, "line": ["L2"]})
    assert [r["machine"] for r in only_l2] == ["m3"]


def test_fleet_idle_now(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that "idle now" counts and lists exactly the machines whose last state is idle."""
    fleet = boards["machine-fleet"]
    assert [r["idle"] for r in runner.rows(fleet, "Idle now", P1)] == [2]
    assert [r["idle"] for r in runner.rows(fleet, "Idle now", {**P1, "line": ["L1"]})] == [1]
    assert runner.rows(fleet, "Idle now", {"plant": ["p2"], "line": ["$__all"], "machine": ["$__all"]}) == []
    listed = by(runner.rows(fleet, "Idle now: machines", ALL), "machine")
    assert sorted(listed) == ["m1", "m3"]
    assert listed["m1"]["time"] == runner.t0 + 60 * MIN  # idle since


def test_fleet_figures_per_machine(runner: Runner, boards: dict[str, Board]) -> None:
    """Test utilization, availability and free capacity per machine over the range against hand-computed values."""
    rows = by(runner.rows(boards["machine-fleet"], "Per machine", ALL), "machine")
    # m1: 30 busy, 20 idle, 10 down -> known 60 min
    assert rows["m1"]["utilization"] == pytest.approx(30 / 60)
    assert rows["m1"]["availability"] == pytest.approx(50 / 60)
    assert rows["m1"]["free_h"] == pytest.approx(20 / 60)
    # m2: 15 offline, 45 busy -> known 45 min
    assert rows["m2"]["utilization"] == pytest.approx(1.0)
    assert rows["m2"]["availability"] == pytest.approx(1.0)
    assert rows["m2"]["free_h"] == pytest.approx(0.0)
    # m3: 60 idle
    assert rows["m3"]["utilization"] == pytest.approx(0.0)
    assert rows["m3"]["availability"] == pytest.approx(1.0)
    assert rows["m3"]["free_h"] == pytest.approx(1.0)
    assert set(rows) == {"m1", "m2", "m3", "m4"}
    assert set(by(runner.rows(boards["machine-fleet"], "Per machine", P1), "machine")) == {"m1", "m2", "m3"}


def test_fleet_figures_per_line(runner: Runner, boards: dict[str, Board]) -> None:
    """Test the per-line figures: L1 = m1 + m2 (75 busy, 20 idle, 10 down, 15 offline minutes)."""
    rows = by(runner.rows(boards["machine-fleet"], "Per line", P1), "line")
    assert rows["L1"]["utilization"] == pytest.approx(75 / 105)
    assert rows["L1"]["availability"] == pytest.approx(95 / 105)
    assert rows["L1"]["free_h"] == pytest.approx(20 / 60)
    assert rows["L2"]["utilization"] == pytest.approx(0.0)
    assert rows["L2"]["free_h"] == pytest.approx(1.0)
    assert set(rows) == {"L1", "L2"}


def test_fleet_state_timeline(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that the timeline returns each machine's changes inside the range, in order."""
    rows = runner.rows(boards["machine-fleet"], "State timeline", P1)
    m1 = [r["state"] for r in rows if r["machine"] == "m1"]
    assert m1 == ["busy", "idle", "down"]  # the change at T0+60m is outside the hour
    assert [(r["state"], r["time"]) for r in rows if r["machine"] == "m2"] == [("busy", runner.t0 + 15 * MIN)]
    assert not [r for r in rows if r["machine"] in ("m3", "m4")]


DETAIL = {"machine": ["m1"]}


def test_detail_figures_and_current_state(runner: Runner, boards: dict[str, Board]) -> None:
    """Test the machine detail stats: current state with reason, utilization, availability, free hours."""
    detail = boards["machine-detail"]
    [current] = runner.rows(detail, "Current state", DETAIL)
    assert (current["state"], current["reason"]) == ("idle", "ready")
    stats = ("Utilization", "Availability", "Free capacity")
    queries = {panel_by_title(detail, t)["targets"][0]["query"] for t in stats}
    assert len(queries) == 1  # one query, each stat shows one of its columns
    [fig] = runner.rows(detail, "Utilization", DETAIL)
    assert (fig["utilization"], fig["availability"], fig["free_h"]) == pytest.approx((0.5, 50 / 60, 20 / 60))
    [fig2] = runner.rows(detail, "Utilization", {"machine": ["m2"]})
    assert fig2["utilization"] == pytest.approx(1.0)  # offline time is not known time


def test_detail_time_in_each_state(runner: Runner, boards: dict[str, Board]) -> None:
    """Test hours in each state over the range, and per bucket with $__interval substituted."""
    detail = boards["machine-detail"]
    [row] = runner.rows(detail, "Time in each state", {"machine": ["m2"]})
    assert {s.value: row[s.value] for s in State} == pytest.approx(
        {"busy": 0.75, "idle": 0.0, "setup": 0.0, "down": 0.0, "offline": 0.25})
    buckets = runner.rows(detail, "Time in state over time", DETAIL, interval="30m")
    assert [b["time"] for b in buckets] == [runner.t0, runner.t0 + 30 * MIN]
    flat = [b[s] for b in buckets for s in ("busy", "idle", "down")]
    assert flat == pytest.approx([0.5, 0, 0, 0, 20 / 60, 10 / 60])


def test_detail_last_changes(runner: Runner, boards: dict[str, Board]) -> None:
    """Test the last changes: newest first, with reason, previous state and how long it lasted."""
    rows = runner.rows(boards["machine-detail"], "Last state changes", DETAIL)
    assert [(r["state"], r["reason"], r["previous"], r["previous_s"]) for r in rows] == [
        ("down", "alarm active", "idle", 1200.0),
        ("idle", "ready", "busy", 1800.0),
        ("busy", "executing", "offline", 120.0),  # the tracker started 2 minutes before T0
    ]
    timeline = runner.rows(boards["machine-detail"], "State timeline", DETAIL)
    assert [r["state"] for r in timeline] == ["busy", "idle", "down"]


def test_capacity_board_per_plant(runner: Runner, boards: dict[str, Board]) -> None:
    """Test the p1 capacity board: only public machines m1 and m3, free now and idle hours per line and type."""
    board = boards["capacity-p1"]
    assert [r["idle"] for r in runner.rows(board, "Free now")] == [2]
    assert sorted(r["machine"] for r in runner.rows(board, "Free right now")) == ["m1", "m3"]
    panel = panel_by_title(board, "Idle hours over the range, per line and machine type")
    hours = {t["alias"]: runner.run(board, t["query"])[0]["idle_h"] for t in panel["targets"]}
    assert hours == pytest.approx({"L1 · lathe": 20 / 60, "L2 · mill": 1.0})  # m2 (not public) excluded
    panel = panel_by_title(board, "Free now, per line and machine type")
    free = {t["alias"]: [r["idle"] for r in runner.run(board, t["query"])] for t in panel["targets"]}
    assert free == {"L1 · lathe": [1], "L2 · mill": [1]}
    shared = by(runner.rows(board, "Shared machines now"), "machine")
    assert {m: r["state"] for m, r in shared.items()} == {"m1": "idle", "m3": "idle"}
    assert all("reason" not in r for r in shared.values())


def test_capacity_board_other_plant(runner: Runner, boards: dict[str, Board]) -> None:
    """Test that the p2 board sees only p2's machine (down now: nothing free)."""
    board = boards["capacity-p2"]
    assert runner.rows(board, "Free now") == []  # Grafana shows the panel's noValue, "0"
    [row] = runner.rows(board, "Shared machines now")
    assert (row["machine"], row["state"]) == ("m4", "down")


def test_machine_list_regex_matches_odd_ids_exactly(influxd: InfluxD) -> None:
    """Test that the capacity boards' machine filter matches ids with spaces, dots, slashes and
    brackets exactly (and InfluxDB's RE2 accepts the escaping)."""
    from dashboards.queries import machines_where

    influxd.query(f'CREATE DATABASE "{DB}"')
    ids = ["a b", "x.y/z", "p(1)", "m-1", "xzy/z", "m-10"]
    influxd.write("\n".join(f"t,machine={i.replace(' ', chr(92) + ' ')} v=1 {n}" for n, i in enumerate(ids)), DB)
    wanted = ["a b", "x.y/z", "p(1)", "m-1"]
    rows = influxd.rows(f'SELECT "v" FROM "t" WHERE {machines_where(wanted)} GROUP BY "machine"', DB)
    assert sorted(r["machine"] for r in rows) == sorted(wanted)
