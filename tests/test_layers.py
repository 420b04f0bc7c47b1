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
    for contract in contracts:
        missing = app - set(contract["forbidden_modules"])
        assert not missing, f"{contract['name']}: add {sorted(missing)} to forbidden_modules"
