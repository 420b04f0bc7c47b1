"""``collector demo --plants N``: several simulated plants publish their offers to a mosquitto the
demo starts, and the exchange on it shows them all (collector/simulate/platform.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.configfile import load_config
from collector.simulate import platform
from tests.fixtures._proc import COLLECTOR, collector_env, first_match

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


def test_three_plants_show_in_one_exchange(tmp_path: Path) -> None:
    """Test that the platform demo's exchange lists three plants online with exactly their public
    machines (seven each, none of the private ones), each record marked simulated and with a
    forecast from its history, and that a search ranks machines of several plants."""
    public = sorted(m.info.id for m in load_config(EXAMPLE).machines if m.info.public)
    proc = subprocess.Popen([*COLLECTOR, "demo", "--plants", "3", "--history-weeks", "0.3", "--for", "90"],
                            cwd=tmp_path, env=collector_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        base = first_match(proc, r"exchange .*?(http://[\d.]+:\d+)/", "the demo served the exchange")
        deadline = time.monotonic() + 30
        while True:
            plants = httpx.get(f"{base}/api/v1/plants", timeout=10).json()
            if [(p["plant"], p["online"], p["offers"]) for p in plants] == [
                    (f"demo-plant-{n}", True, len(public)) for n in (1, 2, 3)]:
                break
            assert time.monotonic() < deadline, f"the exchange shows {plants}"
            time.sleep(0.2)  # polling the exchange until the deadline above
        response = httpx.get(f"{base}/api/v1/offers?limit=1000", timeout=10)
        offers: list[dict[str, Any]] = response.json()
        assert response.headers["x-total-count"] == str(3 * len(public))
        assert sorted((o["plant"], o["machine"]) for o in offers) == sorted(
            (f"demo-plant-{n}", m) for n in (1, 2, 3) for m in public)
        assert all(o["simulated"] is True and any(s is not None for s in o["forecast"]["idle_share"])
                   for o in offers)
        found = httpx.get(f"{base}/api/v1/search?capability.process=milling&hours=10", timeout=10).json()
        assert len({m["plant"] for m in found["machines"]}) >= 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_without_mosquitto_the_platform_demo_says_so(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Test that with no mosquitto to start, the platform demo names what is missing and exits 2."""
    monkeypatch.setattr(platform, "find_mosquitto", lambda: None)
    code = asyncio.run(platform.run_platform(load_config(EXAMPLE), 3, history_weeks=0,
                                             install_stop=lambda stop, duration: None, duration=1))
    assert code == 2
    assert "mosquitto is not installed" in capsys.readouterr().out
