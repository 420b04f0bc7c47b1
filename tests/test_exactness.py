"""The differential exactness harness, small: every scenario of bench/exactness.py at a size that
runs in seconds, against real mosquitto, `collector run` processes and influxd 1.6. The oracle
(tests.fixtures._exactness.py) computes the expected history from the generated messages alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures._exactness import SCENARIOS, run_scenario
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_influxdb_holds_exactly_the_history_the_messages_imply(scenario: str, mosquitto: Mosquitto, influxd: InfluxD,
                                                               tmp_path: Path) -> None:
    """Test that after the scenario (backlog, live, kill -9, broker restart, influxd outage, two shards)
    every state change the oracle expects is stored once, at its exact time, with its previous state,
    none else, and every whole roll-up adds up as the oracle says."""
    diff, kills = run_scenario(scenario, tmp_path, mosquitto, influxd, machines=12, messages=2400, kills=4, seed=7)
    assert diff.expected > 200
    assert diff.exact, diff
    assert diff.stored == diff.expected
    if diff.intervals_expected:
        assert diff.intervals_wrong == 0
    assert kills == (4 if scenario == "kills" else 0)
