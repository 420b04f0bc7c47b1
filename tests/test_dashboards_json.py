"""The committed dashboard JSON is up to date and has the structure Grafana's dashboard schema
requires; the capacity boards show only what the config marks public."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from collector.core.model import State
from dashboards.boards import DETAIL_UID, build_boards
from dashboards.build import JSON_DIR, SOURCE_CONFIG, load, stale_files, write
from dashboards.states import COLOURS

PANEL_TYPES = {"table", "stat", "state-timeline", "bargauge", "barchart", "timeseries", "text"}
# Not in InfluxDB 3.x's InfluxQL, or time-in-state computed the wrong way (issue 6).
FORBIDDEN = re.compile(r"\b(SLIMIT|SOFFSET|SAMPLE|SHOW DATABASES|ELAPSED|INTEGRAL)\b", re.IGNORECASE)
BUILTIN_MACROS = {"timeFilter", "__interval", "__interval_ms", "tag_machine", "__value", "__url_time_range"}


def committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(JSON_DIR.glob("*.json"))}


def test_committed_json_is_up_to_date() -> None:
    """Test that dashboards/json/ is exactly what the generator makes from config/example.yaml."""
    stale = stale_files(build_boards(load(SOURCE_CONFIG)), JSON_DIR)
    assert stale == [], f"stale dashboard JSON {stale}: run `collector dashboards build`"


def test_staleness_check_notices_a_change(tmp_path: Path) -> None:
    """Test that an edited or leftover file counts as stale, and that write() repairs both."""
    boards = build_boards(load(SOURCE_CONFIG))
    write(boards, tmp_path)
    (tmp_path / "machine-fleet.json").write_text("{}", encoding="utf-8")
    (tmp_path / "old-board.json").write_text("{}", encoding="utf-8")
    assert stale_files(boards, tmp_path) == ["machine-fleet.json", "old-board.json"]
    write(boards, tmp_path)
    assert stale_files(boards, tmp_path) == []


@pytest.fixture(params=sorted(p.name for p in JSON_DIR.glob("*.json")))
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((JSON_DIR / request.param).read_text(encoding="utf-8"))
    return data


def test_expected_boards_exist() -> None:
    """Test that the example plant yields the fleet, machine detail and its capacity board."""
    assert set(committed()) == {"machine-fleet.json", "machine-detail.json", "capacity-demo-plant.json"}


def test_dashboard_top_level(board: dict[str, Any]) -> None:
    """Test the dashboard fields Grafana requires: uid (8-40 chars), title, schemaVersion, time, templating."""
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,40}", board["uid"])
    assert board["title"] and isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "id" not in board  # Grafana assigns ids; boards are identified by uid
    assert set(board["time"]) == {"from", "to"}
    assert isinstance(board["templating"]["list"], list) and isinstance(board["panels"], list)


# Keys of Grafana's dashboard model (schemaVersion 39, the "dashboard" kind): objects in the
# JSON may use these and no others; the required ones must be there.
DASHBOARD_KEYS = {"id", "uid", "title", "description", "revision", "gnetId", "tags", "timezone", "editable",
                  "graphTooltip", "time", "timepicker", "fiscalYearStartMonth", "liveNow", "weekStart", "refresh",
                  "schemaVersion", "version", "panels", "templating", "annotations", "links", "snapshot"}
PANEL_KEYS = {"type", "id", "pluginVersion", "tags", "targets", "title", "description", "transparent", "datasource",
              "gridPos", "links", "repeat", "repeatDirection", "maxPerRow", "maxDataPoints", "transformations",
              "interval", "timeFrom", "timeShift", "hideTimeOverride", "libraryPanel", "options", "fieldConfig"}
VARIABLE_KEYS = {"type", "name", "label", "hide", "skipUrlSync", "description", "query", "datasource", "current",
                 "multi", "options", "refresh", "sort", "includeAll", "allValue", "regex"}
FIELD_CONFIG_KEYS = {"displayName", "displayNameFromDS", "description", "path", "writeable", "filterable", "unit",
                     "decimals", "min", "max", "mappings", "thresholds", "color", "links", "noValue", "custom"}
LINK_REQUIRED = {"title", "type", "icon", "tooltip", "tags", "asDropdown", "targetBlank", "includeVars", "keepTime"}
COLOR_MODES = {"thresholds", "palette-classic", "palette-classic-by-name", "fixed", "shades"}


def test_keys_follow_grafanas_dashboard_model(board: dict[str, Any]) -> None:
    """Test that dashboard, panel, variable, fieldConfig, link, mapping and transformation objects use only
    the keys Grafana's dashboard model defines, with the required ones present."""
    assert set(board) <= DASHBOARD_KEYS and {"schemaVersion", "templating", "annotations"} <= set(board)
    for link in board["links"]:
        assert LINK_REQUIRED <= set(link) and link["type"] in ("link", "dashboards")
    for var in board["templating"]["list"]:
        assert set(var) <= VARIABLE_KEYS and {"type", "name"} <= set(var)
        if "current" in var:
            assert {"text", "value"} <= set(var["current"])
    for panel in board["panels"]:
        assert set(panel) <= PANEL_KEYS, set(panel) - PANEL_KEYS
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] < 24
        defaults = panel["fieldConfig"]["defaults"]
        assert set(defaults) <= FIELD_CONFIG_KEYS, set(defaults) - FIELD_CONFIG_KEYS
        if "color" in defaults:
            assert defaults["color"]["mode"] in COLOR_MODES
        for mapping in defaults["mappings"]:
            assert mapping["type"] == "value"
            assert all(set(result) <= {"text", "color", "icon", "index"} for result in mapping["options"].values())
        for override in panel["fieldConfig"]["overrides"]:
            assert all(set(p) == {"id", "value"} for p in override["properties"])
        for transformation in panel["transformations"]:
            assert set(transformation) == {"id", "options"}


def test_panels_structure(board: dict[str, Any]) -> None:
    """Test panel types, unique ids, fieldConfig, targets with refIds and data source, and gridPos in the grid."""
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES
        assert set(panel["fieldConfig"]) == {"defaults", "overrides"}
        assert isinstance(panel["fieldConfig"]["defaults"]["mappings"], list)
        for override in panel["fieldConfig"]["overrides"]:
            assert set(override) == {"matcher", "properties"} and override["matcher"]["id"] == "byName"
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "xywh")
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0 and pos["x"] + pos["w"] <= 24
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "influxdb" and target["rawQuery"] is True
            assert target["resultFormat"] in ("time_series", "table")


def test_grid_has_no_overlaps(board: dict[str, Any]) -> None:
    """Test that no two panels' grid rectangles overlap."""
    def box(p: dict[str, Any]) -> tuple[int, int, int, int]:
        g = p["gridPos"]
        return g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]

    for a, b in combinations(board["panels"], 2):
        ax0, ay0, ax1, ay1 = box(a)
        bx0, by0, bx1, by1 = box(b)
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a['title']} overlaps {b['title']}"


def test_queries_stay_in_influxql_3_subset_and_use_defined_variables(board: dict[str, Any]) -> None:
    """Test that no query uses what InfluxDB 3.x lacks, and every $variable is defined or a Grafana macro."""
    defined = {v["name"] for v in board["templating"]["list"]} | BUILTIN_MACROS
    queries = [t["query"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    for query in queries:
        assert not FORBIDDEN.search(query), query
        for name in re.findall(r"\$\{?(\w+)", query):
            assert name in defined, f"undefined variable ${name} in {query}"


def _mapped_states(panel: dict[str, Any]) -> dict[str, str]:
    out = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        for key, entry in mapping["options"].items():
            out[key] = entry["color"]
    return out


def test_state_colours_are_fixed_everywhere(board: dict[str, Any]) -> None:
    """Test that every panel showing a state maps each state name and code to the same fixed colour."""
    expected = {s.value: c for s, c in COLOURS.items()} | {str(s.code): c for s, c in COLOURS.items()}
    for panel in board["panels"]:
        shows_state = any('"state"' in t["query"] for t in panel["targets"]) and panel["type"] != "bargauge"
        if shows_state and "count(" not in panel["targets"][0]["query"]:
            assert _mapped_states(panel) == expected, panel["title"]
        for override in panel["fieldConfig"]["overrides"]:
            name = override["matcher"]["options"]
            if name in {s.value for s in State}:
                [colour] = [p["value"]["fixedColor"] for p in override["properties"] if p["id"] == "color"]
                assert colour == COLOURS[State(name)], (panel["title"], name)


def test_datasource_variable_defaults_to_the_provisioned_source() -> None:
    """Test that the fleet and detail boards open on the configured data source uid."""
    settings = load(SOURCE_CONFIG).dashboards
    for name in ("machine-fleet.json", "machine-detail.json"):
        [var] = [v for v in committed()[name]["templating"]["list"] if v["type"] == "datasource"]
        assert var["query"] == "influxdb" and var["current"]["value"] == settings.datasource_uid


def test_links_point_at_existing_boards() -> None:
    """Test that data links to the machine detail board use its uid and its variable."""
    text = json.dumps(committed())
    for url in re.findall(r'"url": "(/d/[^"]+)"', text):
        assert url.startswith(f"/d/{DETAIL_UID}?var-machine=")


def test_capacity_board_shows_only_public_names() -> None:
    """Test that the capacity board has no variables, no reasons, no raw signals and no non-public machine."""
    config = load(SOURCE_CONFIG)
    board = committed()["capacity-demo-plant.json"]
    text = json.dumps(board)
    assert board["templating"]["list"] == []
    private = [m.id for m in config.machines if not m.public]
    public = [m.id for m in config.machines if m.public]
    assert private and public
    for machine_id in private:
        assert not re.search(rf"(?<![\w-]){re.escape(machine_id)}(?![\w-])", text), machine_id
    for machine_id in public:
        assert re.search(rf"[(|]{re.escape(machine_id)}[|)]", text), machine_id  # in the queries' machine regex
    assert "reason" not in text.lower()
    assert "machine_signal" not in text
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == config.dashboards.datasource_uid
            assert not re.search(r"\$(?!timeFilter)\w", target["query"]), target["query"]


def test_share_by_line_makes_one_board_per_line() -> None:
    """Test that share_by: line yields one capacity board per plant and line with public machines."""
    config = load(SOURCE_CONFIG)
    settings = config.dashboards.model_copy(update={"share_by": "line"})
    shared = [b for b in build_boards(config, settings) if b.shared]
    lines = sorted({m.line for m in config.machines if m.public})
    assert sorted(b.uid for b in shared) == [f"capacity-demo-plant-{line}" for line in lines]


PROVISIONING = JSON_DIR.parent / "provisioning"


@pytest.mark.parametrize("folder", ["datasources", "datasources-v1"])
def test_provisioned_datasource_matches_the_boards(folder: str) -> None:
    """Test that each data source file is InfluxQL, has the boards' uid and takes secrets from the environment."""
    import yaml

    [path] = sorted((PROVISIONING / folder).glob("*.yaml"))
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    settings = load(SOURCE_CONFIG).dashboards
    assert (ds["uid"], ds["name"], ds["type"]) == (settings.datasource_uid, settings.datasource_name, "influxdb")
    assert ds["jsonData"]["version"] == "InfluxQL" and ds["jsonData"]["dbName"] == "${INFLUX_DB}"
    assert ds["url"] == "${INFLUX_URL}"
    secrets = list(ds["secureJsonData"].values())
    assert secrets and all("${INFLUX_" in s for s in secrets)
    if folder == "datasources":
        assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
        assert ds["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"
    else:
        assert ds["user"] == "${INFLUX_USER}" and ds["secureJsonData"]["password"] == "${INFLUX_PASSWORD}"


def test_provisioned_dashboards_provider() -> None:
    """Test that the dashboard provider loads files into the configured folder from the path the README mounts."""
    import yaml

    doc = yaml.safe_load((PROVISIONING / "dashboards" / "availability.yaml").read_text())
    [provider] = doc["providers"]
    settings = load(SOURCE_CONFIG).dashboards
    assert provider["type"] == "file"
    assert (provider["folder"], provider["folderUid"]) == (settings.folder_title, settings.folder_uid)
    readme = (JSON_DIR.parent / "README.md").read_text()
    assert f"dashboards/json:{provider['options']['path']}" in readme


def test_capacity_uids_stay_unique_when_names_share_a_slug() -> None:
    """Test that lines whose names slug alike ("Line A", "line-a") still get distinct board uids."""
    from collector.configfile import load_config_text

    config = load_config_text("""
site: {plant: p}
sources: [{id: s, type: simulate}]
dashboards: {share_by: line}
machines:
  - {id: m1, line: Line A, public: true, source: s, profile: opc40001}
  - {id: m2, line: line-a, public: true, source: s, profile: opc40001}
""").config
    uids = [b.uid for b in build_boards(config) if b.shared]
    assert len(uids) == 2 and len(set(uids)) == 2 and all(len(u) <= 40 for u in uids)
