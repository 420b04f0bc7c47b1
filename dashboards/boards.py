"""The boards: fleet availability, machine detail, and the capacity-sharing boards (one per plant
or per line, only machines the config marks ``public``, no reasons, no variables)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from collector.config import Config, Machine
from collector.core.model import State
from dashboards import queries as q
from dashboards.config import DashboardSettings
from dashboards.grafana import InfluxQL, Panel, Row, dashboard, datasource_variable, query_variable
from dashboards.states import COLOURS, colour_overrides, value_mappings

JSON = dict[str, Any]
TAGS = ["machine-availability"]
FLEET_UID = "machine-fleet"
DETAIL_UID = "machine-detail"
VAR_DATASOURCE: JSON = {"type": "influxdb", "uid": "${datasource}"}


@dataclass(frozen=True, slots=True)
class Board:
    """A generated dashboard; ``shared`` boards are the ones `push --share` makes public."""

    uid: str
    title: str
    json: JSON
    shared: bool = False

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


# -- field config helpers ----------------------------------------------------------------------

def _by_name(name: str, *props: tuple[str, Any]) -> JSON:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k, "value": v} for k, v in props]}


def _organize(exclude: list[str], rename: dict[str, str]) -> JSON:
    return {"id": "organize", "options": {"excludeByName": dict.fromkeys(exclude, True),
                                          "renameByName": rename, "indexByName": {}}}


def _table_options() -> JSON:
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}


COLOUR_CELL = ("custom.cellOptions", {"type": "color-background", "mode": "basic"})
PERCENT_GAUGE = ("custom.cellOptions", {"type": "gauge", "mode": "basic", "valueDisplayMode": "text"})


def _stat_options(field: str | None, colour_mode: str = "value", text_mode: str = "value") -> JSON:
    """``field`` picks a column of a table result by name; None: the only numeric field (a time
    series result's field is named after the series, e.g. ``machine_state.idle``)."""
    return {"reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": f"/^{field}$/" if field else ""},
            "colorMode": colour_mode, "graphMode": "none", "textMode": text_mode, "justifyMode": "auto",
            "orientation": "auto"}


def _timeline(title: str, where: str, h: int, description: str) -> Panel:
    return Panel("state-timeline", title, [InfluxQL(q.state_timeline(where), alias="$tag_machine")], w=24, h=h,
                 description=description, mappings=value_mappings(), color={"mode": "fixed", "fixedColor": "text"},
                 custom={"fillOpacity": 80, "lineWidth": 0},
                 options={"mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
                          "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                          "tooltip": {"mode": "single", "sort": "none"}})


def _figures_table(title: str, where: str, group_by: str, w: int, link: bool = False) -> Panel:
    overrides = [
        _by_name("utilization", ("displayName", "Utilization"), ("unit", "percentunit"), ("min", 0), ("max", 1),
                 PERCENT_GAUGE),
        _by_name("availability", ("displayName", "Availability"), ("unit", "percentunit"), ("min", 0), ("max", 1),
                 PERCENT_GAUGE),
        _by_name("free_h", ("displayName", "Free capacity (idle h)"), ("unit", "h"), ("decimals", 1),
                 ("color", {"mode": "fixed", "fixedColor": COLOURS[State.IDLE]}), COLOUR_CELL),
    ]
    if link:
        overrides.append(_machine_link())
    return Panel("table", title, [InfluxQL(q.figures(where, group_by), format="table")], w=w, h=9,
                 description=("Over the time range. Known time = total - offline. Utilization = busy / known; "
                              "availability = (busy + idle) / known; free capacity = idle hours."),
                 decimals=1, overrides=overrides, options=_table_options(),
                 transformations=[_organize(["Time"], {})])


def _machine_link() -> JSON:
    url = f"/d/{DETAIL_UID}?var-machine=${{__value.raw}}&${{__url_time_range}}"
    return _by_name("machine", ("links", [{"title": "Machine detail", "targetBlank": False, "url": url}]))


# -- fleet -------------------------------------------------------------------------------------

def fleet(settings: DashboardSettings) -> Board:
    where, window = q.FLEET_WHERE, settings.current_window
    variables = [
        datasource_variable(settings.datasource_uid, settings.datasource_name),
        query_variable("plant", "Plant", q.tag_values("plant"), VAR_DATASOURCE),
        query_variable("line", "Line", q.tag_values("line", '"plant" =~ /^$plant$/'), VAR_DATASOURCE),
        query_variable("machine", "Machine", q.tag_values("machine", '"plant" =~ /^$plant$/ AND "line" =~ /^$line$/'),
                       VAR_DATASOURCE),
    ]
    idle = {"mode": "fixed", "fixedColor": COLOURS[State.IDLE]}
    rows = [
        Row((
            Panel("stat", "Idle now", [InfluxQL(q.idle_now_count(where, window))], w=4, h=8,
                  description="Machines whose current state is idle: capacity that could be shared now.",
                  color=idle, no_value="0", options=_stat_options(None, "background")),
            Panel("table", "Idle now: machines", [InfluxQL(q.idle_now_list(where, window), format="table")], w=6, h=8,
                  description="Machines idle now and since when.",
                  overrides=[_by_name("Idle since", ("unit", "dateTimeFromNow")), _machine_link()],
                  options=_table_options(), transformations=[_organize(["code"], {"Time": "Idle since"})]),
            Panel("table", "Current state", [InfluxQL(q.current_state(where, window), format="table")], w=14, h=8,
                  description="Every machine's current state, since when, and why (the rule or value that caused it).",
                  mappings=value_mappings(),
                  overrides=[_by_name("state", COLOUR_CELL), _by_name("Since", ("unit", "dateTimeFromNow")),
                             _machine_link()],
                  options=_table_options(),
                  transformations=[_organize(["code"], {"Time": "Since"})]),
        )),
        Row((
            _figures_table("Per machine", where, "machine", w=14, link=True),
            _figures_table("Per line", where, "line", w=10),
        )),
        Row((_timeline("State timeline", where, h=12,
                       description="Each machine's state changes in the range (colours as everywhere)."),)),
    ]
    title = "Fleet availability"
    return Board(FLEET_UID, title, dashboard(
        uid=FLEET_UID, title=title, tags=TAGS, rows=rows, datasource=VAR_DATASOURCE, variables=variables,
        description="Live state, utilization, availability and free capacity of all machines.",
        time_from="now-24h", refresh=settings.refresh))


# -- machine detail ----------------------------------------------------------------------------

def machine_detail(settings: DashboardSettings) -> Board:
    where = q.MACHINE_WHERE
    variables = [
        datasource_variable(settings.datasource_uid, settings.datasource_name),
        query_variable("machine", "Machine", q.tag_values("machine"), VAR_DATASOURCE, multi=False, include_all=False),
    ]
    figures = q.figures(where, None)
    percent: JSON = {"mode": "fixed", "fixedColor": COLOURS[State.BUSY]}
    rows = [
        Row((
            Panel("stat", "Current state", [InfluxQL(q.current_state(where, settings.current_window), format="table")],
                  w=12, h=5, description="The state now and the reason for it.", mappings=value_mappings(),
                  color={"mode": "fixed", "fixedColor": "transparent"},
                  options=_stat_options("(state|reason)", "background", "value_and_name")),
            Panel("stat", "Utilization", [InfluxQL(figures, format="table")], w=4, h=5, unit="percentunit",
                  decimals=1, description="busy / (total - offline) over the range.", color=percent,
                  options=_stat_options("utilization")),
            Panel("stat", "Availability", [InfluxQL(figures, format="table")], w=4, h=5, unit="percentunit",
                  decimals=1, description="(busy + idle) / (total - offline) over the range.", color=percent,
                  options=_stat_options("availability")),
            Panel("stat", "Free capacity", [InfluxQL(figures, format="table")], w=4, h=5, unit="h", decimals=1,
                  description="Idle hours over the range.",
                  color={"mode": "fixed", "fixedColor": COLOURS[State.IDLE]}, options=_stat_options("free_h")),
        )),
        Row((_timeline("State timeline", where, h=5, description="State changes in the range."),)),
        Row((
            Panel("bargauge", "Time in each state", [InfluxQL(q.hours_in_state(where), format="table")], w=8, h=9,
                  unit="h", decimals=1, min=0, description="Hours in each state over the range.",
                  overrides=colour_overrides(), transformations=[_organize(["Time"], {})],
                  options={"reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""},
                           "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True}),
            Panel("timeseries", "Time in state over time", [InfluxQL(q.hours_in_state_over_time(where))], w=16, h=9,
                  unit="h", min=0, description="Hours in each state per time bucket (at least the 1 m roll-up).",
                  interval="1m", overrides=colour_overrides(),
                  custom={"drawStyle": "bars", "fillOpacity": 90, "lineWidth": 0,
                          "stacking": {"mode": "normal", "group": "A"}},
                  options={"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                           "tooltip": {"mode": "multi", "sort": "none"}}),
        )),
        Row((
            Panel("table", "Last state changes", [InfluxQL(q.last_changes(where), format="table")], w=24, h=10,
                  description="Newest first: the state entered and why, and how long the state before it lasted.",
                  mappings=value_mappings(),
                  overrides=[_by_name("To", COLOUR_CELL), _by_name("From", COLOUR_CELL),
                             _by_name("From lasted", ("unit", "s"), ("decimals", 0))],
                  options=_table_options(),
                  transformations=[_organize([], {"Time": "Changed at", "state": "To", "reason": "Reason",
                                                  "previous": "From", "previous_s": "From lasted"})]),
        )),
    ]
    title = "Machine detail"
    return Board(DETAIL_UID, title, dashboard(
        uid=DETAIL_UID, title=title, tags=TAGS, rows=rows, datasource=VAR_DATASOURCE, variables=variables,
        description="One machine: state timeline, time in each state, last changes with reasons and durations.",
        time_from="now-24h", refresh=settings.refresh,
        links=[{"type": "dashboards", "title": "Fleet", "tags": TAGS, "asDropdown": True, "includeVars": False,
                "keepTime": True, "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}]))


# -- capacity sharing --------------------------------------------------------------------------

def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if len(slug) > 30:  # Grafana uids are at most 40 characters
        slug = slug[:21] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return slug


def _label(machine: Machine) -> str:
    return " · ".join(p for p in (machine.name or machine.id, machine.kind, machine.line) if p)


HOUR_OF_WEEK_RANGE = "28d"


def _hour_of_week(where: str) -> Panel:
    """Usual free machines per hour of the week (Mon 00 .. Sun 23), from the hourly roll-ups of the
    last four weeks: per machine and hour of the week, idle / known seconds (the collector's
    forecast share, with every week weighted alike), summed over the machines. InfluxQL cannot
    take a time apart, so Grafana folds the hours into the week: ``formatTime`` to "E HH" (ISO
    weekday, hour; in the board's time zone, the forecast's), then ``groupBy`` twice."""
    share = "share (sum)"
    return Panel(
        "barchart", "Usually free, by hour of the week", [InfluxQL(q.hourly_idle_per_machine(where), format="table")],
        w=24, h=8, decimals=1, min=0, time_from=HOUR_OF_WEEK_RANGE,
        description=("Expected number of shared machines idle in each hour of the week (1 = Monday, 00-23), from "
                     "the last four weeks: per machine, idle / known time in that hour, summed over machines. "
                     "The same share as the collector's free-window forecast (/capacity), with all weeks equal."),
        color={"mode": "shades", "fixedColor": COLOURS[State.IDLE]},
        options={"xField": "Time", "colorByField": share, "orientation": "vertical", "showValue": "never",
                 "xTickLabelSpacing": 100, "barWidth": 0.97, "groupWidth": 0.7,
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                 "tooltip": {"mode": "single", "sort": "none"}},
        transformations=[
            {"id": "formatTime", "options": {"timeField": "Time", "outputFormat": "E HH", "useTimezone": True}},
            {"id": "groupBy", "options": {"fields": {
                "Time": {"operation": "groupby", "aggregations": []},
                "machine": {"operation": "groupby", "aggregations": []},
                "idle_s": {"operation": "aggregate", "aggregations": ["sum"]},
                "known_s": {"operation": "aggregate", "aggregations": ["sum"]}}}},
            {"id": "calculateField", "options": {"mode": "binary", "alias": "share", "replaceFields": False,
                                                 "binary": {"left": "idle_s (sum)", "operator": "/",
                                                            "right": "known_s (sum)"}}},
            {"id": "groupBy", "options": {"fields": {
                "Time": {"operation": "groupby", "aggregations": []},
                "share": {"operation": "aggregate", "aggregations": ["sum"]}}}},
            {"id": "sortBy", "options": {"sort": [{"field": "Time", "desc": False}]}},
        ])


def capacity(settings: DashboardSettings, title_scope: str, uid: str, machines: list[Machine],
             timezone: str = "browser") -> Board:
    """A board for sharing outside the company: only ``machines`` (all public) appear, by name;
    the filter is written into every query; no reasons, no raw signals, no variables. Its time
    zone is the forecast's (``capacity.timezone``), so its hours of the week are the same."""
    window = settings.current_window
    where = q.machines_where([m.id for m in machines])
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in machines:
        groups[(m.line, m.kind)].append(m.id)
    names = {m.id: {"text": _label(m), "index": i} for i, m in enumerate(sorted(machines, key=lambda m: m.id))}
    machine_names = _by_name("machine", ("mappings", [{"type": "value", "options": names}]),
                             ("displayName", "Machine"))

    def group_targets(make: Any) -> list[InfluxQL]:
        return [InfluxQL(make(q.machines_where(ids)), alias=" · ".join(p for p in key if p) or "machines")
                for key, ids in sorted(groups.items())]

    idle: JSON = {"mode": "fixed", "fixedColor": COLOURS[State.IDLE]}
    bar_options: JSON = {"reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""},
                         "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True}
    rows = [
        Row((
            Panel("stat", "Free now", [InfluxQL(q.idle_now_count(where, window))], w=6, h=7,
                  description="Shared machines that are idle now and could take work.", color=idle, no_value="0",
                  options=_stat_options(None, "background")),
            Panel("table", "Free right now", [InfluxQL(q.idle_now_list(where, window), format="table")], w=18, h=7,
                  description="Which shared machines are idle now, and since when.",
                  overrides=[machine_names, _by_name("Free since", ("unit", "dateTimeFromNow"))],
                  options=_table_options(), transformations=[_organize(["code"], {"Time": "Free since"})]),
        )),
        Row((
            Panel("bargauge", "Free now, per line and machine type",
                  group_targets(lambda w: q.idle_now_count(w, window)), w=12, h=8, decimals=0, min=0,
                  description="Idle machines now, per line and machine type.", color=idle, options=bar_options),
            Panel("bargauge", "Idle hours over the range, per line and machine type", group_targets(q.idle_hours),
                  w=12, h=8, unit="h", decimals=1, min=0,
                  description="Free capacity: hours the shared machines stood idle in the range.",
                  color=idle, options=bar_options),
        )),
        Row((_hour_of_week(where),)),
        Row((Panel("table", "Shared machines now", [InfluxQL(q.current_state_public(where, window), format="table")],
                   w=24, h=8, description="Current state of every shared machine.", mappings=value_mappings(),
                   overrides=[_by_name("state", COLOUR_CELL), machine_names,
                              _by_name("Since", ("unit", "dateTimeFromNow"))],
                   options=_table_options(), transformations=[_organize(["code"], {"Time": "Since"})]),)),
    ]
    title = f"Free capacity · {title_scope}"
    ds: JSON = {"type": "influxdb", "uid": settings.datasource_uid}
    return Board(uid, title, dashboard(
        uid=uid, title=title, tags=[*TAGS, "capacity-sharing"], rows=rows, datasource=ds, variables=[],
        description="Idle capacity of the shared machines, for partners outside the company.",
        time_from="now-7d", refresh=settings.refresh, timezone=timezone), shared=True)


def capacity_boards(config: Config, settings: DashboardSettings) -> list[Board]:
    scopes: dict[tuple[str, ...], list[Machine]] = defaultdict(list)
    for m in config.machines:
        if not m.public:
            continue
        plant = m.plant or config.site.plant
        scopes[(plant,) if settings.share_by == "plant" else (plant, m.line)].append(m)
    boards, used = [], set()
    for scope, machines in sorted(scopes.items()):
        uid = f"capacity-{_slug('-'.join(scope))}"
        if uid in used:  # two names with the same slug ("Line A" and "line-a"): keep uids apart
            uid = f"capacity-{_slug('-'.join(scope))[:21]}-{hashlib.sha256(repr(scope).encode()).hexdigest()[:8]}"
        used.add(uid)
        boards.append(capacity(settings, " / ".join(p for p in scope if p), uid, machines,
                               "utc" if config.capacity.timezone == "UTC" else config.capacity.timezone))
    return boards


def build_boards(config: Config, settings: DashboardSettings | None = None) -> list[Board]:
    settings = settings or config.dashboards
    return [fleet(settings), machine_detail(settings), *capacity_boards(config, settings)]
