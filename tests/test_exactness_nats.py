"""The exactness harness on nats-server (issue 23), small: a persistent MQTT 3.1.1 session whose
broker sends again what it sent before a kill only after its ack_wait (30 s), after newer messages.
bench/exactness.py --nats runs it at full size (50 machines, 100,000 messages, 20 kills)."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures._exactness import run_nats
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.nats import NatsServer


def test_nats_redelivering_late_after_kills_loses_and_misdates_nothing(nats: NatsServer, influxd: InfluxD,
                                                                      tmp_path: Path) -> None:
    """Test that with readings published live and the collector killed with SIGKILL twice (down 2 s
    each), on the default config (no window but the default redelivery_window), influxd holds every
    state change the oracle expects once at its exact time and every whole roll-up exactly, although
    NATS redelivers what was in flight at each kill 30 s late."""
    diff, kills = run_nats(tmp_path, nats, influxd, machines=10, messages=2000, kills=2, down_s=2.0,
                           up_s=(2.0, 4.0), seed=3)
    assert kills == 2
    assert diff.expected > 200
    assert diff.exact, diff
    assert diff.stored == diff.expected
    assert diff.intervals_expected > 0 and diff.intervals_wrong == 0
