"""Evidence: whether a machine's source can tell silence from idle, as the capacity record says
it and as `collector check` warns about it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from collector.capacity.records import silence_detected_by
from collector.check import check
from collector.configfile import load_config, load_config_text
from tests.fixtures.mosquitto import Mosquitto

CONFIG = Path(__file__).resolve().parent.parent / "config"


@pytest.mark.parametrize(("file", "expected"), [
    ("example.yaml", {"simulated"}),  # and stale_after on some profiles
    ("mqtt-json-line.yaml", {"status_topic", "stale_after"}),
    ("sparkplug-plant.yaml", {"sparkplug_death"}),
    ("opcua-cnc-cell.yaml", {"opcua_session"}),
    ("mtconnect-agent.yaml", {"mtconnect_availability"}),
])
def test_the_examples_sources_tell_silence_from_idle(file: str, expected: set[str]) -> None:
    loaded = load_config(CONFIG / file)
    sources = {s.id: s for s in loaded.config.sources}
    for m in loaded.machines:
        found = set(silence_detected_by(m, sources[m.source]))
        assert expected <= found, m.info.id
        assert ("stale_after" in found) is (m.stale_after_s is not None)


BLIND = """
site: {{plant: p}}
sources:
  - id: gateways
    type: mqtt
    host: 127.0.0.1
    port: {port}
    subscriptions: [{{topic: "shop/{{machine}}/status", payload: json, signals: {{execution: exec}}}}]
  - id: hall
    type: mqtt
    host: 127.0.0.1
    port: {port}
    subscriptions: [{{topic: "hall/{{machine}}/status", payload: json, signals: {{execution: exec}}}}]
    status: [{{topic: "hall/{{machine}}/lwt"}}]
profiles:
  cnc: {{rules: [{{state: busy, when: "execution == 'ACTIVE'"}}, {{state: idle}}]}}
machines:
  - {{id: quiet-mill, source: gateways, profile: cnc}}
  - {{id: watched-mill, source: gateways, profile: cnc, stale_after: 30s}}
  - {{id: lwt-lathe, source: hall, profile: cnc}}
"""


@pytest.mark.integration
async def test_check_warns_about_a_source_that_cannot_tell_silence_from_idle(mosquitto: Mosquitto) -> None:
    """Test that a JSON publisher with no status topic and no stale_after is warned about, naming
    the machine, and that the machines with stale_after or a status topic are not."""
    loaded = load_config_text(BLIND.format(port=mosquitto.port))
    sources = {s.id: s for s in loaded.config.sources}
    assert {m.info.id: silence_detected_by(m, sources[m.source]) for m in loaded.machines} == {
        "quiet-mill": [], "watched-mill": ["stale_after"], "lwt-lathe": ["status_topic"]}
    out = io.StringIO()
    await check(loaded, 0.5, out)
    text = out.getvalue()
    warnings = [line for line in text.splitlines() if "cannot tell a silent machine" in line]
    # Only quiet-mill is named: said once when found, and again in the summary's problem list.
    assert warnings and all("source gateways" in w and "(quiet-mill)" in w for w in warnings), text
    assert "source hall: cannot tell" not in text
