"""What the exchange answers, pure: an index and a query in, records out.

Filters (``/api/v1/offers`` and ``/api/v1/search``), combined with AND, each may repeat:
``plant=``, ``kind=``, ``line=`` (equal), ``free_now=true|false``, and on capabilities
``capability.<name><op><value>`` with ``op`` one of ``=`` (equal: numbers as numbers, ``true``/
``false`` for flags, a list matches when one element does), ``>=``, ``<=``, ``>``, ``<``
(numeric: the value must be a number; a text or flag capability never matches; a list matches
when one number does), e.g. ``capability.max_diameter_mm>=300``. The query string is read raw
(split on ``&``, then each part percent-decoded), because ``a>=300`` is not a ``key=value`` pair.

The demand search (``hours``, ``within_days``): each offer's expected free hours in the window
[now, now + within_days] = the sum over the forecast's hours of idle share × the part of the
hour inside the window (the current hour counts from now). Never-seen hours (null) count 0, so
do hours past the forecast's 168. Machines are ranked by those hours, most first.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import numpy as np

from collector.core.errors import BadInputError
from collector.exchange.columns import Post, Rows
from collector.exchange.index import NS_PER_S, Index, Offer

HOUR_NS = 3600 * NS_PER_S
HOURS = 168
_CAPABILITY = re.compile(r"capability\.([^<>=!]+?)(>=|<=|>|<|=)(.*)", re.DOTALL)
_PAIR = re.compile(r"([a-z_]+)=(.*)", re.DOTALL)
_FIELDS = ("plant", "kind", "line")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


class QueryError(BadInputError):
    """A query the exchange cannot use; the message names the part (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    op: str
    value: str
    number: float | None  # the value as a number, when it is one (required for < > <= >=)


@dataclass
class Query:
    fields: dict[str, list[str]] = field(default_factory=dict)
    capabilities: list[Condition] = field(default_factory=list)
    free_now: bool | None = None
    params: dict[str, str] = field(default_factory=dict)  # the endpoint's own (hours, within_days, limit)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_query(raw: str, params: tuple[str, ...] = ()) -> Query:
    query = Query()
    for part in raw.split("&"):
        if not part:
            continue
        text = unquote_plus(part)
        cap = _CAPABILITY.fullmatch(text)
        if cap is not None:
            name, op, value = cap.groups()
            number = _number(value)
            if op != "=" and number is None:
                raise QueryError(f"capability.{name}{op}: expected a number, got {value!r}")
            query.capabilities.append(Condition(name, op, value, number))
            continue
        pair = _PAIR.fullmatch(text)
        key, value = pair.groups() if pair is not None else (text, "")
        if pair is not None and key in _FIELDS:
            query.fields.setdefault(key, []).append(value)
        elif pair is not None and key == "free_now" and value in ("true", "false"):  # as the OpenAPI enum says
            query.free_now = value == "true"
        elif pair is not None and key in params and key not in query.params:
            query.params[key] = value
        else:
            allowed = ", ".join([*_FIELDS, "free_now=true|false", *params, "capability.<name><op><value>"])
            raise QueryError(f"cannot use {text[:100]!r}; expected {allowed} (op: = >= <= > <)")
    return query


def _equal(have: Any, want: str) -> bool:
    if isinstance(have, list):
        return any(_equal(v, want) for v in have)
    if isinstance(have, bool):
        return _BOOL.get(want.lower()) is have
    if isinstance(have, int | float):
        return _number(want) == float(have)
    return bool(have == want)


_COMPARE = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}


def _holds(have: Any, cond: Condition) -> bool:
    if cond.op == "=":
        return _equal(have, cond.value)
    if isinstance(have, list):
        return any(_holds(v, cond) for v in have)
    if isinstance(have, bool) or not isinstance(have, int | float) or cond.number is None:
        return False
    return bool(_COMPARE[cond.op](float(have), cond.number))


def matches(rec: dict[str, Any], query: Query) -> bool:
    """The fields and capability filters (the exchange never changes those: the published record
    will do); ``free_now`` is checked on what is shown."""
    if any(rec[k] != v for k, values in query.fields.items() for v in values):
        return False
    caps = rec["capabilities"]
    return all(c.name in caps and _holds(caps[c.name], c) for c in query.capabilities)


@functools.lru_cache(maxsize=8192)  # windows of thousands of offers share their hour boundaries
def iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS_PER_S, dt.UTC).isoformat().replace("+00:00", "Z")


# -- free hours ------------------------------------------------------------------------------------

def free_hours(shares: Sequence[float], prefix: Sequence[float], start: int, begin_ns: int, end_ns: int) -> float:
    """Expected free hours in [begin, end) of a forecast starting at ``start``: O(1) with its prefix
    sums (``Index.series``)."""
    begin, end = max(begin_ns, start), min(end_ns, start + HOURS * HOUR_NS)
    if end <= begin:
        return 0.0
    i0, i1 = (begin - start) // HOUR_NS, (end - start) // HOUR_NS
    if i0 == i1:
        return shares[i0] * (end - begin) / HOUR_NS
    total = shares[i0] * (start + (i0 + 1) * HOUR_NS - begin) / HOUR_NS
    total += prefix[i1] - prefix[i0 + 1]
    if i1 < HOURS:
        total += shares[i1] * (end - start - i1 * HOUR_NS) / HOUR_NS
    return total


def windows(offer: Offer, shares: Sequence[float], begin_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """The runs of hours in [begin, end) whose share is at least the offer's own threshold (as the
    plant's free windows are made), clipped to [begin, end), with their expected free hours (each
    hour's share × its part inside, summed in hour order)."""
    threshold = float(offer.fields["threshold"])
    start = offer.forecast_start_ns
    first, last = max(0, (begin_ns - start) // HOUR_NS), min(HOURS, -(-(end_ns - start) // HOUR_NS))
    if last <= first:
        return []
    # Only the hours that overlap [begin, end): the others neither start nor extend a run.
    at = start + np.arange(first, last + 1, dtype=np.int64) * HOUR_NS
    lo, hi = np.maximum(begin_ns, at[:-1]), np.minimum(end_ns, at[1:])
    share = np.asarray(shares, dtype=np.float64)[first:last]
    free = (hi > lo) & (share > 0) & (share >= threshold)
    hours = (share * (hi - lo) / HOUR_NS).tolist()
    edges = np.flatnonzero(np.diff(np.concatenate(([0], free.astype(np.int8), [0])))).tolist()
    return [{"start": iso(int(lo[a])), "end": iso(int(hi[b - 1])), "expected_free_hours": round(sum(hours[a:b]), 3)}
            for a, b in zip(edges[::2], edges[1::2], strict=True)]


# -- what is shown ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shown:
    offer: Offer
    record: dict[str, Any]  # the offer as the exchange shows it (the record plus `exchange`)
    plant_online: bool | None


def evidence_age_s(offer: Offer, now_ns: int) -> float | None:
    """How old what the offer's state rests on is. The record's age (``updated``) always; and when
    the plant's source cannot tell silence from idle, the age of the machine's last reading too
    (an idle machine that stopped sending still says idle there). None: never heard."""
    age = (now_ns - offer.updated_ns) / NS_PER_S
    if not offer.silence_detected:
        if offer.heard_ns is None:
            return None
        age = max(age, (now_ns - offer.heard_ns) / NS_PER_S)
    return max(0.0, age)


def _stale(age_s: float | None, stale_after_s: float) -> bool:
    return age_s is None or age_s > stale_after_s


def stale(offer: Offer, now_ns: int, stale_after_s: float) -> bool:
    """``show(...).record["exchange"]["stale"]``."""
    return _stale(evidence_age_s(offer, now_ns), stale_after_s)


def free_now(index: Index, key: tuple[str, str], offer: Offer, now_ns: int, stale_after_s: float) -> bool:
    """``show(...).record["free_now"]`` without building the record (a listing sorts every match
    by it, and shows only a page)."""
    return (bool(offer.fields["free_now"]) and index.plant_online(key[0]) is not False
            and not _stale(evidence_age_s(offer, now_ns), stale_after_s))


def show(index: Index, key: tuple[str, str], offer: Offer, now_ns: int, stale_after_s: float) -> Shown:
    """The record as published, but: a plant whose status says offline shows its machines offline
    and not free; an offer whose evidence is older than ``stale_after_s`` (``evidence_age_s``) is
    not free now: its plant stopped refreshing it, or its machine went quiet on a source that
    cannot tell silence from idle."""
    rec = offer.record  # parsed anew: a copy of its own
    series = index.series(key)
    online = index.plant_online(key[0])
    age_s = evidence_age_s(offer, now_ns)
    stale = _stale(age_s, stale_after_s)
    if online is False:
        status = index.plants[key[0]]
        rec.update(state="offline", since=iso(max(status.updated_ns, offer.updated_ns)), free_now=False,
                   idle_since=None)
    elif stale:
        rec.update(free_now=False, idle_since=None)
    rec["exchange"] = {
        "plant_online": online, "evidence_age_s": None if age_s is None else round(age_s, 1), "stale": stale,
        "silence_detected": offer.silence_detected, "received": iso(offer.received_ns),
        "free_hours_next_24h": round(free_hours(*series, offer.forecast_start_ns, now_ns, now_ns + 24 * HOUR_NS), 3),
        "free_hours_next_7d": round(free_hours(*series, offer.forecast_start_ns, now_ns, now_ns + HOURS * HOUR_NS),
                                    3),
    }
    return Shown(offer, rec, online)


@dataclass(frozen=True, slots=True)
class Page:
    records: list[dict[str, Any]]
    total: int  # matching offers in all
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.records)
        return end if end < self.total else None


PAGE_DEFAULT = 100
PAGE_MOST = 1000
OFFERS_PARAMS = ("limit", "offset")


def _equal_posts(query: Query) -> list[list[Post]]:
    """The query's equality filters as groups of postings (columns.py): a filter matches a row
    holding any of its group, as ``_equal`` says (text, number, flag)."""
    groups = [[(name, "s", v)] for name, values in query.fields.items() for v in values]
    for c in query.capabilities:
        if c.op != "=":
            continue
        name = "capability." + c.name
        group: list[Post] = [(name, "s", c.value)]
        if c.number is not None:
            group.append((name, "n", c.number))
        if c.value.lower() in _BOOL:
            group.append((name, "b", _BOOL[c.value.lower()]))
        groups.append(group)
    return groups


def _matching(index: Index, query: Query) -> Rows:
    """The rows of the offers that match the query's fields and capability filters, all by
    postings: equality as posted, a comparison (``<``, ``>=``...) as the posted numbers of its
    capability it holds for (``_holds``: a number, or a list with one; never a text or a flag)."""
    cols = index.columns
    groups = _equal_posts(query)
    for c in query.capabilities:
        if c.op != "=":
            groups.append(cols.compared("capability." + c.name, functools.partial(_compares, c)))
    return cols.candidates(groups)


def _compares(cond: Condition, value: float) -> bool:
    assert cond.number is not None  # parse_query refuses a comparison with no number
    return bool(_COMPARE[cond.op](value, cond.number))


def offers(index: Index, query: Query, now_ns: int, stale_after_s: float) -> Page:
    """The matching offers, free now first, then by plant and machine: the page ``offset``,
    ``limit`` (default 100, at most 1,000; a platform of 20,000 offers answers one page in
    milliseconds, all of them in megabytes). Only the page's records are built."""
    limit = int(_positive(query, "limit", PAGE_DEFAULT, PAGE_MOST, whole=True))
    offset = int(_positive(query, "offset", 0, 2**31, whole=True, zero=True))
    cols = index.columns
    rows = _matching(index, query)
    free = cols.free_now(rows, now_ns, stale_after_s)
    if query.free_now is not None:
        rows, free = rows[free == query.free_now], free[free == query.free_now]
    ordered = rows[np.lexsort((cols.ranks(rows), ~free))]
    keys = [cols.keys[r] for r in ordered[offset:offset + limit].tolist()]
    return Page([show(index, k, index.offers[k], now_ns, stale_after_s).record for k in keys if k is not None],
                len(rows), offset, limit)


def _positive(query: Query, name: str, default: float | None, most: float, *, whole: bool = False,
              zero: bool = False) -> float:
    text = query.params.get(name)
    if text is None:
        if default is None:
            raise QueryError(f"{name}: required")
        return default
    value = _number(text)
    least = "0 or more" if zero else "above 0"
    if value is None or not (0 <= value if zero else 0 < value) or value > most:
        raise QueryError(f"{name}: expected a number {least} and at most {most:g}, got {text!r}")
    if whole and value != int(value):
        raise QueryError(f"{name}: expected a whole number, got {text!r}")
    return value


SEARCH_PARAMS = ("hours", "within_days", "limit")


def search(index: Index, query: Query, now_ns: int, stale_after_s: float) -> dict[str, Any]:
    """Who can give ``hours`` machine-hours within ``within_days`` (at most 7: the forecast's
    reach): the matching machines of plants not offline whose record is fresher than the bound (a
    machine merely quiet on a blind source stays: its plant's forecast is current), with expected
    free hours in the window,
    most first; ``cumulative_free_hours`` says how far down the list the demand is met."""
    if query.free_now is not None:
        raise QueryError("free_now: not a search filter (the search is about the window ahead)")
    hours = _positive(query, "hours", None, 1e9)
    days = _positive(query, "within_days", 7.0, 7.0)
    limit = _positive(query, "limit", 50, 10_000, whole=True)
    end_ns = now_ns + int(days * 24 * HOUR_NS)
    cols = index.columns
    rows = _matching(index, query)
    # Not from plants that are offline (their offers are no longer kept up: nothing to promise from
    # them), nor records older than the bound (the plant stopped refreshing them; a will may not
    # have reached us).
    rows = rows[~cols.offline[rows] & ((now_ns - cols.updated_ns[rows]) <= stale_after_s * NS_PER_S)]
    hours_each = cols.free_hours(rows, now_ns, end_ns)
    rows, hours_each = rows[hours_each > 0], hours_each[hours_each > 0]
    order = np.lexsort((cols.ranks(rows), -hours_each))
    total = float(hours_each.sum())
    machines: list[dict[str, Any]] = []
    cumulative = 0.0
    needed: int | None = None
    for n, i in enumerate(order[:int(limit)].tolist(), start=1):  # only the listed ones are shown
        h = float(hours_each[i])
        cumulative += h
        if needed is None and cumulative >= hours:
            needed = n
        key = cols.keys[int(rows[i])]
        assert key is not None
        shown = show(index, key, index.offers[key], now_ns, stale_after_s)
        rec = shown.record
        machines.append({
            "plant": rec["plant"], "machine": rec["machine"], "name": rec["name"], "kind": rec["kind"],
            "line": rec["line"], "capabilities": rec["capabilities"], "state": rec["state"],
            "free_now": rec["free_now"], "free_hours": round(h, 3), "cumulative_free_hours": round(cumulative, 3),
            "windows": windows(shown.offer, index.series(key)[0], now_ns, end_ns),
            "evidence_age_s": rec["exchange"]["evidence_age_s"],
        })
    return {"hours": hours, "within_days": days, "from": iso(now_ns), "to": iso(end_ns),
            "free_hours_total": round(total, 3), "enough": total >= hours, "machines_needed": needed,
            "matching_machines": len(rows), "machines": machines}
