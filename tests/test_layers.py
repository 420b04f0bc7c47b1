"""The import-linter contracts in pyproject.toml name every application module, so a new module
in collector/ cannot import the core's way up unnoticed, nor be imported by an adapter."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_application_module_is_named_in_the_layer_contracts() -> None:
    """Test that each module or package directly under collector/ (but the core) is forbidden to the
    core and to the adapters by the contracts `lint-imports` checks."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    app = {f"collector.{p.stem}" for p in (ROOT / "collector").iterdir()
           if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
           and p.stem not in ("__init__", "__main__", "core")}
    layered = [c for c in contracts if c["source_modules"] in (["collector.core"], ["adapters"])]
    assert len(layered) == 2
    for contract in layered:
        missing = app - set(contract["forbidden_modules"])
        assert not missing, f"{contract['name']}: add {sorted(missing)} to forbidden_modules"


def test_the_exchange_is_kept_apart_from_the_plant_side() -> None:
    """Test that a contract forbids the exchange (the platform side) the engine, the adapters and
    the influx package: it must run with none of a plant's machinery."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    exchange = [c for c in contracts if c["source_modules"] == ["collector.exchange"]]
    assert len(exchange) == 1
    assert {"adapters", "collector.engine", "collector.influx"} <= set(exchange[0]["forbidden_modules"])


def _contracts() -> list[dict[str, list[str]]]:
    contracts: list[dict[str, list[str]]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "importlinter"]["contracts"]
    return contracts


def _forbids(source: str, forbidden: str) -> bool:
    """Whether a contract forbids ``source`` (or a package holding it) to import ``forbidden``."""
    return any(forbidden in c["forbidden_modules"]
               and any(source == s or source.startswith(f"{s}.") for s in c["source_modules"])
               for c in _contracts())


def test_every_module_the_engine_is_made_of_is_kept_under_it() -> None:
    """Test that each application module collector/engine.py imports (a part split from it, or a
    layer below) is forbidden by a contract to import the engine back: a new part cannot grow a
    cycle unnoticed."""
    tree = ast.parse((ROOT / "collector" / "engine.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("collector.") and not node.module.startswith("collector.core")}
    assert {"collector.fleet", "collector.supervision", "collector.timelines"} <= imported
    unguarded = sorted(m for m in imported if not _forbids(m, "collector.engine"))
    assert not unguarded, f"name {unguarded} in a contract that forbids them collector.engine"


def test_the_commit_pipeline_reload_and_capacity_are_layered_by_contracts() -> None:
    """Test that contracts keep the commit pipeline under the engine, the reload driver over it
    (the diff below both), and the capacity package over the config, the machines and the
    trackers without importing the engine; and that check runs the engine's supervision loop
    (collector/supervision.py) rather than a copy of it."""
    assert _forbids("collector.commits", "collector.engine") and _forbids("collector.commits", "collector.tracker")
    assert _forbids("collector.engine", "collector.reload") and _forbids("collector.reconfig", "collector.reload")
    assert _forbids("collector.reconfig", "collector.engine")
    for below in ("collector.config", "collector.configfile", "collector.machines", "collector.tracker"):
        assert _forbids(below, "collector.capacity"), below
    assert _forbids("collector.capacity.service", "collector.engine")
    assert _forbids("collector.supervision", "collector.check")
    check = ast.parse((ROOT / "collector" / "check.py").read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == "collector.supervision" for n in ast.walk(check))
