"""The end-to-end fuzzing campaign of bench/fuzz.py, small: hostile MQTT input through a real
mosquitto into a running `collector run` (writing to a real influxd) while a well-formed machine
keeps changing state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Starts real services (an OPC UA server, mosquitto, influxd or the collector): the slow tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_hostile_stream_leaves_the_collector_running_and_the_good_machine_exact() -> None:
    """Test that 3,000 hostile inputs of every kind crash nothing, stay within 150 MB, and that every
    state change the well-formed machine published (counted from the messages) is stored with its
    state, in order, and nothing else for it."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--inputs", "3000", "--rate", "2000",
                           "--seed", "7"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["inputs"] == 3000
    assert result["crashes"] == 0, result
    assert result["peak_rss_mb"] <= 150
    assert result["good_machine_changes_expected"] >= 3
    assert result["good_machine_changes_stored"] == result["good_machine_changes_expected"]
    assert result["good_machine_extra_rows"] == 0
    # Each kind of hostile input was seen and counted as what it is.
    for kind in ("malformed_json", "malformed_sparkplug", "future_timestamp", "too_old", "payload_too_large",
                 "wrong_type", "bad_timestamp"):
        assert result["bad_input"].get(kind, 0) > 0, kind
