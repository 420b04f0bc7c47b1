"""The platform's board (dashboards/platform.py): the committed JSON is what the generator writes,
it reads back through Grafana's own models unchanged, and every query runs against a real
VictoriaMetrics holding a known history of two plants, written as a platform output sends it
(the collector's tracker and line protocol, then the output's selection: public machines only,
no reason), returning the numbers computed by hand. Grafana's variables are substituted as its
Prometheus data source does."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest

from collector.configfile import load_config_text
from collector.core.model import State
from collector.influx.config import OutputSettings
from collector.influx.selection import Selection
from dashboards import platform
from tests.fixtures.influxdb import VictoriaMetrics
from tests.test_dashboards_grafana_schema import round_trip
from tests.test_dashboards_queries import CONFIG, MIN, history, interpolate

# The history of tests/test_dashboards_queries.py (hand-computed there), as a platform gets it:
# p1's m1 (public): 30 min busy, 20 idle, 10 down in [T0, T0+60m); m2 (p1): not public; m3 (p1,
# public): idle since T0-10m; m4 (p2, public): busy the whole hour.
PUBLIC = {"m1", "m3", "m4"}
ALL = {"plant": ["$__all"]}


def test_committed_board_is_up_to_date() -> None:
    """Test that dashboards/json-platform/ holds what `collector dashboards platform` writes."""
    path = platform.JSON_DIR / f"{platform.UID}.json"
    assert path.read_text(encoding="utf-8") == platform.render(), "stale: run `collector dashboards platform`"


def test_board_survives_grafanas_models() -> None:
    """Test that the board (built with the SDK's builders) reads back through Grafana's models unchanged."""
    assert round_trip(platform.build()) == []


def test_board_names_no_machine_and_queries_one_data_source() -> None:
    """Test that the board filters nothing by machine (the platform output chose what arrives) and
    that every target uses the data source variable."""
    board = platform.build()
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert "machine=" not in target["expr"] and 'plant=~"$plant"' in target["expr"]


class Runner:
    def __init__(self, vm: VictoriaMetrics, t0: int) -> None:
        self.vm, self.t0 = vm, t0
        self.board = platform.build()
        self.defs = {v["name"]: v for v in self.board["templating"]["list"]}
        self.at_s = (t0 + 60 * MIN) / 1e9 - 0.001  # the hour [T0, T0+60m): windows are (t - range, t]

    def expr(self, title: str) -> str:
        (panel,) = [p for p in self.board["panels"] if p["title"] == title]
        return str(panel["targets"][0]["expr"])

    def text(self, expr: str, variables: dict[str, list[str]]) -> str:
        expr = expr.replace("$__range", "3600s")
        return interpolate(expr, variables, self.defs, start_ms=self.t0 // 10**6, end_ms=int(self.at_s * 1000))

    def instant(self, title: str, variables: dict[str, list[str]]) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": self.text(self.expr(title), variables), "time": f"{self.at_s:.3f}"})
        with urllib.request.urlopen(f"{self.vm.url}/api/v1/query?{query}", timeout=10) as r:
            data = json.loads(r.read())
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def by(self, title: str, label: str, variables: dict[str, list[str]] | None = None) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.instant(title, variables or ALL)}


@pytest.fixture
def runner(victoria_metrics: VictoriaMetrics) -> Runner:
    import time

    t0 = (time.time_ns() // 3600_000_000_000) * 3600_000_000_000 - 3 * 3600_000_000_000
    config = load_config_text(CONFIG).config
    public = {m.id for m in config.machines if m.public}
    assert public == PUBLIC
    output = OutputSettings(name="platform", url=victoria_metrics.url, api="victoriametrics",
                            machines={"public": True}, drop_fields=["reason"])
    lines, unreadable = Selection(output, public.__contains__).apply(history(t0).splitlines())
    assert unreadable == 0 and not any("m2" in line.split(" ")[0] for line in lines)
    request = urllib.request.Request(f"{victoria_metrics.url}/write", data="\n".join(lines).encode(), method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    victoria_metrics.flush()
    return Runner(victoria_metrics, t0)


def test_plant_variable_lists_the_plants(runner: Runner) -> None:
    """Test that the plant variable's `label_values` lists both plants."""
    query = runner.defs["plant"]["query"]["query"]
    metric = query.split("(")[1].split(",")[0]
    url = f"{runner.vm.url}/api/v1/label/plant/values?" + urllib.parse.urlencode({"match[]": metric})
    with urllib.request.urlopen(url, timeout=10) as r:
        assert json.loads(r.read())["data"] == ["p1", "p2"]


def test_free_now_and_current_state(runner: Runner) -> None:
    """Test "free now" per plant (0 for a plant with none idle) and every public machine's
    current state, for all plants and for one; the private machine is nowhere."""
    assert runner.by("Free now, per plant", "plant") == {"p1": 1, "p2": 0}  # m3 idle; m1 down, m4 busy
    current = runner.by("Current state of every public machine", "machine")
    assert current == {"m1": State.DOWN.code, "m3": State.IDLE.code, "m4": State.BUSY.code}
    assert runner.by("Current state of every public machine", "machine", {"plant": ["p2"]}) == {"m4": State.BUSY.code}
    assert runner.by("Free now, per plant", "plant", {"plant": ["p1", "p2"]}) == {"p1": 1, "p2": 0}


def test_idle_hours_and_utilization_over_the_range(runner: Runner) -> None:
    """Test idle hours per plant and utilization per machine over the hour against hand-computed values."""
    idle = runner.by("Idle hours over the range, per plant", "plant")
    assert idle["p1"] == pytest.approx((20 + 60) / 60) and idle["p2"] == pytest.approx(0)
    utilization = runner.by("Utilization per public machine", "machine")
    assert utilization == pytest.approx({"m1": 30 / 60, "m3": 0.0, "m4": 1.0})
    assert set(runner.by("Utilization per public machine", "machine", {"plant": ["p1"]})) == {"m1", "m3"}


def test_state_timeline(runner: Runner) -> None:
    """Test that the timeline's range query gives each public machine's state at each step."""
    expr = runner.text(runner.expr("State timeline"), ALL)
    start = runner.t0 / 1e9
    query = urllib.parse.urlencode({"query": expr, "start": start + 600, "end": start + 2400, "step": "1800"})
    with urllib.request.urlopen(f"{runner.vm.url}/api/v1/query_range?{query}", timeout=10) as r:
        result = json.loads(r.read())["data"]["result"]
    steps = {s["metric"]["machine"]: [int(v) for _, v in s["values"]] for s in result}
    assert steps == {"m1": [State.BUSY.code, State.IDLE.code], "m3": [State.IDLE.code] * 2,
                     "m4": [State.BUSY.code] * 2}


def test_provisioning_files_match_the_board() -> None:
    """Test that the platform's provisioning names the board's data source uid (a Prometheus data
    source on ${VM_URL}) and loads the board from the path docs/SHARING.md mounts it at."""
    import yaml

    folder = platform.JSON_DIR.parent / "provisioning"
    [ds] = yaml.safe_load((folder / "platform" / "victoriametrics.yaml").read_text())["datasources"]
    assert (ds["uid"], ds["type"], ds["url"]) == (platform.DATASOURCE_UID, "prometheus", "${VM_URL}")
    assert platform.build()["templating"]["list"][0]["current"]["value"] == platform.DATASOURCE_UID
    [provider] = yaml.safe_load((folder / "platform-boards" / "platform.yaml").read_text())["providers"]
    sharing = (platform.JSON_DIR.parent.parent / "docs" / "SHARING.md").read_text()
    assert f"dashboards/json-platform:{provider['options']['path']}" in sharing
