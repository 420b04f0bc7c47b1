"""Small typed builders for the parts of Grafana's dashboard JSON model these boards use.

Plain dataclasses rather than grafana-foundation-sdk: the SDK has no InfluxDB query type and
the model subset here is small; the structure test (tests/test_dashboards_json.py) checks the
output against what Grafana's schema requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x dashboard schema
GRID_WIDTH = 24


@dataclass(frozen=True, slots=True)
class InfluxQL:
    """A raw InfluxQL target (the InfluxDB data source in InfluxQL mode)."""

    query: str
    alias: str = ""
    format: Literal["time_series", "table"] = "time_series"

    def to_json(self, ref_id: str, datasource: JSON) -> JSON:
        target: JSON = {"refId": ref_id, "datasource": datasource, "rawQuery": True,
                        "query": self.query, "resultFormat": self.format}
        if self.alias:
            target["alias"] = self.alias
        return target


@dataclass(slots=True)
class Panel:
    type: Literal["table", "stat", "state-timeline", "bargauge", "barchart", "timeseries", "text"]
    title: str
    targets: list[InfluxQL]
    w: int
    h: int
    description: str = ""
    unit: str | None = None
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    mappings: list[JSON] = field(default_factory=list)
    overrides: list[JSON] = field(default_factory=list)
    options: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)
    color: JSON | None = None
    no_value: str | None = None
    transformations: list[JSON] = field(default_factory=list)
    interval: str | None = None
    time_from: str | None = None  # the panel's own range (e.g. "28d"), whatever the board's

    def to_json(self, panel_id: int, x: int, y: int, datasource: JSON) -> JSON:
        defaults: JSON = {"mappings": self.mappings, "custom": self.custom}
        for key, value in (("unit", self.unit), ("decimals", self.decimals), ("min", self.min),
                           ("max", self.max), ("color", self.color), ("noValue", self.no_value)):
            if value is not None:
                defaults[key] = value
        panel: JSON = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "gridPos": {"x": x, "y": y, "w": self.w, "h": self.h},
            "datasource": datasource,
            "targets": [t.to_json(chr(ord("A") + i), datasource) for i, t in enumerate(self.targets)],
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
            "transformations": self.transformations,
        }
        if self.interval:
            panel["interval"] = self.interval
        if self.time_from:
            panel["timeFrom"] = self.time_from
        return panel


@dataclass(frozen=True, slots=True)
class Row:
    """Panels side by side; a row ends where the widest 24-column line fills."""

    panels: tuple[Panel, ...]


def datasource_variable(default_uid: str, default_name: str, name: str = "datasource",
                        label: str = "Data source") -> JSON:
    """Any InfluxDB data source; the provisioned one is selected when the board opens."""
    return {"type": "datasource", "name": name, "label": label, "query": "influxdb",
            "current": {"selected": True, "text": default_name, "value": default_uid},
            "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []}


def query_variable(name: str, label: str, query: str, datasource: JSON, *,
                   multi: bool = True, include_all: bool = True) -> JSON:
    variable: JSON = {"type": "query", "name": name, "label": label, "query": query,
                      "datasource": datasource, "refresh": 2, "sort": 1, "hide": 0, "regex": "",
                      "multi": multi, "includeAll": include_all, "options": []}
    if include_all:
        # `.*` rather than the list of all values: also matches points whose tag is absent.
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def layout(rows: list[Row], datasource: JSON) -> list[JSON]:
    """Place rows top to bottom, panels left to right; ids count from 1 in order."""
    out: list[JSON] = []
    y = 0
    for row in rows:
        x, height = 0, 0
        for panel in row.panels:
            if x + panel.w > GRID_WIDTH:
                y, x, height = y + height, 0, 0
            out.append(panel.to_json(len(out) + 1, x, y, datasource))
            x += panel.w
            height = max(height, panel.h)
        y += height
    return out


def dashboard(*, uid: str, title: str, description: str, tags: list[str], rows: list[Row], datasource: JSON,
              variables: list[JSON], time_from: str, refresh: str, links: list[JSON] | None = None,
              timezone: str = "browser") -> JSON:
    # No "id": Grafana assigns it; the uid identifies the board across instances.
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "timezone": timezone,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": links or [],
        "panels": layout(rows, datasource),
    }
