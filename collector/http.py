"""The small status HTTP server: /healthz, /readyz, /metrics (Prometheus text) and
/api/v1/machines (JSON). Plain asyncio streams: four read-only GET routes do not justify a
web framework on a small gateway."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from collector.capacity import api as capacity_api
from collector.core.figures import availability, idle_hours, utilization
from collector.core.model import NS_PER_S, State
from collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from collector.metrics import metrics_text

if TYPE_CHECKING:
    from collector.capacity.service import Capacity
    from collector.config import HttpSettings
    from collector.engine import Engine

log = logging.getLogger(__name__)

# `POST /api/v1/reload`: (taken, lines) from collector.reload.Reloader.reload
ReloadHook = Callable[[], Awaitable[tuple[bool, list[str]]]]
# `/api/v1/machines?state=idle&line=turning`: the fields a query may filter on (exact match; a
# field given several times matches any of its values).
MACHINE_FILTERS = ("machine", "plant", "line", "cell", "state")


def machines_json(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for mid, st in sorted(engine.snapshot().items()):
        out.append({
            "machine": mid, "plant": st.machine.plant, "line": st.machine.line, "cell": st.machine.cell,
            "state": st.state.value, "since": st.since_ns / NS_PER_S, "reason": st.reason,
            "seconds": {s.value: st.totals_ns.get(s, 0) / NS_PER_S for s in State},
            "utilization": utilization(st.totals_ns), "availability": availability(st.totals_ns),
            "idle_hours": idle_hours(st.totals_ns),
        })
    return out


def machines_route(engine: Engine, path: str, query: str) -> tuple[str, Any]:
    """``/api/v1/machines`` (filtered by the query) and ``/api/v1/machines/{id}``: (status, JSON body)."""
    machines = machines_json(engine)
    if path != "/api/v1/machines":
        mid = urllib.parse.unquote(path.removeprefix("/api/v1/machines/"))
        found = [m for m in machines if m["machine"] == mid]
        return ("200 OK", found[0]) if found else ("404 Not Found", {"error": f"no machine {mid!r}"})
    filters = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(filters) - set(MACHINE_FILTERS))
    if unknown:
        return "400 Bad Request", {"error": f"unknown filter(s) {', '.join(unknown)}; "
                                            f"known: {', '.join(MACHINE_FILTERS)}"}
    return "200 OK", [m for m in machines if all(m[k] in values for k, values in filters.items())]


def readiness(engine: Engine) -> tuple[str, bytes]:
    """``/readyz``: ready once every source is connected; while the collector waits for a
    synchronized clock, not ready, with why; started without one, ready with a warning."""
    if engine.sync.reason is not None:
        return "503 Service Unavailable", f"not ready: {engine.sync.reason}\n".encode()
    down = [s for s, up in engine.stats.source_online.items() if not up]
    if down or not engine.stats.source_online:
        return "503 Service Unavailable", f"sources not connected: {', '.join(down) or 'none yet'}\n".encode()
    warning = engine.sync.status()
    return "200 OK", (b"ok\n" if warning is None else f"ok; warning: {warning}\n".encode())


async def _reload_route(method: str, reload: ReloadHook | None) -> tuple[str, Any]:
    if reload is None:
        return "404 Not Found", {"error": "reload is not available here"}
    if method != "POST":
        return "405 Method Not Allowed", {"error": "use POST"}
    taken, lines = await reload()
    if taken:
        return "200 OK", {"reloaded": True, "changes": lines}
    return "422 Unprocessable Entity", {"reloaded": False, "errors": lines}


def authorized(settings: HttpSettings, authorization: str | None) -> bool:
    """Whether a request to /api/* may proceed: no ``http.token`` set, or the request's
    ``Authorization`` header is ``Bearer <token>`` (compared in constant time)."""
    if settings.token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    expected = settings.token.get_secret_value()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


async def _handle(engine: Engine, settings: HttpSettings, capacity: Capacity | None,
                  reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  reload: ReloadHook | None = None) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), 5)
        authorization: str | None = None
        while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "authorization":  # the only header a route needs
                authorization = value.strip()
        parts = request.decode("latin-1").split()
        path = parts[1].split("?")[0] if len(parts) >= 2 else ""
        query = parts[1].partition("?")[2] if len(parts) >= 2 else ""
        status, ctype, body = "200 OK", "text/plain; charset=utf-8", b"ok\n"
        extra: dict[str, str] = {}
        if path.startswith("/api/") and not authorized(settings, authorization):
            status, body = "401 Unauthorized", b"a bearer token is required\n"
            extra = {"WWW-Authenticate": 'Bearer realm="collector"'}
        elif capacity is not None and capacity_api.handles(path):
            status, ctype, body, extra = capacity_api.respond(capacity, parts[0], parts[1],
                                                              token=settings.token is not None)
        elif path == "/healthz":
            pass
        elif path == "/readyz":
            status, body = readiness(engine)
        elif path == "/metrics":
            ctype, body = METRICS_CONTENT_TYPE, metrics_text(engine)
        elif path == "/api/v1/machines" or path.startswith("/api/v1/machines/"):
            status, doc = machines_route(engine, path, query)
            ctype, body = "application/json", json.dumps(doc).encode()
        elif path == "/api/v1/reload":
            status, doc = await _reload_route(parts[0], reload)
            ctype, body = "application/json", json.dumps(doc).encode()
        else:
            status, body = "404 Not Found", (b"not found: try /healthz /readyz /metrics /api/v1/machines "
                                             b"/api/v1/machines/{id}\n")
        headers = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        head_only = bool(parts) and parts[0] == "HEAD"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{headers}"
                     "Connection: close\r\n\r\n".encode() + (b"" if head_only else body))
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve_status(engine: Engine, settings: HttpSettings, *, reload: ReloadHook | None = None,
                       capacity: Capacity | None = None) -> AsyncIterator[int | None]:
    """Serve while the block runs; yields the bound port (None when disabled). ``reload``
    serves ``POST /api/v1/reload``; ``capacity`` the capacity page and API (collector.capacity.api)."""
    if not settings.enabled:
        yield None
        return
    server = await asyncio.start_server(lambda r, w: _handle(engine, settings, capacity, r, w, reload),
                                        settings.host, settings.port)
    port: int = server.sockets[0].getsockname()[1]
    log.info("status HTTP on http://%s:%d (/healthz /readyz /metrics /api/v1/machines)", settings.host, port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
