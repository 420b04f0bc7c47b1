"""The capacity board's hour-of-week panel agrees with the collector's forecast: its InfluxQL
run on a real influxd over written roll-ups, folded into the week the way its Grafana
transformations say (emulated here from their documented behaviour), gives the forecast's idle
shares (all weeks weighted alike) summed over the machines."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from collector.capacity.forecast import forecast
from collector.capacity.profile import ProfileStore
from collector.configfile import load_config_text
from collector.core.lineprotocol import to_line
from collector.core.model import NS_PER_S, Interval, MachineInfo, State
from dashboards.boards import capacity_boards
from tests.fixtures.influxdb import InfluxD
from tests.test_capacity_forecast import pattern

DB = "availability"
ZONE = "Europe/Berlin"
CONFIG = f"""
site: {{plant: p1}}
sources: [{{id: sim, type: simulate}}]
machines:
  - {{id: m1, kind: lathe, public: true, source: sim, profile: packml}}
  - {{id: m2, kind: mill, public: true, source: sim, profile: packml}}
  - {{id: m3, kind: mill, source: sim, profile: packml}}
capacity: {{timezone: {ZONE}}}
"""


def other_pattern(t: dt.datetime) -> State:
    """m2: idle on weekday afternoons, offline at night, down on Saturdays, busy otherwise."""
    if t.weekday() == 5:
        return State.DOWN
    if t.hour < 6:
        return State.OFFLINE
    return State.IDLE if 13 <= t.hour < 17 else State.BUSY


def rollups(zone: ZoneInfo, start: dt.datetime, weeks: int) -> list[Interval]:
    out = []
    for mid, rule in (("m1", pattern), ("m2", other_pattern), ("m3", pattern)):
        info = MachineInfo(mid, "p1", public=mid != "m3")
        t = start
        while t < start + dt.timedelta(weeks=weeks):
            nxt = t + dt.timedelta(minutes=20)
            seconds = dict.fromkeys(State, 0)
            state = rule(t.astimezone(zone))
            seconds[state] = 1200 * NS_PER_S
            out.append(Interval(info, int(t.timestamp()) * NS_PER_S, int(nxt.timestamp()) * NS_PER_S, seconds, state))
            t = nxt
    return out


def fold(rows: list[dict[str, Any]], zone: ZoneInfo) -> dict[str, float]:
    """The panel's transformations: formatTime "E HH" in the board's zone, groupBy (hour, machine)
    summing idle_s and known_s, share = idle / known, groupBy hour summing share."""
    per_machine: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        local = dt.datetime.fromtimestamp(row["time"] / NS_PER_S, zone)
        key = (f"{local.isoweekday()} {local.hour:02d}", row["machine"])
        per_machine[key][0] += row["idle_s"]
        per_machine[key][1] += row["known_s"]
    out: dict[str, float] = defaultdict(float)
    for (hour, _), (idle, known) in per_machine.items():
        if known:  # a zero known time divides to null in Grafana and adds nothing
            out[hour] += idle / known
    return dict(out)


def test_hour_of_week_panel_matches_the_forecast(influxd: InfluxD) -> None:
    """Test that the panel's folded query result equals, hour of the week by hour, the sum over
    the public machines of the forecast's idle shares computed by the collector with decay 1."""
    zone = ZoneInfo(ZONE)
    config = load_config_text(CONFIG).config
    (board,) = capacity_boards(config, config.dashboards)
    assert board.json["timezone"] == ZONE
    panel = next(p for p in board.json["panels"] if p["title"] == "Usually free, by hour of the week")
    start = dt.datetime(2026, 1, 5, tzinfo=zone)
    intervals = rollups(zone, start, 3)
    influxd.query(f'CREATE DATABASE "{DB}"')
    influxd.write("\n".join(to_line(i) for i in intervals), DB)
    end = start + dt.timedelta(weeks=3)
    query = panel["targets"][0]["query"].replace(
        "$timeFilter", f"time >= {int(start.timestamp() * 1000)}ms and time < {int(end.timestamp() * 1000)}ms")
    rows = influxd.rows(query, DB)  # times in ns
    assert rows and {r["machine"] for r in rows} == {"m1", "m2"}  # m3 is not public: not in the query
    panel_hours = fold(rows, zone)

    store = ProfileStore(None, zone, decay=1.0)
    store.add([i for i in intervals if i.machine.public])
    monday = dt.datetime(2026, 2, 2, tzinfo=zone)
    expected: dict[str, float] = defaultdict(float)
    for mid in ("m1", "m2"):
        for i, share in enumerate(forecast(store.profile(mid), monday, 0.5).shares):
            if share is not None:
                expected[f"{i // 24 + 1} {i % 24:02d}"] += share
    assert panel_hours.keys() == expected.keys() and len(expected) == 168
    for hour, value in expected.items():
        assert abs(panel_hours[hour] - value) < 1e-9, hour
    assert expected["7 12"] == 1.0 and expected["2 14"] == 1.0 and expected["3 10"] == 0.0
