"""Every board we generate read through Grafana's own models (grafana-foundation-sdk, generated
from the schemas Grafana itself validates dashboards with): a key Grafana does not know, on the
dashboard, a panel, its field config or its plugin's options, is dropped by those models, so a
board that survives the round trip unchanged has nothing Grafana would ignore or reject.

Why a round trip and not building the boards with the SDK's builders: the SDK has no InfluxDB
query model (the query part would stay ours), and the boards' generator is small and tested
for its queries against real influxd; reading its output through Grafana's models checks the
part we cannot run here (Grafana) without rewriting the part we can.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.build import JSON_DIR

plugins.register_default_plugins()  # panel options and field config decoded per panel type
BOARDS = sorted(JSON_DIR.glob("*.json"))


def _plain(value: Any) -> Any:
    """The SDK's objects as JSON values (its ``to_json`` leaves nested models as objects)."""
    return json.loads(json.dumps(value, default=lambda o: o.to_json() if hasattr(o, "to_json") else o.value))


def lost(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """What of ``ours`` Grafana's models did not keep: dropped keys and changed values (the
    models add their defaults; those are not ours and not compared)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key, value in ours.items():
            where = f"{path}.{key}"
            out += [f"{where}: unknown to Grafana"] if key not in theirs else lost(value, theirs[key], where)
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: {len(ours)} items, Grafana kept {len(theirs)}"]
        return [line for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for line in lost(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} read back as {theirs!r}"]


def round_trip(board: dict[str, Any]) -> list[str]:
    return lost(board, _plain(Dashboard.from_json(board).to_json()))


@pytest.mark.parametrize("path", BOARDS, ids=[p.stem for p in BOARDS])
def test_board_survives_grafanas_models(path: Any) -> None:
    """Test that the board reads back through Grafana's dashboard and panel models unchanged."""
    assert round_trip(json.loads(path.read_text(encoding="utf-8"))) == []


def test_a_misspelt_key_is_caught() -> None:
    """Test that the round trip catches what it is for: a dashboard key, a panel key and a panel
    option that Grafana does not know."""
    board = json.loads(BOARDS[0].read_text(encoding="utf-8"))
    board["refreshh"] = "5s"
    panel = next(p for p in board["panels"] if p.get("options"))
    panel["titel"] = "x"
    panel["options"]["colourMode"] = "background"
    problems = round_trip(board)
    assert ".refreshh: unknown to Grafana" in problems
    assert any(p.endswith(".titel: unknown to Grafana") for p in problems)
    assert any(p.endswith(".options.colourMode: unknown to Grafana") for p in problems)
