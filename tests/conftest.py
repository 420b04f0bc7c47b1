"""Fixtures that start real services live in tests/fixtures/, one module per service; every
module there is loaded as a pytest plugin, so adding a service is adding a file."""

from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if not p.stem.startswith("_")
)

# Tests that use one of these start a real service (and may need its Debian package, installed
# by `./dev test` as root). They get the `integration` marker, so `pytest -m "not integration"`
# runs the rest in seconds, without root. Tests that start services by hand set
# `pytestmark = pytest.mark.integration` in their module.
SERVICE_FIXTURES = frozenset({"mosquitto", "mosquitto_tls", "nats", "influxd", "victoria_metrics", "opcua_server",
                              "machine_tools_server", "recording_proxy"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
