"""The exchange's HTTP app in-process (Starlette's test client, no broker): its OpenAPI document
checked by schemathesis (requests generated from it, valid and invalid, answered with the
documented codes and schemas, never a server error), and the server's limits."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from typing import Any

import pytest

from collector.exchange.app import Exchange, build_app
from collector.exchange.index import NS_PER_S, Index
from tests.aas_helpers import AAS_PATHS
from tests.exchange_helpers import PREFIX, offer, payload, status

NOW = dt.datetime.now(dt.UTC)


def client(exchange: Exchange) -> Any:
    """Starlette's test client over the app. (Starlette 1.x warns on import that the client will
    want httpx2, not installed here; with httpx it works as is.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(build_app(exchange))


def _exchange() -> Exchange:
    index = Index(PREFIX)
    for plant, machine, caps in (("north", "mill-1", {"process": "milling", "max_diameter_mm": 300}),
                                 ("north", "lathe", {"process": "turning", "materials": ["steel"]}),
                                 ("south", "mill-2", {"process": "milling", "axes": 5})):
        index.apply(f"{PREFIX}/{plant}/{machine}", payload(offer(plant, machine, NOW, capabilities=caps)),
                    time.time_ns())
    index.apply(f"{PREFIX}/south/_status", status("south", False, NOW), time.time_ns())
    exchange = Exchange(index, 600.0, clock=lambda: int(NOW.timestamp() * NS_PER_S))
    exchange.subscribed = True
    return exchange


def test_schemathesis_finds_nothing_against_the_openapi_document() -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    http = client(_exchange())
    doc = http.get("/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/v1/offers", "/api/v1/offers/{plant}/{machine}", "/api/v1/search",
                                              "/api/v1/plants", "/healthz", *AAS_PATHS}
    seen: dict[int, int] = {}
    for op in operations:
        # Invalid requests exist only where a parameter has a type or enum (any string is a valid plant).
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.path in ("/api/v1/offers", "/api/v1/search") \
            else (GenerationMode.POSITIVE,)
        for mode in modes:
            @settings(max_examples=30 if op.path not in AAS_PATHS else 12, deadline=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                kwargs = case.as_transport_kwargs(base_url="http://testserver")
                response = http.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                                          headers=kwargs.get("headers"))
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                case.validate_response(response, transport_kwargs=kwargs)

            check()
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0 and seen.get(404, 0) > 0, seen
    assert not any(code >= 500 for code in seen), seen


def test_every_answer_holds_what_the_document_promises() -> None:
    from jsonschema import Draft202012Validator

    http = client(_exchange())
    doc = http.get("/api/v1/openapi.json").json()

    def valid(name: str, body: object) -> None:
        Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]}).validate(body)

    offers = http.get("/api/v1/offers").json()
    assert [(o["plant"], o["machine"], o["free_now"]) for o in offers] == [
        ("north", "lathe", True), ("north", "mill-1", True), ("south", "mill-2", False)]
    for o in offers:
        valid("Offer", o)
    valid("SearchResult", http.get("/api/v1/search?hours=10&capability.process=milling").json())
    assert [p["plant"] for p in http.get("/api/v1/plants").json()] == ["north", "south"]
    for p in http.get("/api/v1/plants").json():
        valid("Plant", p)
    valid("Health", http.get("/healthz").json())
    page = http.get("/")
    assert page.status_code == 200 and "Capacity exchange" in page.text


@pytest.mark.parametrize("path", ["/api/v1/offers?capability.max_diameter_mm>=x", "/api/v1/offers?q=1",
                                  "/api/v1/search?within_days=2", "/api/v1/search?hours=1&within_days=30"])
def test_a_bad_query_is_a_400_that_says_why(path: str) -> None:
    response = client(_exchange()).get(path)
    assert response.status_code == 400 and response.text
