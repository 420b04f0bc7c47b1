"""The InfluxDB writers, one per API, and how their failures are classified.

    WriteError
    ├── kind "retry"     connection refused/reset, timeout, 5xx: keep the points, back off
    ├── kind "throttle"  429, or 503 with Retry-After: keep the points, wait as told
    ├── kind "config"    401/403 (token, user), 404 (no such bucket/database): keep the
    │                    points and back off; a person must fix the config or the server
    └── kind "data"      400/413/422 caused by the points (field type conflict, bad line):
                         the sender bisects the batch and dead-letters the bad points

Library errors are wrapped at this boundary (``raise WriteError(...) from exc``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar, cast

import httpx

from collector.core.errors import CollectorError
from collector.core.timeunits import NS_PER_UNIT
from collector.influx.config import InfluxSettings

log = logging.getLogger(__name__)

Kind = Literal["retry", "throttle", "config", "data"]
T = TypeVar("T")


class WriteError(CollectorError):
    def __init__(self, kind: Kind, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


def classify(status: int, body: str, retry_after: str | None) -> WriteError:
    """A non-2xx answer as a ``WriteError`` of the right kind."""
    message = _error_text(body) or f"HTTP {status}"
    after = _seconds(retry_after)
    if status == 429 or (status == 503 and after is not None):
        return WriteError("throttle", f"throttled ({status}): {message}", status=status, retry_after=after)
    if status in (401, 403):
        return WriteError("config", f"not authorised ({status}): check the token / user name and password: {message}",
                          status=status)
    if status == 404:
        return WriteError("config", f"not found (404): does the bucket/database exist? {message}", status=status)
    if status in (400, 413, 422):
        return WriteError("data", f"rejected ({status}): {message}", status=status)
    return WriteError("retry", f"server error ({status}): {message}", status=status)


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or data)[:500]
    return str(data)[:500]


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None




def with_precision(body: bytes, precision: str) -> bytes:
    """Lines carry ns timestamps; for a coarser precision the timestamp is rounded down."""
    divisor = NS_PER_UNIT[precision]
    if divisor == 1:
        return body
    out = []
    for line in body.split(b"\n"):
        head, _, ts = line.rpartition(b" ")
        out.append(head + b" " + str(int(ts) // divisor).encode())
    return b"\n".join(out)


def _key(settings: InfluxSettings) -> str:
    """Where these settings sit in the YAML, for messages: `influx` or `outputs[1]`."""
    return getattr(settings, "config_key", "influx")


def _timeout(settings: InfluxSettings) -> str:
    return f"timeout after {settings.timeout:g}s writing to {settings.url}"


class Writer(Protocol):
    async def write(self, body: bytes) -> None:
        """Deliver ``body`` (line protocol, ns timestamps, one point per line) or raise ``WriteError``."""

    async def check(self) -> str:
        """Start-up check: a one-line description of the target; raises ``WriteError``."""

    async def close(self) -> None: ...


class V1Writer:
    """InfluxDB 1.x: ``POST /write?db=&rp=&precision=`` with user name and password (httpx:
    influxdb-client speaks only the v2 API)."""

    path = "/write"

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(base_url=settings.url.rstrip("/"), timeout=settings.timeout)

    async def write(self, body: bytes) -> None:
        await self._post(with_precision(body, self.settings.precision))

    async def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.settings.gzip:
            body = gzip.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        try:
            response = await self.client.post(self.path, params=self.params(), content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise WriteError("retry", _timeout(self.settings)) from exc
        except httpx.TransportError as exc:
            raise WriteError("retry", f"cannot reach {self.settings.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise classify(response.status_code, response.text, response.headers.get("Retry-After"))

    async def close(self) -> None:
        await self.client.aclose()

    async def _query(self, method: str, params: dict[str, str]) -> httpx.Response:
        try:
            return await self.client.request(method, "/query", params=params)
        except httpx.TransportError as exc:
            raise WriteError("retry", f"cannot reach {self.settings.url}: {exc or type(exc).__name__}") from exc


    def params(self) -> dict[str, str]:
        s = self.settings
        params = {"db": s.database, "precision": s.precision}
        if s.retention_policy:
            params["rp"] = s.retention_policy
        if s.username:
            params["u"] = s.username
            params["p"] = s.password.get_secret_value() if s.password else ""
        return params

    async def check(self) -> str:
        s = self.settings
        if not s.database:
            raise WriteError("config", f"{_key(s)}.database is empty (api v1 writes to a database)")
        auth = {"u": s.username, "p": s.password.get_secret_value() if s.password else ""} if s.username else {}
        if s.create_database:
            r = await self._query("POST", {**auth, "q": f'CREATE DATABASE "{s.database}"'})
            if r.status_code >= 300:
                raise classify(r.status_code, r.text, None)
        r = await self._query("GET", {**auth, "q": "SHOW DATABASES"})
        if r.status_code >= 300:
            raise classify(r.status_code, r.text, None)
        names = {v[0] for res in r.json().get("results", []) for ser in res.get("series", [])
                 for v in ser.get("values", [])}
        if s.database not in names:
            raise WriteError("config", f"database {s.database!r} does not exist on {s.url} "
                                       f"(create it, or set {_key(s)}.create_database: true)", status=404)
        return f"InfluxDB 1.x at {s.url}, database {s.database}"


class V2Writer:
    """InfluxDB 2.x, 3.x, Cloud and 1.8+ through influxdb-client's synchronous write API (not
    its batching mode: the outbox batches and retries), run in a worker thread."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        self.settings = settings
        # WritePrecision's members are plain strings in the library; the cast names the type it wants.
        self.precision = cast(WritePrecision, settings.precision)
        token = settings.token.get_secret_value() if settings.token else ""
        self.client = InfluxDBClient(url=settings.url, token=token, org=settings.org,
                                     timeout=int(settings.timeout * 1000), enable_gzip=settings.gzip)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._call, self._write_sync, body)

    def _write_sync(self, body: bytes) -> None:
        s = self.settings
        body = with_precision(body, s.precision)
        self.write_api.write(bucket=s.bucket, org=s.org, record=body, write_precision=self.precision)

    async def check(self) -> str:
        return await asyncio.to_thread(self._call, self._check_sync)

    def _check_sync(self) -> str:
        s = self.settings
        if not s.bucket:
            raise WriteError("config", f"{_key(s)}.bucket is empty (api v2 writes to a bucket)")
        buckets = self.client.buckets_api()
        if buckets.find_bucket_by_name(s.bucket) is None:  # type: ignore[no-untyped-call]  # untyped in the library
            if not s.create_bucket:
                raise WriteError("config", f"bucket {s.bucket!r} does not exist in org {s.org!r} "
                                           f"(create it, or set {_key(s)}.create_bucket: true)", status=404)
            buckets.create_bucket(bucket_name=s.bucket, org=s.org)
            log.info("created bucket %s in org %s", s.bucket, s.org)
        return f"InfluxDB v2 API at {s.url}, org {s.org}, bucket {s.bucket}"

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn``, wrapping influxdb-client and urllib3 errors into ``WriteError``."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError, ReadTimeoutError

        try:
            return fn(*args)
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            raise classify(exc.status or 0, body, retry_after) from exc
        except ReadTimeoutError as exc:
            raise WriteError("retry", _timeout(self.settings)) from exc
        except (HTTPError, OSError) as exc:
            raise WriteError("retry", f"cannot reach {self.settings.url}: {exc}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


class VictoriaMetricsWriter(V1Writer):
    """VictoriaMetrics' InfluxDB endpoint: ``POST <url>/write``. The url may carry a path:
    single-node ``/influx``, or a cluster's ``/insert/<accountID[:projectID]>/influx`` (the
    tenant). ``database`` is sent as ``db`` (VictoriaMetrics makes it a label) only when set.
    A single-node server answers 400 "unsupported path" to a tenant URL: that is a config
    error (kept and retried), not the points' fault (which would dead-letter them all)."""

    path = "write"  # relative: appended to the url's path by httpx

    async def write(self, body: bytes) -> None:
        try:
            await super().write(body)
        except WriteError as exc:
            raise _path_error(exc, self.settings) from exc

    def params(self) -> dict[str, str]:
        s = self.settings
        params: dict[str, str] = {"precision": s.precision}
        if s.database:
            params["db"] = s.database
        if s.username:
            params["u"] = s.username
            params["p"] = s.password.get_secret_value() if s.password else ""
        return params

    async def check(self) -> str:
        """An empty write: accepted (204) where the url is one VictoriaMetrics serves."""
        try:
            await self._post(b"")
        except WriteError as exc:
            raise _path_error(exc, self.settings) from exc
        return f"VictoriaMetrics at {self.settings.url}"


def _path_error(exc: WriteError, settings: InfluxSettings) -> WriteError:
    if exc.kind == "data" and "unsupported path" in str(exc):
        return WriteError("config", f"{settings.url}/write is not served there ({exc}); a single-node "
                                    "VictoriaMetrics takes `http://host:8428` or `/influx`, a cluster's vminsert "
                                    f"`/insert/<accountID>/influx` (see {_key(settings)}.url)", status=exc.status)
    return exc


def make_writer(settings: InfluxSettings) -> Writer:
    if settings.api == "v1":
        return V1Writer(settings)
    if settings.api == "victoriametrics":
        return VictoriaMetricsWriter(settings)
    return V2Writer(settings)
