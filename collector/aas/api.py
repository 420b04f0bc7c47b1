"""The AAS HTTP API (Part 2, V3.0), read-only: the AAS Repository's and the Submodel Repository's
read operations over the public machines, as AAS JSON. The plant collector and the exchange mount
the same routes over a ``Catalog`` of their records.

Identifiers in paths are base64url-encoded (padding optional), as Part 2 says. Lists are paged
(``limit``, ``cursor``; ``paging_metadata.cursor`` names the next page). Errors are Part 2
``Result`` objects. Only the default serialization modifiers are served (``level=deep``,
``content=normal``); other modifier values are ignored."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from basyx.aas.adapter.json import AASToJsonEncoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.aas.builder import (
    KINDS,
    SUBMODELS,
    Key,
    Links,
    NotRepresentable,
    id_short,
    parse_shell_id,
    parse_submodel_id,
    shell,
    submodel,
    submodel_ref,
)
from collector.core.errors import BadInputError

JSON = dict[str, Any]
PATHS = ("/shells", "/submodels", "/description")  # what the routes serve, for auth and logs
DEFAULT_LIMIT = 100  # a page when the client names none: the exchange may hold 20,000 machines
MAX_LIMIT = 1000
PROFILES = [
    "https://admin-shell.io/aas/API/3/0/AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    "https://admin-shell.io/aas/API/3/0/SubmodelRepositoryServiceSpecification/SSP-002",
]


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a server shares. ``keys``: (plant, machine) of every public machine, in a stable order;
    ``records``: the capacity records of those keys that are (still) public, in the keys' order;
    ``links``: where a machine's series are read, given the request's base URL."""

    keys: Callable[[], Sequence[Key]]
    records: Callable[[Sequence[Key]], Sequence[Mapping[str, Any]]]
    links: Callable[[str, Key], Links]


class _Problem(BadInputError):
    """A request the AAS API cannot answer (400) or has no object for (404): a Part 2 Result."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _encoded(text: str, status: int = 200) -> Response:
    return Response(text, status, media_type="application/json")


def _json(body: object, status: int = 200) -> Response:
    return _encoded(json.dumps(body, cls=AASToJsonEncoder), status)


def result(status: int, text: str) -> Response:
    """A Part 2 ``Result``: what went wrong, as one message."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return _json({"messages": [{"code": str(status), "messageType": "Error", "text": text, "timestamp": now}]},
                 status)


def decode_id(encoded: str) -> str:
    """A path segment's identifier: base64url (RFC 4648 §5), with or without its '=' padding.
    Not base64url: 400. Bytes that are not UTF-8 cannot be anyone's id: 404, as for an unknown id."""
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Problem(400, f"{encoded[:80]!r} is not a base64url-encoded identifier") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Problem(404, "no object with this id") from exc


def encode_id(ident: str) -> str:
    return base64.urlsafe_b64encode(ident.encode()).decode().rstrip("=")


def _page(request: Request, total: int) -> tuple[int, int]:
    """(start, stop) of the page a request asks for; ``cursor`` is the index to start from."""
    query = request.query_params
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
        start = int(query.get("cursor", "0"))
    except ValueError as exc:
        raise _Problem(400, "limit and cursor must be whole numbers") from exc
    if not 1 <= limit <= MAX_LIMIT or start < 0:
        raise _Problem(400, f"limit must be 1 to {MAX_LIMIT} and cursor not negative")
    return start, min(start + limit, total)


def _paged(items: list[Any], stop: int, total: int) -> JSON:
    return {"paging_metadata": {"cursor": str(stop)} if stop < total else {}, "result": items}


def _each(make: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """``make`` of every item, leaving out those whose ids are too long for AAS."""
    out = []
    for item in items:
        with contextlib.suppress(NotRepresentable):
            out.append(make(item))
    return out


# A handler's answer: a response, or the body still to build. The records are read on the event
# loop (they are the engine's or the index's); building and encoding AAS objects, ~2 ms a
# submodel, runs in a thread so a page of them never holds up the collector's loop.
Reply = Response | Callable[[], object]


def routes(catalog: Catalog) -> list[Route]:
    def links(request: Request, key: Key) -> Links:
        return catalog.links(str(request.base_url).rstrip("/"), key)

    def found(key: Key | None, what: str) -> Mapping[str, Any]:
        recs = [] if key is None else catalog.records([key])
        if not recs:  # the same answer for unknown and private: nothing leaks
            raise _Problem(404, f"no {what} with this id")
        return recs[0]

    def shell_of(request: Request) -> tuple[Key, Mapping[str, Any]]:
        key = parse_shell_id(decode_id(request.path_params["aasIdentifier"]))
        return key or ("", ""), found(key, "shell")

    def handle(fn: Callable[[Request], Reply]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                reply = fn(request)
                if isinstance(reply, Response):
                    return reply
                return _encoded(await asyncio.to_thread(lambda: json.dumps(reply(), cls=AASToJsonEncoder)))
            except _Problem as problem:
                return result(problem.status, str(problem))
            except NotRepresentable:  # asked for by an id that cannot exist: such a machine has none
                return result(404, "no such object")
        return endpoint

    def description(_: Request) -> Reply:
        return _json({"profiles": PROFILES})

    def shells(request: Request) -> Reply:
        wanted = request.query_params.get("idShort")
        keys = [k for k in catalog.keys() if wanted is None or id_short(k[1]) == wanted]
        start, stop = _page(request, len(keys))
        recs = catalog.records(keys[start:stop])  # without those gone since keys() was read
        return lambda: _paged(_each(shell, recs), stop, len(keys))

    def one_shell(request: Request) -> Reply:
        rec = shell_of(request)[1]
        return lambda: shell(rec)

    def submodel_refs(request: Request) -> Reply:
        key, _ = shell_of(request)
        refs = [submodel_ref(key, kind) for kind in KINDS]
        start, stop = _page(request, len(refs))
        return _json(_paged(refs[start:stop], stop, len(refs)))

    def shell_submodel(request: Request) -> Reply:
        key, rec = shell_of(request)
        parsed = parse_submodel_id(decode_id(request.path_params["submodelIdentifier"]))
        if parsed is None or parsed[0] != key:
            raise _Problem(404, "no submodel with this id in this shell")
        kind, where = parsed[1], links(request, key)
        return lambda: submodel(rec, where, kind)

    def submodels(request: Request) -> Reply:
        query = request.query_params
        semantic = None
        if "semanticId" in query:
            try:
                semantic = decode_id(query["semanticId"])
            except _Problem as problem:
                if problem.status != 404:
                    raise
                semantic = ""  # not UTF-8: no submodel has it
        wanted_short = query.get("idShort")
        kinds = [kind for kind, (short, sem) in SUBMODELS.items()
                 if (semantic is None or sem == semantic) and (wanted_short is None or short == wanted_short)]
        keys = catalog.keys()
        total = len(keys) * len(kinds)
        start, stop = _page(request, total)
        # The page's (machine, kind) pairs, machine by machine, without listing every pair.
        first, last = (start // len(kinds), -(-stop // len(kinds))) if kinds else (0, 0)
        recs = {(r["plant"], r["machine"]): r for r in catalog.records(keys[first:last])}
        wanted = [(key, kind) for key in keys[first:last] for kind in kinds][start - first * len(kinds):
                                                                             stop - first * len(kinds)]
        jobs = [(recs[key], links(request, key), kind) for key, kind in wanted if key in recs]
        return lambda: _paged(_each(lambda job: submodel(*job), jobs), stop, total)

    def one_submodel(request: Request) -> Reply:
        parsed = parse_submodel_id(decode_id(request.path_params["submodelIdentifier"]))
        rec = found(None if parsed is None else parsed[0], "submodel")
        assert parsed is not None
        kind, where = parsed[1], links(request, parsed[0])
        return lambda: submodel(rec, where, kind)

    return [
        Route("/description", handle(description)),
        Route("/shells", handle(shells)),
        Route("/shells/{aasIdentifier}", handle(one_shell)),
        Route("/shells/{aasIdentifier}/submodel-refs", handle(submodel_refs)),
        Route("/shells/{aasIdentifier}/submodels/{submodelIdentifier}", handle(shell_submodel)),
        Route("/submodels", handle(submodels)),
        Route("/submodels/{submodelIdentifier}", handle(one_submodel)),
    ]


# -- OpenAPI ----------------------------------------------------------------------------------------

_SPEC = "https://github.com/admin-shell-io/aas-specs-api (Part 2, V3.0)"
_OBJECT: JSON = {"type": "object"}
_B64 = "[A-Za-z0-9_-]"
BASE64URL: JSON = {"type": "string", "minLength": 2,
                   "pattern": f"^({_B64}{{4}})*({_B64}{{2}}(==)?|{_B64}{{3}}=?)?$"}


def _param(name: str, where: str, description: str, schema: JSON | None = None) -> JSON:
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema or {"type": "string"}}


def openapi_parts(security: JSON | None = None) -> tuple[JSON, JSON]:
    """(paths, component schemas) of the AAS routes, for the serving app's OpenAPI document.
    ``security``: the operations' security requirement, if the server has one."""
    sec = {"security": [security]} if security else {}
    error = {"description": "Part 2 Result: what is wrong.",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AasResult"}}}}
    bad = {"400": error}
    unauthorized = {"401": {"description": "A bearer token is required.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}}} if security else {}

    def ok(schema: str, text: str) -> JSON:
        return {"description": text,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    paging = [_param("limit", "query", f"Page size, 1 to {MAX_LIMIT}; default {DEFAULT_LIMIT}.",
                     {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
              _param("cursor", "query", "Where the page starts: `paging_metadata.cursor` of the page before.",
                     {"type": "string", "pattern": "^[0-9]+$"})]
    aas_id = _param("aasIdentifier", "path", "The shell's id, base64url-encoded.", BASE64URL)
    sm_id = _param("submodelIdentifier", "path", "The submodel's id, base64url-encoded.", BASE64URL)

    def op(op_id: str, summary: str, params: list[JSON], responses: JSON) -> JSON:
        return {"get": {"operationId": op_id, "summary": summary, "tags": ["Asset Administration Shell"],
                        "description": f"AAS HTTP API, {_SPEC}. Public machines only.",
                        "parameters": params, "responses": {**responses, **unauthorized}, **sec}}

    paths: JSON = {
        "/description": op("GetAasDescription", "The AAS API profiles served", [],
                           {"200": ok("AasServiceDescription", "Profiles.")}),
        "/shells": op("GetAllAssetAdministrationShells", "Every public machine's shell",
                      [_param("idShort", "query", "Only shells with this idShort."), *paging],
                      {"200": ok("AasPagedResult", "A page of AssetAdministrationShell objects."), **bad}),
        "/shells/{aasIdentifier}": op("GetAssetAdministrationShellById", "One shell", [aas_id],
                                      {"200": ok("AasObject", "AssetAdministrationShell."), **bad,
                                       "404": error}),
        "/shells/{aasIdentifier}/submodel-refs": op(
            "GetAllSubmodelReferencesAasRepository", "The shell's submodel references", [aas_id, *paging],
            {"200": ok("AasPagedResult", "A page of ModelReference objects."), **bad, "404": error}),
        "/shells/{aasIdentifier}/submodels/{submodelIdentifier}": op(
            "GetSubmodelByIdAasRepository", "One submodel of a shell", [aas_id, sm_id],
            {"200": ok("AasObject", "Submodel."), **bad, "404": error}),
        "/submodels": op("GetAllSubmodels", "Every public machine's submodels",
                         [_param("semanticId", "query", "Only submodels with this semantic id, base64url-encoded.",
                                 BASE64URL),
                          _param("idShort", "query", "Only submodels with this idShort "
                                                     "(Nameplate, TimeSeries, Capacity)."), *paging],
                         {"200": ok("AasPagedResult", "A page of Submodel objects."), **bad}),
        "/submodels/{submodelIdentifier}": op("GetSubmodelById", "One submodel", [sm_id],
                                              {"200": ok("AasObject", "Submodel."), **bad, "404": error}),
    }
    schemas: JSON = {
        "AasObject": _OBJECT | {"description": "An AAS metamodel 3.0 object in its JSON serialization "
                                               "(modelType says which)."},
        "AasPagedResult": {"type": "object", "required": ["paging_metadata", "result"],
                           "properties": {"paging_metadata": {"type": "object",
                                                              "properties": {"cursor": {"type": "string"}}},
                                          "result": {"type": "array", "items": _OBJECT}}},
        "AasServiceDescription": {"type": "object", "required": ["profiles"],
                                  "properties": {"profiles": {"type": "array", "items": {"type": "string"}}}},
        "AasResult": {"type": "object", "required": ["messages"],
                      "properties": {"messages": {"type": "array", "items": {
                          "type": "object", "required": ["code", "messageType", "text"],
                          "properties": {"code": {"type": "string"}, "messageType": {"type": "string"},
                                         "text": {"type": "string"}, "timestamp": {"type": "string"}}}}}},
    }
    return paths, schemas
