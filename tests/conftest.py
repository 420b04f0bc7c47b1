"""Fixtures that start real services live in tests/fixtures/, one module per service; every
module there is loaded as a pytest plugin, so adding a service is adding a file."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if not p.stem.startswith("_")
)
