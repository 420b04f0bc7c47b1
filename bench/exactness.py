"""Differential exactness: what lands in InfluxDB against an oracle computed from the messages.

    python bench/exactness.py [--machines 200] [--messages 100000] [--kills 20] [--seed 1]
    python bench/exactness.py --nats [--machines 50] [--messages 100000] [--kills 20] [--down 10]

Every scenario publishes a generated stream with ``mosquitto_pub`` (QoS 1) into the persistent
session of ``collector run`` processes (mosquitto -> collector -> SQLite outbox -> influxd 1.6)
and compares every stored state change and every whole roll-up with the oracle in
``tests.fixtures._exactness.py`` (a few lines of rules written again, sharing no code with the
tracker). Scenarios:

- ``backlog_stamped``: the stream pre-queued while the collector is away, payload timestamps;
- ``backlog_arrival``: the same without timestamps (arrival time counts: the sequence of states
  and the durations' chaining are compared, not the times);
- ``live``: published while the collector runs (arrival time);
- ``kills``: a stamped backlog drained while the collector is killed with SIGKILL ``--kills``
  times at random moments and started again at once;
- ``broker_restart``: mosquitto stopped and started (with its persistence) mid-drain;
- ``influxd_outage``: influxd stopped for 3 s mid-drain;
- ``shards``: two collectors with ``shard: {index: 0|1, count: 2}``, each writing its own
  database: every machine must be in exactly one, and the two together exact.
- ``nats`` (``--nats``, on its own): Debian's nats-server with MQTT on JetStream (a config file in
  a temp dir, free ports, ``ack_wait`` at its default 30 s) instead of mosquitto; the stream is
  published live, stamped, at QoS 1 (MQTT 3.1.1), into the collector's persistent session, and the
  collector is killed with SIGKILL ``--kills`` times, each time down ``--down`` seconds. NATS sends
  what was in flight at a kill again only after its ack_wait, after newer messages (issue 23): the
  default ``redelivery_window`` must sort them in.

Last line: {"scenarios", "changes_expected", "changes_stored", "lost", "duplicated", "misdated",
"extra", "intervals_expected", "intervals_wrong", "kills"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures._exactness import SCENARIOS, Diff, run_nats, run_scenario  # noqa: E402
from tests.fixtures._ports import free_port  # noqa: E402
from tests.fixtures.influxdb import start_influxd  # noqa: E402
from tests.fixtures.mosquitto import Mosquitto  # noqa: E402
from tests.fixtures.nats import start_nats  # noqa: E402


def nats(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-exactness-nats-") as tmpdir:
        tmp = Path(tmpdir)
        broker = start_nats(tmp / "nats")
        influx = start_influxd(tmp / "influxd")
        t0 = time.perf_counter()
        try:
            diff, kills = run_nats(tmp, broker, influx, machines=args.machines, messages=args.messages,
                                   kills=args.kills, down_s=args.down, up_s=(5.0, 12.0), seed=args.seed)
        finally:
            influx.stop()
            broker.stop()
    for example in diff.examples[:5]:
        print(f"  {example}", flush=True)
    print(json.dumps({"scenario": "nats", "machines": args.machines, "messages": args.messages,
                      "changes_expected": diff.expected, "changes_stored": diff.stored, "lost": diff.lost,
                      "duplicated": diff.duplicated, "misdated": diff.misdated, "extra": diff.extra,
                      "intervals_expected": diff.intervals_expected, "intervals_wrong": diff.intervals_wrong,
                      "kills": kills, "down_s": args.down, "seconds": round(time.perf_counter() - t0)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=None, help="default 200 (nats: 50)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--nats", action="store_true", help="the nats-server scenario alone")
    parser.add_argument("--down", type=float, default=10.0, help="nats: seconds the collector stays down per kill")
    args = parser.parse_args()
    if args.nats:
        args.machines = args.machines or 50
        nats(args)
        return
    args.machines = args.machines or 200
    total, kills = Diff(), 0
    names = args.only or SCENARIOS
    with tempfile.TemporaryDirectory(prefix="bench-exactness-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "mosquitto").mkdir()
        broker = Mosquitto(free_port(), tmp / "mosquitto")
        broker.start()
        influx = start_influxd(tmp / "influxd")
        try:
            for i, name in enumerate(names):
                t0 = time.perf_counter()
                diff, killed = run_scenario(name, tmp, broker, influx, machines=args.machines,
                                            messages=args.messages, kills=args.kills, seed=args.seed + i)
                kills += killed
                total.add(diff)
                print(f"{name}: {diff.expected} changes expected, {diff.stored} stored, lost {diff.lost}, "
                      f"duplicated {diff.duplicated}, misdated {diff.misdated}, extra {diff.extra}; intervals "
                      f"{diff.intervals_expected - diff.intervals_wrong}/{diff.intervals_expected} exact"
                      f"{f', {killed} kills' if killed else ''} ({time.perf_counter() - t0:.0f}s)", flush=True)
                for example in diff.examples[:5]:
                    print(f"  {example}", flush=True)
        finally:
            influx.stop()
            broker.stop()
    print(json.dumps({"scenarios": len(names), "changes_expected": total.expected, "changes_stored": total.stored,
                      "lost": total.lost, "duplicated": total.duplicated, "misdated": total.misdated,
                      "extra": total.extra, "intervals_expected": total.intervals_expected,
                      "intervals_wrong": total.intervals_wrong, "kills": kills}))


if __name__ == "__main__":
    main()
