"""The exchange's cross-plant page in a real browser (Debian's chromium, headless): every plant's
machines, free now first, free hours ahead, the capability filter, a plant going offline."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser import chromium
from tests.exchange_helpers import exchanges, offer, payload, status
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import wait_for
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration
ROWS = ("return [...document.querySelectorAll('#machines tbody tr')].map(tr => [tr.dataset.plant, "
        "tr.dataset.machine, tr.querySelector('td[data-state]').dataset.state, "
        "tr.querySelector('td[data-free]').dataset.free, tr.cells[7].textContent]);")
PLANTS = "return [...document.querySelectorAll('#plants tbody tr')].map(tr => [tr.dataset.plant, tr.dataset.online]);"


def test_page_shows_every_plant_filters_and_follows_a_plant_going_offline(mosquitto: Mosquitto,
                                                                           tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    publisher = Publisher(mosquitto)
    for plant, machine, state, share, caps in (
            ("north", "mill-5ax", "idle", 0.5, {"process": "milling", "max_diameter_mm": 400}),
            ("north", "lathe-2", "busy", 0.25, {"process": "turning"}),
            ("south", "mill-3ax", "busy", 0.75, {"process": "milling", "max_diameter_mm": 200})):
        publisher.publish(f"capacity/{plant}/{machine}", payload(offer(plant, machine, now, state=state, share=share,
                                                                       capabilities=caps)), retain=True)
    for plant in ("north", "south"):
        publisher.publish(f"capacity/{plant}/_status", status(plant, True, now), retain=True)
    with exchanges(mosquitto.port, tmp_path) as (ex,), chromium() as driver:
        driver.get(f"{ex.base}/")

        def rows() -> list[Any]:
            return list(driver.execute_script(ROWS))

        def wait_rows(expected: list[list[str]], what: str) -> None:
            try:
                wait_for(lambda: rows() == expected, 10, what)
            except TimeoutError:
                raise AssertionError(f"{what}: the page shows {rows()}, expected {expected}") from None

        wait_rows([["north", "mill-5ax", "idle", "true", "12.0"], ["north", "lathe-2", "busy", "false", "6.0"],
                   ["south", "mill-3ax", "busy", "false", "18.0"]], "first render")  # free now first; 24 h × share
        assert driver.execute_script(PLANTS) == [["north", "true"], ["south", "true"]]
        box = driver.find_element(By.ID, "filter")
        box.send_keys("capability.process=milling&capability.max_diameter_mm>=300", Keys.ENTER)
        wait_rows([["north", "mill-5ax", "idle", "true", "12.0"]], "the capability filter")
        box.clear()
        box.send_keys(Keys.ENTER)
        start = time.monotonic()
        publisher.publish("capacity/north/_status", status("north", False, now), retain=True)  # north's will
        wait_rows([["north", "lathe-2", "offline", "false", "6.0"], ["north", "mill-5ax", "offline", "false", "12.0"],
                   ["south", "mill-3ax", "busy", "false", "18.0"]], "north offline")
        assert time.monotonic() - start < 5  # the page polls every 2 s
        assert driver.execute_script(PLANTS) == [["north", "false"], ["south", "true"]]
        box.send_keys("capability.max_diameter_mm>=big", Keys.ENTER)
        wait_for(lambda: "expected a number" in driver.find_element(By.ID, "error").text, 10, "the filter's error")
    publisher.close()
