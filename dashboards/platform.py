"""The platform's board: free capacity across plants, from the history the plants' platform outputs
write into VictoriaMetrics (``outputs: [{api: victoriametrics, machines: {public: true},
drop_fields: [reason]}]``), so it holds public machines only and never a reason.

Built with grafana-foundation-sdk's builders (the SDK has a Prometheus query model, which
VictoriaMetrics answers; the plant boards use InfluxQL, which it has not, so they keep
``dashboards/grafana.py``). VictoriaMetrics names each field ``<measurement>_<field>`` and keeps
the tags as labels: ``machine_state_state_code{plant, line, machine}`` (one sample per state
change: 0 offline, 1 busy, 2 idle, 3 setup, 4 down) and ``machine_availability_<state>_s`` (the
roll-ups). A machine's state at a time is its last change before it, looked up over
``WINDOW`` (``last_over_time``), as the plant boards' current-state panels do.

The board depends on no plant's config: ``collector dashboards platform`` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, statetimeline, table
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from collector.core.model import State
from dashboards.states import COLOURS, ORDER

UID = "platform-capacity"
TITLE = "Free capacity across plants"
DATASOURCE_UID = "platform-victoriametrics"
WINDOW = "30d"  # how far back a machine's last state change is looked for
JSON_DIR = Path(__file__).resolve().parent / "json-platform"
DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
PLANTS = 'plant=~"$plant"'
STATE = f"machine_state_state_code{{{PLANTS}}}"


def _hours(state: State) -> str:
    return f"sum_over_time(machine_availability_{state.value}_s{{{PLANTS}}}[$__range])"


QUERIES: dict[str, str] = {
    # a series per plant, 0 when none of its machines is idle (`== bool` keeps every machine)
    "free_now": f"sum by (plant) (last_over_time({STATE}[{WINDOW}]) == bool {State.IDLE.code})",
    "current": f"last_over_time({STATE}[{WINDOW}])",
    "idle_hours": f"sum by (plant) ({_hours(State.IDLE)}) / 3600",
    # busy / known time (all but offline), per machine, over the board's range
    "utilization": (f"sum by (plant, machine) ({_hours(State.BUSY)}) / sum by (plant, machine) ("
                    + " + ".join(_hours(s) for s in (State.BUSY, State.IDLE, State.SETUP, State.DOWN)) + ")"),
    "timeline": f"last_over_time({STATE}[{WINDOW}])",
}


def _query(key: str, *, instant: bool, legend: str = "", fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(QUERIES[key]).datasource(DS).ref_id(key)
    q = q.instant() if instant else q.range()
    if legend:
        q = q.legend_format(legend)
    return q.format(fmt) if fmt is not None else q


def _state_mappings() -> list[models.ValueMapping]:
    return [models.ValueMap(options={str(s.code): models.ValueMappingResult(text=s.value, color=COLOURS[s], index=i)
                                     for i, s in enumerate(ORDER)})]


def _grid(x: int, y: int, w: int, h: int) -> models.GridPos:
    return models.GridPos(x=x, y=y, w=w, h=h)


def build() -> dict[str, Any]:
    """The board as Grafana's JSON model."""
    plant = (dashboard.QueryVariable("plant").label("Plant").datasource(DS)
             .query({"query": "label_values(machine_state_state_code, plant)", "refId": "plants"})
             .multi(True).include_all(True).all_value(".*")
             .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
             .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(models.VariableSort.ALPHABETICAL_ASC))
    source = (dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
              .current(models.VariableOption(selected=True, text="Platform (VictoriaMetrics)", value=DATASOURCE_UID)))
    free_now = (stat.Panel().title("Free now, per plant").datasource(DS).grid_pos(_grid(0, 0, 8, 6))
                .description("Public machines idle now, per plant (their last state change is to idle).")
                .with_target(_query("free_now", instant=True, legend="{{plant}}"))
                .color_mode(common_models.BigValueColorMode.VALUE).graph_mode(common_models.BigValueGraphMode.NONE)
                .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                .decimals(0).min(0))
    idle = (bargauge.Panel().title("Idle hours over the range, per plant").datasource(DS).grid_pos(_grid(8, 0, 8, 6))
            .description("Hours the public machines were idle in the board's time range, summed per plant "
                         "(from the per-minute roll-ups).")
            .with_target(_query("idle_hours", instant=True, legend="{{plant}}")).unit("h").decimals(1).min(0)
            .orientation(common_models.VizOrientation.HORIZONTAL))
    utilization = (bargauge.Panel().title("Utilization per public machine").datasource(DS)
                   .grid_pos(_grid(16, 0, 8, 6))
                   .description("Busy / known time (all but offline) over the board's time range.")
                   .with_target(_query("utilization", instant=True, legend="{{plant}} / {{machine}}"))
                   .unit("percentunit").min(0).max(1).orientation(common_models.VizOrientation.HORIZONTAL))
    current = (table.Panel().title("Current state of every public machine").datasource(DS)
               .grid_pos(_grid(0, 6, 24, 8))
               .description("Each public machine's last state change, by plant and line.")
               .with_target(_query("current", instant=True, fmt=PromQueryFormat.TABLE))
               .mappings(_state_mappings())
               .with_transformation(models.DataTransformerConfig(id_val="organize", options={
                   "excludeByName": {"Time": True, "__name__": True, "db": True},
                   "renameByName": {"Value": "state"}, "indexByName": {}})))
    timeline = (statetimeline.Panel().title("State timeline").datasource(DS).grid_pos(_grid(0, 14, 24, 10))
                .with_target(_query("timeline", instant=False, legend="{{plant}} / {{machine}}"))
                .mappings(_state_mappings()).show_value(common_models.VisibilityMode.NEVER))
    board = (dashboard.Dashboard(TITLE).uid(UID).tags(["machine-availability", "platform"])
             .description("The platform's view: every plant's public machines, from the plants' platform outputs "
                          "into VictoriaMetrics. Private machines and reasons never reach it.")
             .timezone("browser").time("now-24h", "now").refresh("30s").editable()
             .tooltip(models.DashboardCursorSync.CROSSHAIR)
             .with_variable(source).with_variable(plant))
    for panel in (free_now, idle, utilization, current, timeline):
        board = board.with_panel(panel)
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def write(out: Path = JSON_DIR) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{UID}.json"
    text = render()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path
