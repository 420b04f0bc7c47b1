"""The exchange's index and queries, pure: messages in, offers and answers out (no broker)."""

from __future__ import annotations

import datetime as dt
import json
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from collector.capacity.schema import MACHINE
from collector.exchange.index import NS_PER_S, Index
from collector.exchange.query import HOUR_NS, OFFERS_PARAMS, QueryError, free_hours, offers, parse_query, search
from tests.exchange_helpers import PREFIX, offer, payload, status

NOW = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)  # a Monday, half past nine
NOW_NS = int(NOW.timestamp() * NS_PER_S)
STALE = 600.0


def shown(index: Index, raw: str = "") -> list[dict[str, Any]]:
    return offers(index, parse_query(raw, OFFERS_PARAMS), NOW_NS, STALE).records


def test_a_valid_offer_is_indexed_and_an_empty_payload_deletes_it() -> None:
    index = Index(PREFIX)
    assert index.apply(f"{PREFIX}/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW)), NOW_NS) == "offer"
    [rec] = shown(index)
    assert (rec["plant"], rec["machine"], rec["free_now"], rec["exchange"]["stale"]) == ("plant-a", "mill-1", True,
                                                                                         False)
    assert rec["exchange"]["free_hours_next_24h"] == 12.0  # share 0.5 over 24 h
    assert index.apply(f"{PREFIX}/plant-a/mill-1", b"", NOW_NS) == "deleted"
    assert shown(index) == []


def test_the_latest_offer_per_machine_wins() -> None:
    index = Index(PREFIX)
    index.apply(f"{PREFIX}/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW)), NOW_NS)
    index.apply(f"{PREFIX}/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW, state="busy")), NOW_NS)
    assert [(r["state"], r["free_now"]) for r in shown(index)] == [("busy", False)]


@pytest.mark.parametrize(("topic", "body", "why"), [
    ("capacity/plant-a", b"{}", "topic"),
    ("other/plant-a/mill-1", b"{}", "topic"),
    ("capacity/plant-a/mill-1/x", b"{}", "topic"),
    ("capacity/plant-a/mill-1", b"{not json", "json"),
    ("capacity/plant-a/mill-1", b'{"machine": NaN}', "json"),
    ("capacity/plant-a/mill-1", b"\xff\xfe", "json"),
    ("capacity/plant-a/mill-1", b" " * 70_000, "too_large"),
    ("capacity/plant-a/mill-1", b'{"machine": "mill-1"}', "schema"),
    ("capacity/plant-a/mill-1", payload({**offer("plant-a", "mill-1", NOW), "reason": "alarm 17"}), "schema"),
    ("capacity/plant-a/mill-1", payload({**offer("plant-a", "mill-1", NOW), "state": "sleeping"}), "schema"),
    ("capacity/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW, shares=[0.5] * 167)), "schema"),
    ("capacity/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW, share=1.5)), "schema"),
    ("capacity/plant-a/mill-1", payload({**offer("plant-a", "mill-1", NOW), "updated": "yesterday"}), "time"),
    ("capacity/plant-a/mill-1", payload({**offer("plant-a", "mill-1", NOW), "updated": "2026-12-07T09:00:00"}),
     "time"),
    ("capacity/plant-a/mill-1", payload(offer("plant-b", "mill-1", NOW)), "plant_mismatch"),
    ("capacity/plant-a/mill-1", payload(offer("plant-a", "mill-2", NOW)), "machine_mismatch"),
    ("capacity/plant-a/_status", b'{"online": true}', "status_schema"),
    ("capacity/plant-a/_status", status("plant-b", False, NOW), "plant_mismatch"),
])
def test_a_bad_message_is_counted_by_why_and_never_shown(topic: str, body: bytes, why: str) -> None:
    """Test that every kind of bad message is dropped with its own why, and that it neither shows
    nor replaces the good offer already there."""
    index = Index(PREFIX)
    index.apply("capacity/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW, capabilities={"x": 1})), NOW_NS)
    before = shown(index)
    assert index.apply(topic, body, NOW_NS) == why
    assert index.rejected == {why: 1}
    assert shown(index) == before
    assert index.plants == {}


def test_a_plant_whose_will_fired_shows_every_machine_offline_and_not_free() -> None:
    index = Index(PREFIX)
    for m in ("mill-1", "mill-2"):
        index.apply(f"{PREFIX}/plant-a/{m}", payload(offer("plant-a", m, NOW)), NOW_NS)
    index.apply(f"{PREFIX}/plant-b/lathe", payload(offer("plant-b", "lathe", NOW)), NOW_NS)
    index.apply(f"{PREFIX}/plant-a/_status", status("plant-a", False, NOW), NOW_NS)
    by = {r["machine"]: r for r in shown(index)}
    assert [(by[m]["state"], by[m]["free_now"], by[m]["exchange"]["plant_online"]) for m in ("mill-1", "mill-2")] \
        == [("offline", False, False)] * 2
    assert (by["lathe"]["state"], by["lathe"]["free_now"]) == ("idle", True)
    assert [m["machine"] for m in search(index, parse_query("hours=1", ("hours",)), NOW_NS, STALE)["machines"]] \
        == ["lathe"]  # an offline plant promises nothing
    index.apply(f"{PREFIX}/plant-a/_status", status("plant-a", True, NOW), NOW_NS)
    assert all(r["free_now"] for r in shown(index))


def test_an_offer_whose_evidence_is_too_old_is_not_free_now() -> None:
    index = Index(PREFIX)
    old = NOW - dt.timedelta(seconds=STALE + 1)
    index.apply(f"{PREFIX}/plant-a/mill-1", payload(offer("plant-a", "mill-1", NOW, updated=old)), NOW_NS)
    [rec] = shown(index)
    assert (rec["state"], rec["free_now"], rec["exchange"]["stale"], rec["exchange"]["evidence_age_s"]) \
        == ("idle", False, True, STALE + 1)
    assert shown(index, "free_now=true") == []


@pytest.mark.parametrize(("heard_s_ago", "silence", "free", "age"), [
    (3600, ("status_topic",), True, 0.0),  # quiet for an hour, but a status topic would have said offline
    (3600, ("stale_after",), True, 0.0),
    (3600, (), False, 3600.0),  # a JSON publisher on change: an hour of silence may be a dead machine
    (60, (), True, 60.0),
    (None, (), False, None),  # never heard, cannot tell
    (60, None, False, None),  # a feed from before evidence: unknown, so never free now
])
def test_free_now_needs_recent_evidence_where_silence_cannot_be_told(
        heard_s_ago: int | None, silence: tuple[str, ...] | None, free: bool, age: float | None) -> None:
    index = Index(PREFIX)
    heard = None if heard_s_ago is None else NOW - dt.timedelta(seconds=heard_s_ago)
    index.apply(f"{PREFIX}/p/m", payload(offer("p", "m", NOW, heard=heard, silence=silence)), NOW_NS)
    [rec] = shown(index)
    assert (rec["state"], rec["free_now"], rec["exchange"]["evidence_age_s"], rec["exchange"]["stale"]) \
        == ("idle", free, age, not free)


def _caps_index() -> Index:
    index = Index(PREFIX)
    caps = {"m1": {"process": "milling", "max_diameter_mm": 300, "axes": 5, "materials": ["steel", "aluminium"]},
            "m2": {"process": "milling", "max_diameter_mm": 200, "axes": 3, "coolant": True},
            "l1": {"process": "turning", "max_diameter_mm": 400, "sizes": [100, 450]}}
    for m, c in caps.items():
        index.apply(f"{PREFIX}/p/{m}", payload(offer("p", m, NOW, capabilities=c)), NOW_NS)
    return index


@pytest.mark.parametrize(("raw", "expected"), [
    ("capability.process=milling", ["m1", "m2"]),
    ("capability.max_diameter_mm>=300", ["l1", "m1"]),
    ("capability.max_diameter_mm%3E%3D300", ["l1", "m1"]),  # as a browser encodes it
    ("capability.max_diameter_mm>300", ["l1"]),
    ("capability.max_diameter_mm<=200", ["m2"]),
    ("capability.max_diameter_mm<300&capability.process=milling", ["m2"]),
    ("capability.max_diameter_mm=300.0", ["m1"]),
    ("capability.axes>=5&capability.process=milling", ["m1"]),
    ("capability.materials=steel", ["m1"]),
    ("capability.sizes>400", ["l1"]),
    ("capability.coolant=true", ["m2"]),
    ("capability.process>=1", []),  # a text capability never compares as a number
    ("capability.unknown=1", []),
    ("plant=p&kind=mill", ["l1", "m1", "m2"]),
    ("plant=q", []),
])
def test_capability_filters(raw: str, expected: list[str]) -> None:
    assert sorted(r["machine"] for r in shown(_caps_index(), raw)) == expected


@pytest.mark.parametrize("raw", ["capability.max_diameter_mm>=big", "colour=red", "free_now=maybe",
                                 "capability.x>=nan", "hours=3"])
def test_a_bad_filter_is_refused_with_its_name(raw: str) -> None:
    with pytest.raises(QueryError):
        parse_query(raw)


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@settings(max_examples=200, deadline=None)
@given(have=st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False)),
       want=st.integers(-10**6, 10**6), op=st.sampled_from(sorted(_OPS)))
def test_numeric_comparisons_agree_with_python(have: float, want: int, op: str) -> None:
    index = Index(PREFIX)
    index.apply(f"{PREFIX}/p/m", payload(offer("p", "m", NOW, capabilities={"size": have})), NOW_NS)
    assert bool(shown(index, f"capability.size{op}{want}")) is _OPS[op](have, want)


def _brute(shares: list[float | None], start_ns: int, begin: int, end: int) -> float:
    total = 0.0
    for i, s in enumerate(shares):
        lo, hi = max(begin, start_ns + i * HOUR_NS), min(end, start_ns + (i + 1) * HOUR_NS)
        if hi > lo and s is not None:
            total += s * (hi - lo) / HOUR_NS
    return total


@settings(max_examples=300, deadline=None)
@given(shares=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=168, max_size=168),
       begin_s=st.integers(-2 * 86400, 8 * 86400), length_s=st.integers(0, 9 * 86400))
def test_free_hours_in_a_window_equal_the_sum_over_its_hours(shares: list[float | None], begin_s: int,
                                                              length_s: int) -> None:
    """Test that the O(1) prefix-sum answer equals the plain sum of share × overlap over every hour
    (partial first and last hours, windows before and past the forecast)."""
    index = Index(PREFIX)
    assert index.apply(f"{PREFIX}/p/m", payload(offer("p", "m", NOW, shares=shares)), NOW_NS) == "offer"
    o = index.offers[("p", "m")]
    begin = NOW_NS + begin_s * NS_PER_S
    end = begin + length_s * NS_PER_S
    got = free_hours(*index.series(("p", "m")), o.forecast_start_ns, begin, end)
    assert got == pytest.approx(_brute(shares, o.forecast_start_ns, begin, end), abs=1e-6)


def test_search_ranks_by_free_hours_in_the_window_and_says_which_hours() -> None:
    """Test that 'milling, 40 h within 2 days' ranks the mills by forecast free hours, counts the
    current hour from now, says how many machines cover the demand, and gives the windows."""
    index = Index(PREFIX)
    # m-half: 0.5 every hour; m-nights: 0.9 from 18:00 to 06:00 UTC, never seen by day; a lathe (not milling).
    start = NOW.replace(minute=0)
    nights = [0.9 if (start + dt.timedelta(hours=i)).hour >= 18 or (start + dt.timedelta(hours=i)).hour < 6
              else None for i in range(168)]
    index.apply(f"{PREFIX}/p/m-half", payload(offer("p", "m-half", NOW, share=0.5)), NOW_NS)
    index.apply(f"{PREFIX}/p/m-nights", payload(offer("p", "m-nights", NOW, shares=nights)), NOW_NS)
    index.apply(f"{PREFIX}/q/lathe", payload(offer("q", "lathe", NOW, share=1.0,
                                                    capabilities={"process": "turning"})), NOW_NS)
    result = search(index, parse_query("capability.process=milling&hours=40&within_days=2",
                                       ("hours", "within_days")), NOW_NS, STALE)
    assert [m["machine"] for m in result["machines"]] == ["m-half", "m-nights"]
    # 48 h from 09:30: m-half 0.5 × 48 = 24; m-nights two full nights (2 × 12 h × 0.9) = 21.6
    assert [m["free_hours"] for m in result["machines"]] == [24.0, 21.6]
    assert (result["free_hours_total"], result["enough"], result["machines_needed"]) == (45.6, True, 2)
    assert result["machines"][1]["windows"] == [
        {"start": "2026-12-07T18:00:00Z", "end": "2026-12-08T06:00:00Z", "expected_free_hours": 10.8},
        {"start": "2026-12-08T18:00:00Z", "end": "2026-12-09T06:00:00Z", "expected_free_hours": 10.8}]
    assert result["machines"][0]["windows"][0]["start"] == "2026-12-07T09:30:00Z"  # from now, not the hour
    assert search(index, parse_query("hours=100&within_days=1", ("hours", "within_days")), NOW_NS,
                  STALE)["enough"] is False


def test_search_leaves_out_an_offer_its_plant_stopped_refreshing() -> None:
    """Test that an offer made longer ago than the bound is not searched (its plant's feed is not
    reaching the exchange), while one whose machine is merely quiet on a blind source is."""
    index = Index(PREFIX)
    old = NOW - dt.timedelta(seconds=STALE + 1)
    index.apply(f"{PREFIX}/p/gone", payload(offer("p", "gone", NOW, updated=old)), NOW_NS)
    index.apply(f"{PREFIX}/p/quiet", payload(offer("p", "quiet", NOW, heard=NOW - dt.timedelta(hours=3),
                                                   silence=())), NOW_NS)
    result = search(index, parse_query("hours=1", ("hours",)), NOW_NS, STALE)
    assert [(m["machine"], m["free_now"]) for m in result["machines"]] == [("quiet", False)]


@pytest.mark.parametrize("raw", ["", "hours=0", "hours=-1", "hours=5&within_days=8", "hours=x",
                                 "hours=5&free_now=true", "hours=5&limit=1.5", "hours=5&limit=0"])
def test_a_bad_search_is_refused(raw: str) -> None:
    with pytest.raises(QueryError):
        search(Index(PREFIX), parse_query(raw, ("hours", "within_days", "limit")), NOW_NS, STALE)


@settings(max_examples=200, deadline=None)
@given(topic=st.text(max_size=40), body=st.binary(max_size=300))
def test_any_message_is_taken_or_counted_never_raises(topic: str, body: bytes) -> None:
    index = Index(PREFIX)
    outcome = index.apply(topic, body, NOW_NS)
    assert outcome in ("offer", "deleted", "status") or index.rejected[outcome] == 1
    assert not index.offers  # random bytes are never a valid offer


_FINITE = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity
_JUNK = st.one_of(st.none(), st.text(max_size=5), st.integers(), _FINITE, st.booleans(),
                 st.lists(st.one_of(st.none(), st.floats(-1, 2, allow_nan=False)), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
REFERENCE = Draft202012Validator(MACHINE)  # the pure-Python jsonschema: software we did not write either


@settings(max_examples=300, deadline=None)
@given(top=st.dictionaries(st.sampled_from(["machine", "plant", "state", "updated", "forecast", "capabilities",
                                             "free_now", "nameplate", "free_hours", "evidence", "extra"]),
                           _JUNK, max_size=3),
       forecast=st.dictionaries(st.sampled_from(["threshold", "start_hour_of_week", "idle_share", "windows",
                                                 "other"]), _JUNK, max_size=2),
       share=st.one_of(st.none(), _FINITE, st.text(max_size=2), st.integers()),
       drop=st.lists(st.sampled_from(["line", "since", "idle_since", "kind"]), max_size=2))
def test_the_run_time_validator_agrees_with_jsonschema(top: dict[str, Any], forecast: dict[str, Any],
                                                        share: Any, drop: list[str]) -> None:
    """Test that the exchange's validator (jsonschema-rs) accepts a mutated record exactly when the
    reference jsonschema does, and that an accepted record is kept as it came."""
    base = offer("p", "m", NOW)
    rec = {**base, **top}
    for key in drop:
        rec.pop(key, None)
    if isinstance(rec.get("forecast"), dict) and "forecast" not in top:
        shares = [*base["forecast"]["idle_share"]]
        shares[7] = share
        rec["forecast"] = {**base["forecast"], "idle_share": shares, **forecast}
    index = Index(PREFIX)
    outcome = index.apply(f"{PREFIX}/p/m", json.dumps(rec).encode(), NOW_NS)
    assert (outcome == "schema") is (not REFERENCE.is_valid(rec)), (outcome, rec)
    if outcome == "offer":
        assert index.offers[("p", "m")].record == rec


def _many(n: int) -> Index:
    index = Index(PREFIX)
    for i in range(n):
        plant = f"plant-{i % 7}"
        rec = offer(plant, f"m-{i:03d}", NOW, state="idle" if i % 3 == 0 else "busy")
        assert index.apply(f"{PREFIX}/{plant}/m-{i:03d}", payload(rec), NOW_NS) == "offer"
    return index


def test_offers_come_in_pages_that_add_up_to_the_whole_ordered_list() -> None:
    """Test that the listing pages with limit and offset (default 100): the pages, in turn, are the
    whole list in its order (free now first, then plant and machine), and the total counts every match."""
    index = _many(250)
    first = offers(index, parse_query("", OFFERS_PARAMS), NOW_NS, STALE)
    assert (len(first.records), first.total, first.next_offset) == (100, 250, 100)
    everything = offers(index, parse_query("limit=1000", OFFERS_PARAMS), NOW_NS, STALE).records
    assert len(everything) == 250
    assert everything == sorted(everything, key=lambda r: (not r["free_now"], r["plant"], r["machine"]))
    pages, offset = [], 0
    while True:
        page = offers(index, parse_query(f"limit=37&offset={offset}", OFFERS_PARAMS), NOW_NS, STALE)
        pages += page.records
        if page.next_offset is None:
            break
        offset = page.next_offset
    assert pages == everything
    free = offers(index, parse_query("free_now=true&limit=5&offset=80", OFFERS_PARAMS), NOW_NS, STALE)
    assert free.total == 84 and len(free.records) == 4 and free.next_offset is None
    assert offers(index, parse_query("offset=900", OFFERS_PARAMS), NOW_NS, STALE).records == []


@pytest.mark.parametrize("raw", ["limit=0", "limit=1001", "limit=2.5", "offset=-1", "offset=x", "limit="])
def test_a_bad_page_is_refused(raw: str) -> None:
    with pytest.raises(QueryError):
        offers(_many(3), parse_query(raw, OFFERS_PARAMS), NOW_NS, STALE)


async def test_the_listing_links_its_next_page_with_the_same_filters() -> None:
    """Test the HTTP side of paging: X-Total-Count, and a Link rel=next that keeps a raw capability
    filter and leads, page by page, through every match."""
    import httpx

    from collector.exchange.app import Exchange, build_app

    exchange = Exchange(_many(250), clock=lambda: NOW_NS)
    transport = httpx.ASGITransport(app=build_app(exchange))
    async with httpx.AsyncClient(transport=transport, base_url="http://exchange") as client:
        url: str | None = "/api/v1/offers?capability.process=milling&limit=60"
        seen: list[str] = []
        while url is not None:
            response = await client.get(url)
            assert response.status_code == 200 and response.headers["x-total-count"] == "250"
            seen += [r["machine"] for r in response.json()]
            link = response.headers.get("link")
            url = None if link is None else link.split(">")[0].lstrip("<")
            assert link is None or "capability.process=milling" in link
        assert len(seen) == len(set(seen)) == 250
        assert (await client.get("/api/v1/offers?limit=0")).status_code == 400


@settings(max_examples=200, deadline=None)
@given(shares=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=168, max_size=168),
       begin_s=st.integers(-2 * 86400, 8 * 86400), length_s=st.integers(0, 9 * 86400),
       minute=st.integers(0, 59))
def test_the_columns_free_hours_are_the_offers_own(shares: list[float | None], begin_s: int, length_s: int,
                                                   minute: int) -> None:
    """Test that the search's vectorised free hours (collector/exchange/columns.py) equal the
    per-offer O(1) answer exactly, for any shares and window."""
    import numpy as np

    index = Index(PREFIX)
    at = NOW.replace(minute=minute)
    index.apply(f"{PREFIX}/p/m", payload(offer("p", "m", at, shares=shares)), NOW_NS)
    begin = NOW_NS + begin_s * NS_PER_S
    rows = np.array([index.columns.rows[("p", "m")]])
    expected = free_hours(*index.series(("p", "m")), index.offers[("p", "m")].forecast_start_ns, begin,
                          begin + length_s * NS_PER_S)
    assert float(index.columns.free_hours(rows, begin, begin + length_s * NS_PER_S)[0]) == expected


_VALUES = st.one_of(st.sampled_from(["steel", "1", "true", "milling"]), st.integers(0, 3), st.booleans(),
                    st.lists(st.sampled_from(["steel", "brass", "1"]), min_size=1, max_size=2))


@settings(max_examples=150, deadline=None)
@given(caps=st.lists(st.dictionaries(st.sampled_from(["process", "axes", "flag"]), _VALUES, max_size=3),
                     min_size=1, max_size=12),
       filters=st.lists(st.tuples(st.sampled_from(["process", "axes", "flag"]), st.sampled_from(["=", ">=", "<"]),
                                  st.sampled_from(["steel", "1", "true", "2", "milling", "0"])), max_size=2),
       kind=st.sampled_from(["", "kind=mill", "kind=lathe"]), deleted=st.integers(0, 3))
def test_postings_find_exactly_the_offers_the_filters_match(caps: list[dict[str, Any]],
                                                            filters: list[tuple[str, str, str]], kind: str,
                                                            deleted: int) -> None:
    """Test that the listing's postings (equality) plus the checked comparisons give exactly the
    offers the per-record rules (``matches``) accept, after updates and deletes too."""
    from collector.exchange.query import _matching, matches

    index = Index(PREFIX)
    for i, c in enumerate(caps):
        index.apply(f"{PREFIX}/p/m{i}", payload(offer("p", f"m{i}", NOW, kind="mill" if i % 2 else "lathe",
                                                      capabilities={"process": "x"})), NOW_NS)
        index.apply(f"{PREFIX}/p/m{i}", payload(offer("p", f"m{i}", NOW, kind="mill" if i % 2 else "lathe",
                                                      capabilities=c)), NOW_NS)
    for i in range(min(deleted, len(caps))):
        index.apply(f"{PREFIX}/p/m{i}", b"", NOW_NS)
    raw = "&".join([*(f"capability.{n}{op}{v}" for n, op, v in filters), *([kind] if kind else [])])
    try:
        query = parse_query(raw)
    except QueryError:
        return  # a comparison with a text value: refused before any matching
    found = {index.columns.keys[r] for r in _matching(index, query).tolist()}
    assert found == {k for k, o in index.offers.items() if matches(o.fields, query)}


def _windows_by_hour(shares: list[float | None], start: int, threshold: float, begin: int,
                     end: int) -> list[dict[str, Any]]:
    """The free windows hour by hour, as plainly as they are defined (the reference)."""
    from collector.exchange.query import iso

    found, run = [], None
    for i, s in enumerate(shares):
        share = 0.0 if s is None else s
        lo, hi = max(begin, start + i * HOUR_NS), min(end, start + (i + 1) * HOUR_NS)
        if hi > lo and share > 0 and share >= threshold:
            hours = share * (hi - lo) / HOUR_NS
            run = (lo, hi, hours) if run is None else (run[0], hi, run[2] + hours)
        elif run is not None:
            found.append({"start": iso(run[0]), "end": iso(run[1]), "expected_free_hours": round(run[2], 3)})
            run = None
    if run is not None:
        found.append({"start": iso(run[0]), "end": iso(run[1]), "expected_free_hours": round(run[2], 3)})
    return found


@settings(max_examples=200, deadline=None)
@given(shares=st.lists(st.one_of(st.none(), st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), st.floats(0, 1)),
                       min_size=168, max_size=168),
       begin_s=st.integers(-2 * 86400, 8 * 86400), length_s=st.integers(0, 9 * 86400))
def test_windows_are_the_runs_of_hours_at_the_threshold(shares: list[float | None], begin_s: int,
                                                        length_s: int) -> None:
    """Test that the search's windows (vectorised) equal the hour-by-hour definition."""
    from collector.exchange.query import windows

    index = Index(PREFIX)
    index.apply(f"{PREFIX}/p/m", payload(offer("p", "m", NOW, shares=shares)), NOW_NS)
    o = index.offers[("p", "m")]
    begin = NOW_NS + begin_s * NS_PER_S
    end = begin + length_s * NS_PER_S
    expected = _windows_by_hour(shares, o.forecast_start_ns, 0.5, begin, end)
    assert windows(o, index.series(("p", "m"))[0], begin, end) == expected
