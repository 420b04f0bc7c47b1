"""No trace of a machine without ``public: true`` leaves through any capacity channel: the API,
the page, the MQTT feed, the Grafana capacity board, or the profile database behind them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from collector.capacity.openapi import openapi
from dashboards.boards import capacity_boards
from tests.capacity_helpers import PREFIX, PRIVATE_ID, PRIVATE_STRINGS, PUBLIC, plant_running
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto
from tests.test_capacity_feed import Subscriber


async def test_no_non_public_machine_in_any_capacity_output(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that the non-public machine's id, name, kind, reason and signal appear in none of the
    capacity outputs, while it is tracked (down, with its reason) right next to the public ones
    and the same outputs do show the public machines."""
    outputs: dict[str, str] = {}
    sub = Subscriber(mosquitto)
    try:
        async with plant_running(mosquitto, tmp_path, period="1s") as plant:
            plant.set_state("pub-lathe", exec="READY")
            plant.set_state("pub-mill", exec="ACTIVE")
            plant.set_state(PRIVATE_ID, probe=5)
            await until(lambda: plant.engine.snapshot()[PRIVATE_ID].reason == "coolant leak on the secret line", 10,
                        "the private machine down, with its reason")
            await until(lambda: all(m in plant.capacity.store.buckets for m in PUBLIC), 10, "public roll-ups stored")
            await until(lambda: len({t for t, _, _ in sub.messages}) >= 3, 10, "feed messages")
            async with httpx.AsyncClient(base_url=plant.base) as client:
                for path in ("/api/v1/capacity", "/api/v1/capacity?kind=grinder", f"/api/v1/capacity/{PRIVATE_ID}",
                             "/api/v1/capacity/pub-lathe", "/api/v1/openapi.json", "/capacity",
                             "/shells", "/submodels", "/shells?idShort=hidden_grinder_77"):
                    outputs[f"GET {path}"] = (await client.get(path)).text
            boards = capacity_boards(plant.engine.config, plant.engine.config.dashboards)
            outputs["grafana capacity boards"] = json.dumps([b.json for b in boards])
            assert PRIVATE_ID not in plant.capacity.store.buckets
        outputs["mqtt feed"] = json.dumps([[t, m] for t, m, _ in sub.messages])
        files = sorted(tmp_path.glob("capacity.sqlite*"))  # noqa: ASYNC240 (a test, the loop has nothing else to do)
        outputs["profile database"] = b"".join(p.read_bytes() for p in files).decode("latin-1")
        outputs["openapi without token"] = json.dumps(openapi(False))
    finally:
        sub.close()

    for channel, text in outputs.items():
        for secret in PRIVATE_STRINGS:
            assert secret not in text, f"{secret!r} leaks through {channel}"
    assert all(m in outputs["GET /api/v1/capacity"] for m in PUBLIC)
    assert all(m in outputs["GET /shells"] and m in outputs["GET /submodels"] for m in PUBLIC)
    assert all(m in outputs["mqtt feed"] for m in PUBLIC) and f"{PREFIX}/" in outputs["mqtt feed"]
    assert all(m in outputs["grafana capacity boards"] for m in PUBLIC)
    assert "pub-lathe" in outputs["profile database"]
