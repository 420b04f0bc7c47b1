"""A correction record through the outbox to InfluxDB 2.x, against a stand-in (no 2.x server
runs here) that answers as InfluxDB's v2 API reference documents:

- ``POST /api/v2/write?org=&bucket=&precision=`` takes line protocol (gzip or not), 204;
- ``POST /api/v2/query?org=`` takes ``{"query", "dialect"}`` and answers annotated CSV: per
  table (one series and field) a ``#datatype`` row, a header, its rows, an empty line between
  tables; ``_time`` in RFC 3339 with nanoseconds as the dialect asks. The stand-in evaluates the
  one Flux shape the corrector sends (``range``, then a filter of ``_measurement`` and
  ``machine`` equalities joined by ``or``);
- ``POST /api/v2/delete?org=&bucket=`` takes ``{"start", "stop", "predicate"}`` with a predicate
  of ``key="value"`` joined by ``AND`` (no ``OR``, no regular expressions: the documented
  limits), deletes from start to stop inclusive, 204.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.core.model import NS_PER_S
from collector.influx.config import OutputSettings
from collector.influx.correctors import rfc3339_ns
from collector.influx.selection import parse, unescape
from collector.influx.writers import V2Writer
from tests.fixtures._http import Request, Response, http_server, json_response
from tests.test_stepback_outputs import INTERVAL, Scenario, run_with_a_crash

TOKEN = "t0k3n"
S = NS_PER_S

Key = tuple[str, tuple[tuple[str, str], ...], str, int]  # measurement, tags, field, ns


def _value(raw: str) -> object:
    if raw.startswith('"'):
        return unescape(raw[1:-1])
    if raw.endswith("i"):
        return int(raw[:-1])
    if raw in ("true", "false"):
        return raw == "true"
    return float(raw)


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, S)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


_TYPES = {int: "long", float: "double", str: "string", bool: "boolean"}


class InfluxV2:
    def __init__(self) -> None:
        self.points: dict[Key, object] = {}
        self.lock = threading.Lock()
        self.deletes: list[dict[str, Any]] = []
        self.refuse_delete = False  # a token without the delete permission
        self.url = ""

    def write(self, body: bytes) -> None:
        with self.lock:
            for line in body.decode().split("\n"):
                point = parse(line)
                assert point is not None, line
                measurement = point.head.split(",")[0]
                tags = tuple(sorted(point.tags.items()))
                for key, raw in point.fields:
                    self.points[(measurement, tags, key, int(point.ts))] = _value(raw.split("=", 1)[1])

    def query(self, flux: str) -> str:
        start, stop = (rfc3339_ns(t) for t in re.findall(r"(?:start|stop): (\S+?)[,)]", flux))
        measurements = set(re.findall(r'r\._measurement == "([^"]*)"', flux))
        machines = set(re.findall(r'r\.machine == "([^"]*)"', flux))
        tables: dict[tuple[str, tuple[tuple[str, str], ...], str], list[tuple[int, object]]] = {}
        with self.lock:
            for (measurement, tags, field, ts), value in sorted(self.points.items(), key=lambda kv: kv[0][3]):
                if start <= ts < stop and measurement in measurements and dict(tags).get("machine") in machines:
                    tables.setdefault((measurement, tags, field), []).append((ts, value))
        out = []
        for n, ((measurement, tags, field), rows) in enumerate(tables.items()):
            names = [k for k, _ in tags]
            kind = _TYPES[type(rows[0][1])]
            out.append(",".join(["#datatype", "string", "long", "dateTime:RFC3339", "dateTime:RFC3339",
                                 "dateTime:RFC3339Nano", kind, "string", "string", *["string"] * len(names)]))
            out.append(",".join(["", "result", "table", "_start", "_stop", "_time", "_value", "_field",
                                 "_measurement", *names]))
            for ts, value in rows:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                out.append(",".join(["", "_result", str(n), _rfc3339(start), _rfc3339(stop), _rfc3339(ts), text,
                                     field, measurement, *[v for _, v in tags]]))
            out.append("")
        return "\r\n".join(out) + "\r\n"

    def delete(self, body: dict[str, Any]) -> None:
        self.deletes.append(body)
        start, stop = rfc3339_ns(body["start"]), rfc3339_ns(body["stop"])
        assert " OR " not in body["predicate"] and "=~" not in body["predicate"]
        where = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', body["predicate"]))
        with self.lock:
            for key in [k for k in self.points if start <= k[3] <= stop]:
                tags = dict(key[1])
                if all((key[0] if name == "_measurement" else tags.get(name)) == value
                       for name, value in where.items()):
                    del self.points[key]

    def stored(self) -> set[tuple[str, str, int]]:
        with self.lock:
            return {(m, dict(tags)["machine"], ts) for m, tags, _, ts in self.points}


@pytest.fixture
def influx2() -> Iterator[InfluxV2]:
    server = InfluxV2()

    def handle(req: Request) -> Response:
        url = urllib.parse.urlsplit(req.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if req.header("Authorization") != f"Token {TOKEN}":
            return json_response(401, {"code": "unauthorized", "message": "unauthorized access"})
        body = gzip.decompress(req.body) if req.header("Content-Encoding") == "gzip" else req.body
        if (req.method, url.path) == ("GET", "/api/v2/buckets"):
            return json_response(200, {"buckets": [{"id": "b1", "name": query.get("name"), "orgID": "0123456789abcdef",
                                                    "retentionRules": []}]})
        if (req.method, url.path) == ("POST", "/api/v2/write"):
            server.write(body)
            return Response(204)
        if (req.method, url.path) == ("POST", "/api/v2/query"):
            request = json.loads(body)
            assert request["dialect"]["annotations"] == ["datatype"]
            assert request["dialect"]["dateTimeFormat"] == "RFC3339Nano"
            return Response(200, server.query(request["query"]).encode(), {"Content-Type": "text/csv"})
        if (req.method, url.path) == ("POST", "/api/v2/delete"):
            if server.refuse_delete:
                return json_response(403, {"code": "forbidden", "message": "insufficient permissions for delete"})
            assert query.get("bucket") == "avail" and query.get("org") == "acme"
            server.delete(json.loads(body))
            return Response(204)
        return json_response(404, {"code": "not found", "message": "path not found"})

    with http_server(handle) as url:
        server.url = url
        yield server


async def test_influxdb_v2_holds_the_history_of_the_right_clock_after_a_crash_mid_correction(
        influx2: InfluxV2, tmp_path: Path) -> None:
    """Test that through the v2 API (Flux read-back, /api/v2/delete by measurement and machine, write)
    a crash between delete and rewrite still ends with exactly the right clock's history."""
    output = OutputSettings.model_validate({"name": "cloud", "url": influx2.url, "api": "v2", "org": "acme",
                                            "bucket": "avail", "token": TOKEN})
    scenario = Scenario()
    written = await run_with_a_crash(output, V2Writer(output), tmp_path, scenario, influx2.stored)
    assert influx2.stored() == scenario.want()
    assert written == len([p for p in scenario.want() if p[1] in ("m1", "m2")]) - len(scenario.after())
    # one delete per measurement and machine (predicates know no OR), each run of the correction
    assert {(d["predicate"]) for d in influx2.deletes} == {
        f'_measurement="{m}" AND machine="{k}"' for m in ("machine_state", "machine_availability")
        for k in ("m1", "m2")}
    totals: dict[tuple[tuple[tuple[str, str], ...], int], int] = {}
    with influx2.lock:
        for (measurement, tags, field, ts), value in influx2.points.items():
            if measurement == "machine_availability" and field.endswith("_s") and isinstance(value, float):
                totals[(tags, ts)] = totals.get((tags, ts), 0) + round(value * S)
    assert totals and all(0 < total <= INTERVAL - ts % INTERVAL for (_, ts), total in totals.items())


async def test_an_output_that_refuses_the_delete_is_told_and_keeps_going(influx2: InfluxV2, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Test that an output whose server refuses the delete (403: a token without the permission) logs
    that it cannot be corrected, counts it, and delivers the points after the record: the old
    line stays as it was written, nothing is lost, nothing is held back."""
    from collector.influx.sink import OutboxSink
    from tests.fixtures._ports import until
    from tests.test_stepback_outputs import outbox

    influx2.refuse_delete = True
    output = OutputSettings.model_validate({"name": "cloud", "url": influx2.url, "api": "v2", "org": "acme",
                                            "bucket": "avail", "token": TOKEN})
    scenario = Scenario()
    sink = OutboxSink([output], outbox(tmp_path))
    async with sink:
        await sink.write([*scenario.before(), scenario.record.to_line(), *scenario.after()])
        await until(lambda: sink.stats()["depth_points"] == 0, 30, "everything delivered")
        counters = dict(sink.senders["cloud"].counters)
    assert counters["uncorrected"] == 1 and counters["corrected"] == 0
    assert len(influx2.stored()) == len(scenario.before()) + len(scenario.after())
    assert "output cloud cannot correct what it stores" in caplog.text and "insufficient permissions" in caplog.text


async def test_an_output_without_a_corrector_says_so_once_and_keeps_going(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Test that an output whose writer has no corrector (here a stand-in writer) logs once that it
    cannot rewrite what it stores and delivers the points after the record."""
    from collector.influx.sink import OutboxSink
    from tests.fixtures._ports import until
    from tests.test_stepback_outputs import outbox

    class Plain:
        def __init__(self) -> None:
            self.lines: list[str] = []

        async def write(self, body: bytes) -> None:
            self.lines += body.decode().split("\n")

        async def check(self) -> str:
            return "a plain writer"

        async def close(self) -> None:
            return None

    writer = Plain()
    scenario = Scenario()
    output = OutputSettings(name="plain", url="http://127.0.0.1:9", api="v1", database="d")
    sink = OutboxSink([output], outbox(tmp_path), writer=writer)
    async with sink:
        await sink.write([*scenario.before(), scenario.record.to_line(), scenario.record.to_line(), *scenario.after()])
        await until(lambda: sink.stats()["depth_points"] == 0, 30, "everything delivered")
    assert writer.lines == scenario.before() + scenario.after()
    assert caplog.text.count("output plain cannot rewrite what it stores") == 1
