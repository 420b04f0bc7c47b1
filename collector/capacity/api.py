"""The capacity routes of the status HTTP server: ``/capacity`` (the page), ``/api/v1/capacity``,
``/api/v1/capacity/{machine}`` and ``/api/v1/openapi.json``. Sans-I/O: a request line's parts
in, (status, content type, body, extra headers) out; ``collector.http`` does the socket."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from collector.capacity.openapi import openapi
from collector.capacity.records import FilterError, matcher, matches

if TYPE_CHECKING:
    from collector.capacity.service import Capacity

Response = tuple[str, str, bytes, dict[str, str]]
PREFIX = "/api/v1/capacity"
PATHS = ("/capacity", "/api/v1/openapi.json", PREFIX)
_TEXT = "text/plain; charset=utf-8"


def handles(path: str) -> bool:
    return path in PATHS or path.startswith(PREFIX + "/")


def page() -> bytes:
    return resources.files("collector.capacity").joinpath("page.html").read_bytes()


def _json(data: object) -> Response:
    return "200 OK", "application/json", json.dumps(data, separators=(",", ":")).encode(), {}


def respond(capacity: Capacity, method: str, target: str, *, token: bool) -> Response:
    url = urlsplit(target)
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", _TEXT, b"only GET\n", {"Allow": "GET, HEAD"}
    if url.path == "/capacity":
        return "200 OK", "text/html; charset=utf-8", page(), {"Cache-Control": "no-cache"}
    if url.path == "/api/v1/openapi.json":
        return _json(openapi(token))
    if url.path == PREFIX:
        try:
            wanted = matcher(parse_qs(url.query, keep_blank_values=True))
        except FilterError as exc:
            return "400 Bad Request", _TEXT, f"{exc}\n".encode(), {}
        return _json([r for r in capacity.records() if matches(r, wanted)])
    machine = unquote(url.path[len(PREFIX) + 1:])
    rec = capacity.record(machine) if machine and "/" not in machine else None
    if rec is None:  # the same answer for an unknown and a non-public machine: nothing leaks
        return "404 Not Found", _TEXT, b"no public machine with this id\n", {}
    return _json(rec)
