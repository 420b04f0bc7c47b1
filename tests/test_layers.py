"""The import-linter contracts in pyproject.toml name every application module, so a new module
in collector/ cannot import the core's way up unnoticed, nor be imported by an adapter."""

from __future__ import annotations

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
