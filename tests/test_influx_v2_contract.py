"""The v2 start-up check against a stand-in for InfluxDB 2.x (no 2.x server runs here).

The stand-in answers as InfluxDB's v2 API reference documents: ``GET /api/v2/buckets?name=``
returns ``{"buckets": [...]}``, ``GET /api/v2/orgs?org=`` returns ``{"orgs": [{"id": ...}]}``,
``POST /api/v2/buckets`` takes ``{"name", "orgID", "retentionRules"}`` and answers 201, and
any request without the right ``Authorization: Token`` gets 401 ``{"code": "unauthorized"}``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from collector.influx.config import InfluxSettings
from collector.influx.writers import V2Writer, WriteError
from tests.fixtures._http import Request, Response, http_server, json_response

TOKEN = "t0k3n"


class StandIn:
    def __init__(self) -> None:
        self.buckets: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.url = ""


@pytest.fixture
def influx2() -> Iterator[StandIn]:
    state = StandIn()

    def handle(req: Request) -> Response:
        body = json.loads(req.body) if req.body else None
        url = urllib.parse.urlsplit(req.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        state.requests.append((req.method, url.path, body))
        if req.header("Authorization") != f"Token {TOKEN}":
            return json_response(401, {"code": "unauthorized", "message": "unauthorized access"})
        if (req.method, url.path) == ("GET", "/api/v2/buckets"):
            return json_response(200, {"buckets": [b for b in state.buckets if b["name"] == query.get("name")]})
        if (req.method, url.path) == ("GET", "/api/v2/orgs"):
            return json_response(200, {"orgs": [{"id": "0123456789abcdef", "name": query.get("org")}]})
        if (req.method, url.path) == ("POST", "/api/v2/buckets"):
            assert body is not None
            bucket = {"id": "b1", "name": body["name"], "orgID": body["orgID"], "retentionRules": []}
            state.buckets.append(bucket)
            return json_response(201, bucket)
        return json_response(404, {"code": "not found", "message": "path not found"})

    with http_server(handle) as url:
        state.url = url
        yield state


def settings(url: str, **kw: Any) -> InfluxSettings:
    return InfluxSettings.model_validate({"url": url, "org": "acme", "bucket": "avail", "token": TOKEN, **kw})


async def test_missing_bucket_is_reported(influx2: StandIn) -> None:
    """Test that the check names the missing bucket and how to fix it."""
    writer = V2Writer(settings(influx2.url))
    with pytest.raises(WriteError, match=r"bucket 'avail' does not exist in org 'acme'.*create_bucket: true"):
        await writer.check()
    await writer.close()


async def test_create_bucket_creates_it_once(influx2: StandIn) -> None:
    """Test that create_bucket: true creates the bucket in the org, and a second check finds it."""
    writer = V2Writer(settings(influx2.url, create_bucket=True))
    assert await writer.check() == f"InfluxDB v2 API at {influx2.url}, org acme, bucket avail"
    assert await writer.check()
    await writer.close()
    posts = [b for m, p, b in influx2.requests if (m, p) == ("POST", "/api/v2/buckets")]
    assert len(posts) == 1 and posts[0] is not None
    assert (posts[0]["name"], posts[0]["orgID"]) == ("avail", "0123456789abcdef")


async def test_bad_token_is_a_config_error(influx2: StandIn) -> None:
    """Test that a 401 becomes a config error that names the token."""
    writer = V2Writer(settings(influx2.url, token=SecretStr("wrong")))
    with pytest.raises(WriteError, match="not authorised \\(401\\): check the token") as info:
        await writer.check()
    assert info.value.kind == "config"
    await writer.close()


async def test_unreachable_is_retryable() -> None:
    """Test that a closed port is a retryable error naming the URL."""
    writer = V2Writer(settings("http://127.0.0.1:9"))
    with pytest.raises(WriteError, match=r"cannot reach http://127\.0\.0\.1:9") as info:
        await writer.write(b"m v=1 1")
    assert info.value.kind == "retry"
    await writer.close()
