"""The /capacity page in a real browser (Debian's chromium, headless): it shows every public
machine and no other, free ones first, and follows a state change within a few seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.browser import chromium
from tests.capacity_helpers import PRIVATE_ID, PRIVATE_STRINGS, PUBLIC, plant_running
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto


async def test_page_shows_public_machines_and_follows_a_change(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that the page lists exactly the public machines, the idle one first, shows no trace
    of the non-public machine, and shows a state change within 6 s (it polls every 2 s)."""
    async with plant_running(mosquitto, tmp_path, feed=False) as plant:
        plant.set_state("pub-lathe", exec="ACTIVE")
        plant.set_state("pub-mill", exec="READY")
        plant.set_state(PRIVATE_ID, probe=5)
        await until(lambda: plant.engine.snapshot()["pub-mill"].state.value == "idle", 10, "mill idle")
        with chromium() as driver:
            await asyncio.to_thread(driver.get, f"{plant.base}/capacity")

            def rows() -> list[tuple[str, str]]:
                # One script call: the page re-renders its rows on every refresh, so elements
                # fetched one by one could go stale in between.
                found = driver.execute_script(
                    "return [...document.querySelectorAll('#machines tbody tr')]"
                    ".map(tr => [tr.dataset.machine, tr.querySelector('td[data-state]').dataset.state]);")
                return [(m, st) for m, st in found]

            async def shown() -> list[tuple[str, str]]:
                return await asyncio.to_thread(rows)

            async def wait_rows(expected: list[tuple[str, str]], within: float, what: str) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + within
                while (current := await shown()) != expected:
                    if loop.time() > deadline:
                        raise AssertionError(f"{what}: page shows {current}, expected {expected}")
                    await asyncio.sleep(0.1)

            await wait_rows([("pub-mill", "idle"), ("pub-lathe", "busy")], 15, "first render")
            heat_cells = await asyncio.to_thread(
                lambda: driver.execute_script("return document.querySelectorAll('#heat td.cell').length;"))
            assert heat_cells == 7 * 24
            source = await asyncio.to_thread(lambda: driver.page_source)
            assert "process: turning · max_diameter_mm: 300 · materials: steel" in source  # what a buyer filters on
            assert set(PUBLIC) <= {m for m, _ in await shown()}
            for secret in PRIVATE_STRINGS:
                assert secret not in source

            plant.set_state("pub-lathe", exec="READY")  # the lathe becomes free too
            await wait_rows([("pub-mill", "idle"), ("pub-lathe", "idle")], 6, "the lathe's change")
            plant.set_state("pub-mill", exec="ACTIVE")
            await wait_rows([("pub-lathe", "idle"), ("pub-mill", "busy")], 6, "the mill's change")
