"""A machine whose own clock is wrong keeps being tracked (collector/timebounds.py), through a real
mosquitto: one machine's clock steps back an hour mid-stream, one runs ten minutes ahead, two run
behind from the start (an hour, three minutes). Each change is tracked, the readings that cannot
keep their stamps are counted by why, and none goes offline while it publishes."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

from collector.configfile import load_config_text
from collector.core.model import NS_PER_S, Output, State, StateChange
from collector.engine import Engine
from collector.sinks import NullSink
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto

CONFIG = """
site: {{plant: p}}
data_dir: {data_dir}
clock: {{require_sync: false}}
tracker: {{lateness: 0.2s}}
sources:
  - id: line
    type: mqtt
    host: 127.0.0.1
    port: {port}
    subscriptions: [{{topic: "st/{{machine}}", payload: json, timestamp: ts}}]
profiles:
  m:
    stale_after: 2s
    signals: {{state: state}}
    rules: [{{state: busy, when: "state == 'busy'"}}, {{state: idle}}]
machines:
  - {{id: steps-back, source: line, profile: m}}
  - {{id: ahead, source: line, profile: m}}
  - {{id: behind, source: line, profile: m}}
  - {{id: minutes-behind, source: line, profile: m}}
"""
# What each machine's clock says, relative to the real time, before and after its step.
SKEW_S = {"steps-back": (0.0, -3600.0), "ahead": (600.0, 600.0), "behind": (-3600.0, -3600.0),
          "minutes-behind": (-180.0, -180.0)}
# Where its changes are dated, relative to the real time: its own stamps where the tracker can
# place them (a clock behind ours from the start: its time line is its own), else arrival time
# (further ahead than `max_future`; stepped back behind its current state).
DATED_S = {"steps-back": 0.0, "ahead": 0.0, "behind": -3600.0, "minutes-behind": -180.0}


async def test_machines_with_wrong_clocks_keep_being_tracked(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test that machines whose clocks step back an hour, run ten minutes ahead, or run an hour or three
    minutes behind each have every state change they publish tracked, at their own stamps where
    those can be placed and at arrival otherwise (within 1 s), none goes offline while publishing,
    and the readings taken at arrival are counted as `clock_stepped_back` and `future_timestamp`."""
    loaded = load_config_text(CONFIG.format(port=mosquitto.port, data_dir=tmp_path), "t.yaml")
    changes: list[StateChange] = []

    def on_output(out: Sequence[Output]) -> None:
        changes.extend(o for o in out if isinstance(o, StateChange))

    engine = Engine(loaded, NullSink(), tick_s=0.05, on_output=on_output)
    stop = asyncio.Event()
    runner = asyncio.create_task(engine.run(stop))
    await until(lambda: engine.stats.source_online.get("line") is True, 10, "the source connected")
    pub = Publisher(mosquitto)
    published: dict[str, list[str]] = {m: [] for m in SKEW_S}
    sent: dict[str, list[float]] = {m: [] for m in SKEW_S}
    try:
        for tick in range(24):  # 0.25 s apart; a state change every 4 ticks; the step after 12
            for machine, (before, after) in SKEW_S.items():
                state = "busy" if (tick // 4) % 2 == 0 else "idle"
                if not published[machine] or published[machine][-1] != state:
                    published[machine].append(state)
                    sent[machine].append(time.time())
                skew = before if tick < 12 else after
                ts_ms = int((time.time() + skew) * 1000)
                pub.publish(f"st/{machine}", json.dumps({"state": state, "ts": ts_ms}))
            await asyncio.sleep(0.25)  # the publishers' pace: the scenario, not a wait for a result
        await until(lambda: all(_states(changes, m)[-1:] == published[m][-1:] for m in SKEW_S), 10,
                    "the last changes", explain=lambda: str({m: _states(changes, m) for m in SKEW_S}))
        counts = dict(engine.bad_input.counts)
    finally:
        pub.close()
        stop.set()
        await runner
    for machine in SKEW_S:
        mine = [c for c in changes if c.machine.id == machine]
        assert [c.state.value for c in mine[:-1]] == published[machine], (machine, mine)
        assert mine[-1].state is State.OFFLINE and mine[-1].reason == "collector stopped"
        assert all(b.ts_ns > a.ts_ns for a, b in itertools.pairwise(mine))  # no state moves backward
        for change, at in zip(mine, sent[machine], strict=False):
            assert abs(change.ts_ns / NS_PER_S - DATED_S[machine] - at) < 1.0, (machine, change, at)
    assert counts[("line", "clock_stepped_back")] == 12  # every reading of steps-back after its step
    assert counts[("line", "future_timestamp")] >= 24
    assert ("line", "too_old") not in counts


def _states(changes: list[StateChange], machine: str) -> list[str]:
    return [c.state.value for c in changes if c.machine.id == machine]
