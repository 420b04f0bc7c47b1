"""The capacity API over the live collector: token, filters, public machines only, and its
OpenAPI description checked by schemathesis (requests generated from the description)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from collector.capacity.service import Capacity
from collector.configfile import load_config
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.aas_helpers import AAS_PATHS
from tests.fixtures._ports import until, wait_for

pytestmark = pytest.mark.integration  # runs the collector itself (engine + HTTP server)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Engine]]:
    """The example plant (simulated), its capacity API on a free port, `http.token` set."""
    loaded = load_config(EXAMPLE)
    loaded.config.http.port = 0
    loaded.config.http.token = SecretStr(TOKEN)
    capacity = Capacity(loaded.config.capacity, tmp_path / "capacity.sqlite")
    engine = Engine(loaded, NullSink(), on_output=capacity.on_output)
    capacity.bind(engine)
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http, capacity=capacity) as port:
        runner = asyncio.create_task(engine.run(stop))
        await until(lambda: all(st.reason != "starting: no data yet" for st in engine.snapshot().values()), 20,
                    "every machine's first state")
        yield f"http://127.0.0.1:{port}", engine
        stop.set()
        await runner
    capacity.close()


async def test_token_is_required_on_every_api_route(served: tuple[str, Engine]) -> None:
    """Test that with `http.token` set, /api/* answers 401 without or with a wrong bearer token,
    and 200 with the right one; the page itself needs none (it reads the token from its address)."""
    base, _ = served
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/api/v1/capacity", "/api/v1/capacity/lathe-01", "/api/v1/openapi.json", "/api/v1/machines",
                     "/shells", "/submodels", "/description"):
            assert (await client.get(path)).status_code == 401
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
            assert (await client.get(path, headers=AUTH)).status_code == 200
        assert (await client.post("/api/v1/reload")).status_code == 401  # POST routes too
        assert (await client.post("/api/v1/reload", headers=AUTH)).status_code == 404  # no reload hook here
        assert (await client.get("/capacity")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


async def test_filters_and_public_machines_only(served: tuple[str, Engine]) -> None:
    """Test that the list holds exactly the public machines, free now first, and that each filter
    keeps exactly the machines the config and the live states say (computed here from them)."""
    base, engine = served
    public = {mid for mid, m in engine.machines.items() if m.info.public}
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as client:
        every = (await client.get("/api/v1/capacity")).json()
        assert {r["machine"] for r in every} == public == {
            "lathe-01", "lathe-02", "lathe-03", "mill-01", "mill-02", "press-01", "laser-01"}
        assert [r["free_now"] for r in every] == sorted((r["free_now"] for r in every), reverse=True)

        async def ids(query: str) -> set[str]:
            response = await client.get(f"/api/v1/capacity?{query}")
            assert response.status_code == 200, response.text
            return {r["machine"] for r in response.json()}

        assert await ids("kind=lathe") == {"lathe-01", "lathe-02", "lathe-03"}  # lathe-04 is not public
        assert await ids("capability.process=turning&capability.max_diameter_mm=300") == {"lathe-01", "lathe-03"}
        assert await ids("capability.materials=brass") == {"lathe-03"}
        assert await ids("capability.axes=5.0") == {"mill-01"}
        assert await ids("kind=mill&capability.process=turning") == set()
        assert await ids("line=forming") == {"press-01"}
        free = await ids("free_now=true")
        busy = await ids("free_now=false")
        assert free | busy == public and not free & busy
        assert all(r["free_now"] == (r["state"] == "idle") and (r["idle_since"] is not None) == r["free_now"]
                   for r in every)
        assert (await client.get("/api/v1/capacity?free_now=maybe")).status_code == 400
        assert (await client.get("/api/v1/capacity?colour=red")).status_code == 400


async def test_non_public_machine_is_not_found_like_an_unknown_one(served: tuple[str, Engine]) -> None:
    """Test that asking for a non-public machine by id answers exactly as for an id that does not
    exist: the API does not even confirm that it exists."""
    base, _ = served
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as client:
        private, unknown = await client.get("/api/v1/capacity/lathe-04"), await client.get("/api/v1/capacity/nope")
        assert private.status_code == unknown.status_code == 404 and private.content == unknown.content
        one = (await client.get("/api/v1/capacity/lathe-01")).json()
        assert one["machine"] == "lathe-01" and one["capabilities"]["materials"] == ["steel", "aluminium"]
        assert (await client.post("/api/v1/capacity")).status_code == 405


@pytest.fixture
def served_in_thread(tmp_path: Path) -> Iterator[str]:
    """The same server on an event loop of its own thread, for synchronous (hypothesis) tests."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()

    async def main() -> None:
        loaded = load_config(EXAMPLE)
        loaded.config.http.port = 0
        loaded.config.http.token = SecretStr(TOKEN)
        capacity = Capacity(loaded.config.capacity, tmp_path / "capacity.sqlite")
        engine = Engine(loaded, NullSink(), on_output=capacity.on_output)
        capacity.bind(engine)
        async with serve_status(engine, loaded.config.http, capacity=capacity) as port:
            ready.append(f"http://127.0.0.1:{port}")
            await engine.run(stop)
        capacity.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    wait_for(lambda: bool(ready), 20, "the capacity API")
    yield ready[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def test_schemathesis_finds_nothing_against_the_openapi_description(served_in_thread: str) -> None:
    """Test the served OpenAPI description against the server with schemathesis: requests
    generated from it, valid and invalid, answered with the documented status codes, content
    types and response schemas, never a server error. (Sent with httpx: schemathesis's own
    requests transport trips over the urllib3 fork that grafana-client's niquests installs.)"""
    import schemathesis
    from hypothesis import HealthCheck, given, reject, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import ignored_auth

    base = served_in_thread
    doc = httpx.get(f"{base}/api/v1/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/v1/capacity", "/api/v1/capacity/{machine}", *AAS_PATHS}
    seen: dict[int, int] = {}
    with httpx.Client(timeout=10) as client:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                # Valid requests carry the token; invalid ones go as generated (their Authorization,
                # if any, is made up), so the API must refuse them, with 401 or 400.
                auth = AUTH if mode is GenerationMode.POSITIVE else None

                # The AAS routes' inputs are ids and paging: fewer examples cover them (collector/aas).
                @settings(max_examples=40 if op.path.startswith("/api/") else 12, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode), headers=st.just(auth))
                def check(case: schemathesis.Case, headers: dict[str, str] | None) -> None:
                    kwargs = case.as_transport_kwargs(base_url=base, headers=headers)
                    try:
                        response = client.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                                                  headers=kwargs.get("headers"))
                    except httpx.LocalProtocolError:  # e.g. "Bearer " with its trailing space: not sendable
                        reject()
                    seen[response.status_code] = seen.get(response.status_code, 0) + 1
                    # ignored_auth re-sends with schemathesis's own transport; auth is tested above.
                    case.validate_response(response, transport_kwargs=kwargs, excluded_checks=[ignored_auth])

                check()
    assert seen.get(200, 0) > 0 and seen.get(404, 0) > 0 and not any(code >= 500 for code in seen), seen
