"""The exchange's index of offers. Pure (sans-I/O): a message (topic, payload, arrival time) in,
the index updated; no broker, clock or thread here, so every case is a unit test.

Topics: ``<prefix>/<plant>/<machine>`` holds a machine's offer (a retained JSON record, the
schema's ``machine``); ``<prefix>/<plant>/_status`` the plant feed's status (``online: false`` is
also its last will). An empty payload is MQTT's way to delete a retained message: it deletes the
offer. Anything else is checked, and a bad message is counted by why, logged once per why and
dropped; the offer it would have replaced stays (a plant's next good message replaces it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from collector.capacity.schema import FEED_STATUS, MACHINE
from collector.capacity.topics import STATUS, level

log = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
# A record is ~5 KB (168 hourly shares); far more is not an offer, and parsing it costs.
MAX_PAYLOAD = 64 * 1024

# Why a message was dropped (the metric's label values; docs/EXCHANGE.md lists them).
WHYS = ("topic", "too_large", "json", "schema", "time", "plant_mismatch", "machine_mismatch", "status_schema")


@dataclass(frozen=True, slots=True)
class Offer:
    record: dict[str, Any]  # as the plant published it, valid against the schema
    updated_ns: int  # the record's `updated`: when the plant made it
    forecast_start_ns: int  # idle_share[0] is the hour from here
    received_ns: int  # when this exchange got it (a restart receives every retained offer anew)
    shares: tuple[float, ...]  # forecast.idle_share with null (never seen) as 0: never counted free
    prefix: tuple[float, ...]  # prefix[i] = sum(shares[:i]), so a window's free hours cost O(1)
    heard_ns: int | None  # evidence.last_heard: the machine's last reading at the plant; None: none or not sent
    silence_detected: bool  # the plant's source tells silence from idle (evidence.silence_detected_by not empty)


@dataclass(frozen=True, slots=True)
class PlantStatus:
    online: bool
    updated_ns: int


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python's parser would take them, and no share can be NaN."""
    raise ValueError(f"{name} is not JSON")


def parse_time(text: str) -> int:
    """An RFC 3339 time (``Z`` or an offset) in ns since the epoch; ValueError otherwise."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return int(when.timestamp() * NS_PER_S)


def _prefix(shares: tuple[float, ...]) -> tuple[float, ...]:
    sums = [0.0]
    for s in shares:
        sums.append(sums[-1] + s)
    return tuple(sums)


class Index:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.split("/")
        self.offers: dict[tuple[str, str], Offer] = {}  # by the topic's (plant, machine) levels
        self.plants: dict[str, PlantStatus] = {}  # by the topic's plant level
        self.rejected: Counter[str] = Counter()
        self.messages = 0
        self.version = 0  # bumped on every change, so a reader can tell whether to recompute
        self._machine = jsonschema_rs.Draft202012Validator(MACHINE)
        self._status = jsonschema_rs.Draft202012Validator(FEED_STATUS)
        self._logged: set[str] = set()

    def apply(self, topic: str, payload: bytes, received_ns: int) -> str:
        """Take one message; returns what it did: ``offer``, ``deleted``, ``status`` or the why of
        a rejection (one of ``WHYS``)."""
        self.messages += 1
        levels = topic.split("/")
        n = len(self.prefix)
        if len(levels) != n + 2 or levels[:n] != self.prefix or not levels[n] or not levels[n + 1]:
            return self._reject("topic", topic, "not <prefix>/<plant>/<machine>")
        plant, machine = levels[n], levels[n + 1]
        if machine == STATUS:
            return self._apply_status(topic, plant, payload, received_ns)
        if not payload:
            if self.offers.pop((plant, machine), None) is not None:
                self.version += 1
            return "deleted"
        rec = self._parse(topic, payload, self._machine, "schema")
        if isinstance(rec, str):
            return rec
        if level(rec["plant"]) != plant:  # a plant publishing under another's name, or a confused bridge
            return self._reject("plant_mismatch", topic, f"the payload says plant {rec['plant']!r}")
        if level(rec["machine"]) != machine:
            return self._reject("machine_mismatch", topic, f"the payload says machine {rec['machine']!r}")
        evidence = rec.get("evidence") or {"last_heard": None, "silence_detected_by": []}  # older feeds: unknown
        try:
            times = [parse_time(t) for t in (rec["updated"], rec["forecast"]["start"], rec["since"])]
            heard = None if evidence["last_heard"] is None else parse_time(evidence["last_heard"])
            for w in rec["forecast"]["windows"]:
                parse_time(w["start"])
                parse_time(w["end"])
        except ValueError as exc:
            return self._reject("time", topic, str(exc))
        shares = tuple(0.0 if s is None else float(s) for s in rec["forecast"]["idle_share"])
        self.offers[(plant, machine)] = Offer(rec, times[0], times[1], received_ns, shares, _prefix(shares), heard,
                                              bool(evidence["silence_detected_by"]))
        self.version += 1
        return "offer"

    def _apply_status(self, topic: str, plant: str, payload: bytes, received_ns: int) -> str:
        if not payload:
            if self.plants.pop(plant, None) is not None:
                self.version += 1
            return "deleted"
        status = self._parse(topic, payload, self._status, "status_schema")
        if isinstance(status, str):
            return status
        if level(status["plant"]) != plant:
            return self._reject("plant_mismatch", topic, f"the status says plant {status['plant']!r}")
        try:
            updated = parse_time(status["updated"])
        except ValueError as exc:
            return self._reject("time", topic, str(exc))
        self.plants[plant] = PlantStatus(status["online"], updated)
        self.version += 1
        return "status"

    def _parse(self, topic: str, payload: bytes, validator: Any, why: str) -> dict[str, Any] | str:
        if len(payload) > MAX_PAYLOAD:
            return self._reject("too_large", topic, f"{len(payload)} bytes")
        try:
            data = json.loads(payload, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reject("json", topic, str(exc))
        if not validator.is_valid(data):
            error = next(iter(validator.iter_errors(data)))
            where = "/".join(str(p) for p in error.instance_path) or "the message"
            return self._reject(why, topic, f"{where}: {error.message[:200]}")
        result: dict[str, Any] = data
        return result

    def _reject(self, why: str, topic: str, detail: str) -> str:
        self.rejected[why] += 1
        if why not in self._logged:  # once per why: a broken plant must not flood the log
            self._logged.add(why)
            log.warning("exchange: dropped a message on %r (%s: %s); further ones of this kind are only counted "
                        "(exchange_rejected_offers_total)", topic[:200], why, detail)
        return why

    def clear(self) -> None:
        """Forget every offer and status (on a reconnect: the retained messages come again)."""
        self.offers.clear()
        self.plants.clear()
        self.version += 1

    def plant_online(self, plant_level: str) -> bool | None:
        """The plant's last status; None: never heard (no status retained)."""
        status = self.plants.get(plant_level)
        return None if status is None else status.online
