"""The collector's HTTP routes, in one table: status (/healthz, /readyz, /metrics), the operator
API (/api/v1/machines, POST /api/v1/reload), and the capacity page and API
(collector.capacity.api). Starlette routes handlers a few lines each; bearer auth for /api/* is
one middleware; the server and its limits are in collector.httpserver."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector.aas import api as aas_api
from collector.capacity import api as capacity_api
from collector.httpserver import serve
from collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from collector.metrics import metrics_text
from collector.records import machine_status

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
NOT_FOUND = "not found: try /healthz /readyz /metrics /api/v1/machines /api/v1/machines/{id}\n"


def machines_json(engine: Engine) -> list[dict[str, Any]]:
    return [machine_status(mid, st) for mid, st in sorted(engine.snapshot().items())]  # collector/records.py


def readiness(engine: Engine) -> tuple[int, str]:
    """``/readyz``: ready once every source is connected; while the collector waits for a
    synchronized clock, not ready, with why; started without one, ready with a warning."""
    if engine.sync.reason is not None:
        return 503, f"not ready: {engine.sync.reason}\n"
    down = [s for s, up in engine.stats.source_online.items() if not up]
    if down or not engine.stats.source_online:
        return 503, f"sources not connected: {', '.join(down) or 'none yet'}\n"
    warning = engine.sync.status()
    return 200, "ok\n" if warning is None else f"ok; warning: {warning}\n"


def authorized(settings: HttpSettings, authorization: str | None) -> bool:
    """Whether a request to /api/* may proceed: no ``http.token`` set, or the request's
    ``Authorization`` header is ``Bearer <token>`` (compared in constant time)."""
    if settings.token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    expected = settings.token.get_secret_value()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class _BearerAuth(BaseHTTPMiddleware):
    """Every /api/* request, and the AAS API's, needs the bearer token when ``http.token`` is set."""

    def __init__(self, app: Any, settings: HttpSettings) -> None:
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        protected = request.url.path.startswith(("/api/", *aas_api.PATHS))
        if protected and not authorized(self.settings, request.headers.get("authorization")):
            return PlainTextResponse("a bearer token is required\n", 401,
                                     headers={"WWW-Authenticate": 'Bearer realm="collector"'})
        return await call_next(request)


def app(engine: Engine, settings: HttpSettings, *, reload: ReloadHook | None = None,
        capacity: Capacity | None = None) -> Starlette:
    """The route table. ``reload`` serves ``POST /api/v1/reload``; ``capacity`` the capacity
    page and API."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        status, text = readiness(engine)
        return PlainTextResponse(text, status)

    async def metrics(_: Request) -> Response:
        return Response(metrics_text(engine), media_type=METRICS_CONTENT_TYPE)

    async def machines(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - set(MACHINE_FILTERS))
        if unknown:
            return JSONResponse({"error": f"unknown filter(s) {', '.join(unknown)}; "
                                          f"known: {', '.join(MACHINE_FILTERS)}"}, 400)
        filters = {k: request.query_params.getlist(k) for k in request.query_params}
        return JSONResponse([m for m in machines_json(engine) if all(m[k] in v for k, v in filters.items())])

    async def machine(request: Request) -> Response:
        mid = request.path_params["machine"]
        found = [m for m in machines_json(engine) if m["machine"] == mid]
        return JSONResponse(found[0]) if found else JSONResponse({"error": f"no machine {mid!r}"}, 404)

    async def reloaded(_: Request) -> Response:
        assert reload is not None
        taken, lines = await reload()
        if taken:
            return JSONResponse({"reloaded": True, "changes": lines})
        return JSONResponse({"reloaded": False, "errors": lines}, 422)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/api/v1/machines", machines),
        Route("/api/v1/machines/{machine:path}", machine),
    ]
    if reload is not None:
        routes.append(Route("/api/v1/reload", reloaded, methods=["POST"]))
    if capacity is not None:
        routes += capacity_api.routes(capacity, token=settings.token is not None)

    async def not_found(_: Request, __: Exception) -> Response:
        return PlainTextResponse(NOT_FOUND, 404)

    return Starlette(routes=routes, middleware=[Middleware(_BearerAuth, settings=settings)],
                     exception_handlers={404: not_found})


@contextlib.asynccontextmanager
async def serve_status(engine: Engine, settings: HttpSettings, *, reload: ReloadHook | None = None,
                       capacity: Capacity | None = None) -> AsyncIterator[int | None]:
    """Serve while the block runs; yields the bound port (None when disabled)."""
    if not settings.enabled:
        yield None
        return
    async with serve(app(engine, settings, reload=reload, capacity=capacity), settings.host, settings.port) as port:
        log.info("HTTP on http://%s:%d (/healthz /readyz /metrics /api/v1/machines%s)", settings.host, port,
                 " /capacity /api/v1/capacity /shells /submodels" if capacity is not None else "")
        yield port
