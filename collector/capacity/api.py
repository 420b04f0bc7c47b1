"""The capacity routes of the collector's HTTP server: ``/capacity`` (the page),
``/api/v1/capacity``, ``/api/v1/capacity/{machine}``, ``/api/v1/openapi.json``, and the public
machines as Asset Administration Shells at the AAS API paths (collector.aas.api)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector.aas import api as aas_api
from collector.aas.builder import Key, Links
from collector.capacity.openapi import openapi
from collector.capacity.records import FilterError, matcher, matches

if TYPE_CHECKING:
    from collector.capacity.service import Capacity

PREFIX = "/api/v1/capacity"


def page() -> bytes:
    return resources.files("collector.capacity").joinpath("page.html").read_bytes()


def _json(data: object) -> Response:
    return JSONResponse(data)


def catalog(capacity: Capacity) -> aas_api.Catalog:
    """The public machines for the AAS routes: their records as the capacity API serves them."""

    def keys() -> list[Key]:
        return sorted((m.info.plant, m.info.id) for m in capacity.public())

    def records(keys: Sequence[Key]) -> list[dict[str, Any]]:
        wanted = set(keys)
        found = {(r["plant"], r["machine"]): r for r in capacity.records({m for _, m in keys})}
        return [found[k] for k in keys if k in found and k in wanted]

    def links(base: str, key: Key) -> Links:
        return Links(f"{base}{PREFIX}/{quote(key[1], safe='')}", capacity.settings.history_url)

    return aas_api.Catalog(keys, records, links)


def described(token: bool) -> dict[str, Any]:
    """The OpenAPI document: the capacity API's, and the AAS routes'."""
    doc = openapi(token)
    paths, schemas = aas_api.openapi_parts({"bearer": []} if token else None)
    doc["paths"].update(paths)
    doc["components"]["schemas"].update(schemas)
    return doc


def routes(capacity: Capacity, *, token: bool) -> list[Route]:
    """``token``: whether the API needs a bearer token (said in the OpenAPI document)."""

    async def the_page(_: Request) -> Response:
        return Response(page(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def description(_: Request) -> Response:
        return _json(described(token))

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
            Route(PREFIX, listing), Route(PREFIX + "/{machine:path}", one), *aas_api.routes(catalog(capacity))]
