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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import numpy as np

from collector.capacity.schema import FEED_STATUS, MACHINE
from collector.capacity.topics import STATUS, level
from collector.exchange.columns import Columns

log = logging.getLogger(__name__)
NS_PER_S = 1_000_000_000
# A record is ~5 KB (168 hourly shares); far more is not an offer, and parsing it costs.
MAX_PAYLOAD = 64 * 1024

# Why a message was dropped (the metric's label values; docs/EXCHANGE.md lists them).
WHYS = ("topic", "too_large", "json", "schema", "time", "plant_mismatch", "machine_mismatch", "status_schema")


# What a listing or a search filters and sorts on, kept parsed; the rest of the record stays in
# the payload as received and is parsed when shown (20,000 records kept parsed took ~380 MB).
FIELDS = ("plant", "machine", "name", "kind", "line", "capabilities", "state", "free_now")


@dataclass(frozen=True, slots=True)
class Offer:
    payload: bytes  # as the plant published it, valid against the schema
    fields: dict[str, Any]  # FIELDS of the record, and the forecast's threshold
    updated_ns: int  # the record's `updated`: when the plant made it
    forecast_start_ns: int  # idle_share[0] is the hour from here
    received_ns: int  # when this exchange got it (a restart receives every retained offer anew)
    # forecast.idle_share (null, never seen, as 0: never counted free) and its prefix sums are
    # kept once, in the index's columns (``Index.series``).
    heard_ns: int | None  # evidence.last_heard: the machine's last reading at the plant; None: none or not sent
    silence_detected: bool  # the plant's source tells silence from idle (evidence.silence_detected_by not empty)

    @property
    def record(self) -> dict[str, Any]:
        """The record as published."""
        rec: dict[str, Any] = json.loads(self.payload)
        return rec


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
        self.columns = Columns()

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
                self.columns.drop((plant, machine))
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
        shares = np.array([0.0 if s is None else s for s in rec["forecast"]["idle_share"]], np.float64)
        fields = {k: rec[k] for k in FIELDS} | {"threshold": rec["forecast"]["threshold"]}
        prefix = np.concatenate(([0.0], np.cumsum(shares)))
        silence = bool(evidence["silence_detected_by"])
        self.offers[(plant, machine)] = Offer(payload, fields, times[0], times[1], received_ns, heard, silence)
        self.columns.put((plant, machine), fields, shares, prefix, times[1], times[0], heard, silence,
                         self.plant_online(plant) is False)
        self.version += 1
        return "offer"

    def _apply_status(self, topic: str, plant: str, payload: bytes, received_ns: int) -> str:
        if not payload:
            if self.plants.pop(plant, None) is not None:
                self.columns.set_plant(plant, False)
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
        self.columns.set_plant(plant, not status["online"])
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

    def series(self, key: tuple[str, str]) -> tuple[Sequence[float], Sequence[float]]:
        """An offer's hourly idle shares (null as 0) and their prefix sums (``prefix[i]`` = the sum
        of the first ``i`` shares, so a window's free hours cost O(1))."""
        row = self.columns.rows[key]
        return self.columns.shares[row].tolist(), self.columns.prefix[row].tolist()

    def clear(self) -> None:
        """Forget every offer and status (on a reconnect: the retained messages come again)."""
        self.offers.clear()
        self.plants.clear()
        self.columns.clear()
        self.version += 1

    def plant_online(self, plant_level: str) -> bool | None:
        """The plant's last status; None: never heard (no status retained)."""
        status = self.plants.get(plant_level)
        return None if status is None else status.online
