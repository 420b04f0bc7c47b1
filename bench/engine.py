"""How many readings per second the core (rules + tracker + line protocol) handles, without I/O.

    python bench/engine.py [--machines 500] [--readings 200000]

Half the readings repeat the previous value (periodic publishers), half change it. Last line:
one JSON object {"readings_per_s": …, "changes": …}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.core.lineprotocol import to_line
from collector.core.model import MachineInfo, Reading, State, StateChange
from collector.rules import RuleSet, compile_rule
from collector.tracker import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--readings", type=int, default=200_000)
    args = parser.parse_args()
    rules = RuleSet([compile_rule(State.DOWN, "alarm"), compile_rule(State.SETUP, "mode == 'SETUP'"),
                     compile_rule(State.BUSY, "execution == 'ACTIVE' or spindle_rpm > 50"),
                     compile_rule(State.IDLE, None)])
    start = time.time_ns()
    trackers = [Tracker(MachineInfo(id=f"m{i}", plant="p"), rules, start_ns=start, interval_ns=60 * 10**9)
                for i in range(args.machines)]
    rng = random.Random(1)
    readings = []
    for n in range(args.readings):
        value = rng.choice(["ACTIVE", "READY"]) if n % 2 else "ACTIVE"
        readings.append(Reading(f"m{n % args.machines}", "execution", value, start + n * 1000))
    index = {t.info.id: t for t in trackers}
    changes = 0
    t0 = time.perf_counter()
    for r in readings:
        for out in index[r.machine].reading(r):
            to_line(out)
            changes += isinstance(out, StateChange)
    elapsed = time.perf_counter() - t0
    rate = args.readings / elapsed
    print(f"{args.readings} readings over {args.machines} machines in {elapsed:.2f}s: {rate:,.0f} readings/s, "
          f"{changes} state changes")
    print(json.dumps({"readings_per_s": round(rate), "changes": changes}))


if __name__ == "__main__":
    main()
