"""The capacity routes of the collector's HTTP server: ``/capacity`` (the page),
``/api/v1/capacity``, ``/api/v1/capacity/{machine}`` and ``/api/v1/openapi.json``."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector.capacity.openapi import openapi
from collector.capacity.records import FilterError, matcher, matches

if TYPE_CHECKING:
    from collector.capacity.service import Capacity

PREFIX = "/api/v1/capacity"


def page() -> bytes:
    return resources.files("collector.capacity").joinpath("page.html").read_bytes()


def _json(data: object) -> Response:
    return JSONResponse(data)


def routes(capacity: Capacity, *, token: bool) -> list[Route]:
    """``token``: whether the API needs a bearer token (said in the OpenAPI document)."""

    async def the_page(_: Request) -> Response:
        return Response(page(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def description(_: Request) -> Response:
        return _json(openapi(token))

    async def listing(request: Request) -> Response:
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        try:
            wanted = matcher(query)
        except FilterError as exc:
            return PlainTextResponse(f"{exc}\n", 400)
        return _json([r for r in capacity.records() if matches(r, wanted)])

    async def one(request: Request) -> Response:
        machine = request.path_params["machine"]
        rec = capacity.record(machine) if machine and "/" not in machine else None
        if rec is None:  # the same answer for an unknown and a non-public machine: nothing leaks
            return PlainTextResponse("no public machine with this id\n", 404)
        return _json(rec)

    return [Route("/capacity", the_page), Route("/api/v1/openapi.json", description),
            Route(PREFIX, listing), Route(PREFIX + "/{machine:path}", one)]
