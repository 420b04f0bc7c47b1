"""Golden normalisation cases (tests/golden/*.yaml): readings in, the expected state changes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.configfile import load_config_text
from collector.core.model import Reading, StateChange
from collector.tracker import Tracker

CASES = sorted((Path(__file__).parent / "golden").glob("*.yaml"))
S = 1_000_000_000
T0 = 1_800_000_000 * S


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_case(case: Path) -> None:
    """Test that the case's readings produce exactly its expected state changes."""
    spec: dict[str, Any] = yaml.safe_load(case.read_text())
    config = {"site": {"plant": "p"}, "sources": [{"id": "s", "type": "simulate"}],
              "profiles": {"case": spec["profile"]},
              "machines": [{"id": "m", "source": "s", "profile": "case", "debounce": spec.get("debounce", 0)}]}
    machine = load_config_text(yaml.safe_dump(config)).machines[0]
    tracker = Tracker(machine.info, machine.rules, start_ns=T0, interval_ns=3600 * S,
                      debounce_ns=int(machine.debounce_s * S))
    out = []
    for r in spec["readings"]:
        out += tracker.reading(Reading("m", r["signal"], r["value"], T0 + int(r["t"] * S)))
    out += tracker.tick(T0 + 3000 * S)
    got = [{"t": (c.ts_ns - T0) / S, "state": c.state.value, "reason": c.reason}
           for c in out if isinstance(c, StateChange)]
    want = spec["expected"]
    assert [(g["t"], g["state"]) for g in got] == [(float(w["t"]), w["state"]) for w in want]
    for g, w in zip(got, want, strict=True):
        if "reason" in w:
            assert g["reason"] == w["reason"]
