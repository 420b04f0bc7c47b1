"""Golden exchange cases (tests/golden/exchange/*.yaml): messages in, through the exchange's pure
index, what it shows out, at given times; no broker. A platform operator can add a case with a
message captured from a plant (``mosquitto_sub -v -t 'capacity/#'``) to see why it is dropped:

    description: what the case shows
    prefix: capacity                 # the feeds' topic prefix
    stale_after: 600                 # the exchange's --stale-after, seconds
    messages:                        # in order; `file` (next to the case), or `text`; `merge`: keys to set
      - {topic: capacity/plant-a/mill, file: plant-a-mill.json}
      - {topic: capacity/plant-a/_status, text: '{"plant": "plant-a", "online": false, "updated": "..."}'}
    expected:
      outcomes: [offer, status]      # per message: offer, status, deleted, or the why it was dropped
      at:                            # what /api/v1/offers shows at each time (free now first)
        - now: "2026-12-05T08:50:50Z"
          offers: [{plant: plant-a, machine: mill, state: idle, free_now: true, stale: false}]
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.exchange.index import NS_PER_S, Index
from collector.exchange.query import offers, parse_query

DIR = Path(__file__).parent / "golden" / "exchange"
CASES = [(path, n, case) for path in sorted(DIR.glob("*.yaml"))
         for n, case in enumerate(yaml.safe_load_all(path.read_text()))]


def _ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * NS_PER_S)


def _payload(message: dict[str, Any]) -> bytes:
    if "file" in message:
        body = (DIR / message["file"]).read_bytes()
        if "merge" in message:
            body = json.dumps({**json.loads(body), **message["merge"]}).encode()
        return body
    return str(message["text"]).encode()


@pytest.mark.parametrize(("path", "n", "case"), CASES, ids=[f"{p.stem}-{n}" for p, n, _ in CASES])
def test_golden_exchange_case(path: Path, n: int, case: dict[str, Any]) -> None:
    index = Index(case["prefix"])
    first = _ns(case["expected"]["at"][0]["now"])
    outcomes = [index.apply(m["topic"], _payload(m), first) for m in case["messages"]]
    assert outcomes == case["expected"]["outcomes"], case["description"]
    for moment in case["expected"]["at"]:
        shown = offers(index, parse_query(""), _ns(moment["now"]), float(case["stale_after"])).records
        got = [{"plant": o["plant"], "machine": o["machine"], "state": o["state"], "free_now": o["free_now"],
                "stale": o["exchange"]["stale"]} for o in shown]
        assert got == moment["offers"], f"{case['description']} at {moment['now']}"
