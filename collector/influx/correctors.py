"""Applying a correction record (collector/core/correction.py) to what an output stores.

    corrector = make_corrector(writer)     # None: this output cannot be corrected
    work = await corrector.read(record)    # read back, corrected: kept in the outbox
    await corrector.delete(record)         # the span, from the output
    points = await corrector.rewrite(work)

The sender keeps ``work`` in the outbox before ``delete``, and moves its cursor past the record
only after ``rewrite`` returned: a crash in between deletes and writes the kept work again (the
delete is idempotent, and the rewrite writes every point of the work), never one read back from
a half-deleted span. Each output reads back what it holds itself (its machine filter and
dropped fields applied), so a correction never adds to an output what it did not have.

- InfluxDB 1.x: ``SELECT`` the span (fields typed by ``SHOW FIELD KEYS``), ``DELETE`` it by
  machine and time, write the corrected points through the output's writer.
- InfluxDB 2.x: a Flux query reads the span, ``/api/v2/delete`` deletes it (one predicate per
  measurement and machine: predicates know neither ``OR`` nor regular expressions).
- VictoriaMetrics (single node): its delete API deletes whole series, with no time range, so
  the machines' series are exported whole (``/api/v1/export``), deleted
  (``/api/v1/admin/tsdb/delete_series``) and imported again with the span corrected
  (``/api/v1/import``): the documented way to change stored samples.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from collector.core.correction import ROLLUP_MEASUREMENT, STATE_MEASUREMENT, Correction, StoredPoint, corrected
from collector.core.lineprotocol import encode
from collector.influx.writers import V1Writer, V2Writer, VictoriaMetricsWriter, WriteError, Writer, classify

log = logging.getLogger("collector.influx.sink")

MEASUREMENTS = (STATE_MEASUREMENT, ROLLUP_MEASUREMENT)
MACHINES_PER_STATEMENT = 100  # an InfluxQL statement or a series selector names at most this many
WRITE_LINES = 5000  # the corrected points go in writes of this many lines


class Corrector(Protocol):
    async def read(self, record: Correction) -> bytes:
        """What replaces the span, read back from the output and corrected (kept by the caller)."""

    async def delete(self, record: Correction) -> None:
        """Delete the span (idempotent)."""

    async def rewrite(self, work: bytes) -> int:
        """Write ``work``; the points written."""


def make_corrector(writer: Writer) -> Corrector | None:
    """The writer's corrector; None where the writer's URL cannot reach the APIs a correction
    needs (a VictoriaMetrics cluster: export and delete are vmselect's, not vminsert's)."""
    if isinstance(writer, VictoriaMetricsWriter):
        if "/insert/" in urlsplit(writer.settings.url).path:
            return None
        return VictoriaMetricsCorrector(writer)
    if isinstance(writer, V1Writer):
        return V1Corrector(writer)
    if isinstance(writer, V2Writer):
        return V2Corrector(writer)
    return None


def _lines(points: Iterable[StoredPoint]) -> list[str]:
    return [encode(p.measurement, p.tags, p.fields, p.ts_ns) for p in points]


async def _write_lines(writer: Writer, work: bytes) -> int:
    lines = work.decode().split("\n") if work else []
    for i in range(0, len(lines), WRITE_LINES):
        await writer.write("\n".join(lines[i:i + WRITE_LINES]).encode())
    return len(lines)


def _groups(machines: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [machines[i:i + MACHINES_PER_STATEMENT] for i in range(0, len(machines), MACHINES_PER_STATEMENT)]


# -- InfluxDB 1.x -------------------------------------------------------------------------------

def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _where(machines: tuple[str, ...], record: Correction) -> str:
    which = " OR ".join(f'"machine" = {_literal(m)}' for m in machines)
    return f"({which}) AND time >= {record.from_ns} AND time <= {record.to_ns}"


def _typed(value: Any, kind: str) -> object:
    """A JSON value as the field type InfluxDB stores (JSON gives a float like 2.0 as 2)."""
    if kind == "float":
        return float(value)
    if kind == "integer":
        return int(value)
    if kind == "boolean":
        return bool(value)
    return str(value)


class V1Corrector:
    def __init__(self, writer: V1Writer) -> None:
        self.writer = writer

    def _from(self, measurement: str) -> str:
        rp = self.writer.settings.retention_policy
        return f"{_ident(rp)}.{_ident(measurement)}" if rp else _ident(measurement)

    async def _statement(self, method: str, q: str) -> list[dict[str, Any]]:
        params = {**self.writer.params(), "q": q, "epoch": "ns"}
        params.pop("precision", None)
        params.pop("rp", None)
        response = await self.writer._query(method, params)
        if response.status_code >= 300:
            raise classify(response.status_code, response.text, response.headers.get("Retry-After"))
        series: list[dict[str, Any]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise WriteError("data", f"InfluxDB refused {q[:200]!r}: {result['error']}")
            series += result.get("series", [])
        return series

    async def read(self, record: Correction) -> bytes:
        points: list[StoredPoint] = []
        for measurement in MEASUREMENTS:
            keys = await self._statement("POST", f"SHOW FIELD KEYS FROM {self._from(measurement)}")
            types = {row[0]: row[1] for s in keys for row in s.get("values", [])}
            for machines in _groups(record.machines):
                q = f"SELECT * FROM {self._from(measurement)} WHERE {_where(machines, record)} GROUP BY *"
                for s in await self._statement("POST", q):  # POST: a long query is no long URL
                    tags = {k: v for k, v in (s.get("tags") or {}).items() if v}
                    columns = s["columns"]
                    for values in s["values"]:
                        fields = {c: _typed(v, types.get(c, "string")) for c, v in zip(columns[1:], values[1:],
                                                                                     strict=True) if v is not None}
                        points.append(StoredPoint(s["name"], tags, fields, int(values[0])))
        return "\n".join(_lines(corrected(points, record))).encode()

    async def delete(self, record: Correction) -> None:
        for measurement in MEASUREMENTS:
            for machines in _groups(record.machines):
                # DELETE takes no retention policy: it deletes from every one of the database
                await self._statement("POST", f"DELETE FROM {_ident(measurement)} WHERE {_where(machines, record)}")

    async def rewrite(self, work: bytes) -> int:
        return await _write_lines(self.writer, work)


# -- InfluxDB 2.x -------------------------------------------------------------------------------

def _flux_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _rfc3339(ns: int) -> str:
    """ns since the epoch as RFC 3339 with nanoseconds (Flux ``range`` and ``/api/v2/delete``)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    day = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return day.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


class V2Corrector:
    """Through influxdb-client (its query and delete APIs), in a worker thread like the writer."""

    def __init__(self, writer: V2Writer) -> None:
        self.writer = writer

    async def read(self, record: Correction) -> bytes:
        return await asyncio.to_thread(self.writer._call, self._read_sync, record)

    def _read_sync(self, record: Correction) -> bytes:
        s = self.writer.settings
        points: dict[tuple[str, tuple[tuple[str, str], ...], int], StoredPoint] = {}
        for machines in _groups(record.machines):
            which = " or ".join(f"r.machine == {_flux_string(m)}" for m in machines)
            kinds = " or ".join(f"r._measurement == {_flux_string(m)}" for m in MEASUREMENTS)
            # range's stop is exclusive: one ns past the span's last label
            flux = (f"from(bucket: {_flux_string(s.bucket)})\n"
                    f"  |> range(start: {_rfc3339(record.from_ns)}, stop: {_rfc3339(record.to_ns + 1)})\n"
                    f"  |> filter(fn: (r) => ({kinds}) and ({which}))")
            from influxdb_client.domain.dialect import Dialect

            dialect = Dialect(header=True, delimiter=",", annotations=["datatype"],  # type: ignore[no-untyped-call]
                              date_time_format="RFC3339Nano")  # untyped in the library
            rows = self.writer.client.query_api().query_csv(flux, org=s.org, dialect=dialect)
            for measurement, tags, ts, name, value in _flux_rows(rows):
                key = (measurement, tuple(sorted(tags.items())), ts)
                points.setdefault(key, StoredPoint(measurement, tags, {}, ts)).fields[name] = value
        return "\n".join(_lines(corrected(points.values(), record))).encode()

    async def delete(self, record: Correction) -> None:
        await asyncio.to_thread(self.writer._call, self._delete_sync, record)

    async def rewrite(self, work: bytes) -> int:
        return await _write_lines(self.writer, work)

    def _delete_sync(self, record: Correction) -> None:
        s = self.writer.settings
        api = self.writer.client.delete_api()
        for measurement in MEASUREMENTS:
            for machine in record.machines:
                # stop one ns past the span: the same span whether the server counts its stop in or not
                api.delete(_rfc3339(record.from_ns), _rfc3339(record.to_ns + 1),
                           f'_measurement={_flux_string(measurement)} AND machine={_flux_string(machine)}',
                           bucket=s.bucket, org=s.org)


_FLUX_COLUMNS = ("result", "table")


def _flux_rows(rows: Iterable[list[str]]) -> Iterable[tuple[str, dict[str, str], int, str, object]]:
    """Flux's annotated CSV (``#datatype`` on): (measurement, tags, time, field, typed value) per
    row. Each table starts with its annotation, then its header; an empty row ends it."""
    types: list[str] = []
    header: list[str] = []
    for row in rows:
        if not row or not any(row):
            types, header = [], []
        elif row[0] == "#datatype":
            types, header = row, []
        elif row[0].startswith("#"):
            continue
        elif not header:
            header = row
        else:
            cells = dict(zip(header, row, strict=False))
            kind = dict(zip(header, types, strict=False)).get("_value", "string")
            tags = {k: v for k, v in cells.items() if k and v and not k.startswith("_") and k not in _FLUX_COLUMNS}
            value = _flux_value(cells["_value"], kind)
            yield cells["_measurement"], tags, rfc3339_ns(cells["_time"]), cells["_field"], value


def _flux_value(text: str, kind: str) -> object:
    if kind == "double":
        return float(text)
    if kind in ("long", "unsignedLong"):
        return int(text)
    if kind == "boolean":
        return text == "true"
    return text


def rfc3339_ns(text: str) -> int:
    """RFC 3339 with up to nine digits of fraction, in UTC (``Z``), as ns since the epoch."""
    whole, _, frac = text.rstrip("Z").partition(".")
    day = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return int(day.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


# -- VictoriaMetrics ----------------------------------------------------------------------------

EXPORT_END_S = 4_102_444_800  # 2100-01-01: past any label a clock that ran ahead gave
STABLE_WAIT_S = 1.0
STABLE_TRIES = 5


def _samples(series: list[dict[str, Any]]) -> int:
    return sum(len(s["timestamps"]) for s in series)


class VictoriaMetricsCorrector:
    """A single-node VictoriaMetrics: its APIs sit at the server's root, next to ``/influx``.
    It keeps numeric fields only (a metric per field: ``machine_state_state_code``) and
    milliseconds."""

    def __init__(self, writer: VictoriaMetricsWriter) -> None:
        self.writer = writer
        parts = urlsplit(writer.settings.url.rstrip("/"))
        path = re.sub(r"/influx$", "", parts.path)
        self.base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    def _match(self, machines: tuple[str, ...]) -> str:
        names = "|".join(re.escape(m) for m in MEASUREMENTS)
        which = "|".join(re.escape(m) for m in machines)
        labels = f'__name__=~"({names})_.+",machine=~"{_promql(which)}"'
        if self.writer.settings.database:
            labels += f',db="{_promql(self.writer.settings.database)}"'
        return "{" + labels + "}"

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:  # a client per request: corrections are rare, and nothing is left open between them
            s = self.writer.settings
            auth = (s.username, s.password.get_secret_value() if s.password else "") if s.username else None
            async with httpx.AsyncClient(base_url=self.base, timeout=max(30.0, s.timeout), auth=auth) as client:
                response = await client.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise WriteError("retry", f"cannot reach {self.base}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise classify(response.status_code, response.text, response.headers.get("Retry-After"))
        return response

    async def _internal(self, path: str) -> None:
        """A maintenance endpoint VictoriaMetrics documents for this (a proxy may not pass it on:
        then a sample of the last second may be missed, or a cached answer shown a while)."""
        try:
            await self._request("GET", path)
        except WriteError as exc:
            if exc.kind == "retry" and exc.status is None:
                raise
            log.info("VictoriaMetrics %s%s: %s", self.base, path, exc)

    async def _export(self, record: Correction) -> list[dict[str, Any]]:
        await self._internal("/internal/force_flush")  # the last second's samples are in memory, not yet searchable
        series: list[dict[str, Any]] = []
        for machines in _groups(record.machines):
            # All of each series, those ahead of the server's clock too (export ends at "now"
            # unless told): the delete takes them whole.
            response = await self._request("POST", "/api/v1/export", data={
                "match[]": self._match(machines), "start": "0", "end": str(EXPORT_END_S)})
            series += [json.loads(line) for line in response.text.splitlines() if line.strip()]
        return series

    async def read(self, record: Correction) -> bytes:
        """Every sample of the machines' series (the delete takes them whole), the span corrected:
        the body of the import, one series per line as ``/api/v1/export`` gives them."""
        # A sample VictoriaMetrics acknowledged shows in an export a moment later (its buffers;
        # seen in tests even after a force_flush), and the delete would take one not exported
        # with it: export until two exports a second apart agree.
        series = await self._export(record)
        for _ in range(STABLE_TRIES):
            await asyncio.sleep(STABLE_WAIT_S)
            again = await self._export(record)
            if _samples(again) == _samples(series):
                break
            series = again
        else:
            log.warning("VictoriaMetrics %s: the machines' series still changed after %d exports; correcting what "
                        "the last one showed", self.base, STABLE_TRIES + 1)
        points: dict[tuple[str, tuple[tuple[str, str], ...], int], StoredPoint] = {}
        kept: list[dict[str, Any]] = []
        for s in series:
            metric = dict(s["metric"])
            name = metric.pop("__name__", "")
            measurement = next((m for m in MEASUREMENTS if name.startswith(f"{m}_")), None)
            keep: dict[str, list[Any]] = {"values": [], "timestamps": []}
            for value, ms in zip(s["values"], s["timestamps"], strict=True):
                ts = int(ms) * 1_000_000
                if measurement is None or not record.from_ns <= ts <= record.to_ns or \
                        metric.get("machine") not in record.machines:
                    keep["values"].append(value)
                    keep["timestamps"].append(ms)
                    continue
                key = (measurement, tuple(sorted(metric.items())), ts)
                point = points.setdefault(key, StoredPoint(measurement, dict(metric), {}, ts))
                point.fields[name[len(measurement) + 1:]] = value
            if keep["values"]:
                kept.append({"metric": s["metric"], **keep})
        fixed: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, list[Any]]] = {}
        for p in corrected(points.values(), record):
            for field, value in p.fields.items():
                if isinstance(value, bool | str):
                    continue
                one = fixed.setdefault((f"{p.measurement}_{field}", p.key), {"values": [], "timestamps": []})
                one["values"].append(value)
                one["timestamps"].append(p.ts_ns // 1_000_000)
        lines = [json.dumps(s) for s in kept]
        lines += [json.dumps({"metric": {"__name__": name, **dict(key)}, **samples})
                  for (name, key), samples in fixed.items()]
        return "\n".join(lines).encode()

    async def delete(self, record: Correction) -> None:
        for machines in _groups(record.machines):
            await self._request("POST", "/api/v1/admin/tsdb/delete_series", data={"match[]": self._match(machines)})

    async def rewrite(self, work: bytes) -> int:
        if work:
            await self._request("POST", "/api/v1/import", content=work)
        await self._internal("/internal/resetRollupResultCache")  # the guide's last step: no stale cached answers
        return sum(len(json.loads(line)["values"]) for line in work.decode().splitlines() if line.strip())


def _promql(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
