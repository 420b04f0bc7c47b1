"""The AAS routes (collector/aas/api.py) in-process, on the exchange's app over an index fed with
offers (no broker): Part 2 paths, base64url ids, paging that walks every machine exactly once,
filters, Part 2 error results; everything read back with the SDK's strict decoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from basyx.aas import model

from collector.aas.api import encode_id
from collector.aas.builder import CAPACITY_SEMANTIC_ID, NAMEPLATE_SEMANTIC_ID
from collector.exchange.app import Exchange
from collector.exchange.index import NS_PER_S, Index
from tests.aas_helpers import compliance, objects, walk
from tests.exchange_helpers import PREFIX, offer, payload, status
from tests.test_exchange_openapi import NOW, client

MACHINES = [(p, f"m-{i:02d}") for p in ("north", "south") for i in range(7)]


def _exchange(extra: list[tuple[str, dict[str, Any]]] = ()) -> Exchange:  # type: ignore[assignment]
    index = Index(PREFIX)
    for plant, machine in MACHINES:
        rec = offer(plant, machine, NOW)
        rec["nameplate"] = {"manufacturer": f"maker of {machine}", "serial_number": f"{plant}-{machine}"}
        index.apply(f"{PREFIX}/{plant}/{machine}", payload(rec), time.time_ns())
    for topic, rec in extra:
        index.apply(topic, payload(rec), time.time_ns())
    index.apply(f"{PREFIX}/south/_status", status("south", False, NOW), time.time_ns())
    exchange = Exchange(index, 600.0, clock=lambda: int(NOW.timestamp() * NS_PER_S), history_url="http://i/q?db=p")
    exchange.subscribed = True
    return exchange


def test_paging_walks_every_public_machine_once() -> None:
    """Test that /shells and /submodels, page by page, hold each machine's shell and its three
    submodels exactly once, read back by the SDK, and that one shell's submodels resolve."""
    http = client(_exchange())
    shells = objects(walk(http, "/shells", 4))
    assert all(isinstance(s, model.AssetAdministrationShell) for s in shells)
    assert [s.id for s in shells] == [f"urn:machine-availability:aas:{p}:{m}" for p, m in MACHINES]
    subs = objects(walk(http, "/submodels", 5))
    assert len(subs) == 3 * len(MACHINES) == len({s.id for s in subs})
    assert {ref.key[0].value for s in shells for ref in s.submodel} == {s.id for s in subs}
    assert objects(http.get("/shells").json()["result"]) and http.get("/shells").json()["paging_metadata"] == {}

    first = shells[0]
    one = objects([http.get(f"/shells/{encode_id(first.id)}").json()])[0]
    assert one.id == first.id and one.asset_information.specific_asset_id[0].value == "north-m-00"
    refs = http.get(f"/shells/{encode_id(first.id)}/submodel-refs").json()["result"]
    for ref in refs:
        sm_id = ref["keys"][0]["value"]
        direct = http.get(f"/submodels/{encode_id(sm_id)}").json()
        via_shell = http.get(f"/shells/{encode_id(first.id)}/submodels/{encode_id(sm_id)}").json()
        assert direct == via_shell and objects([direct])[0].id == sm_id
    # Padding is optional in a path's id.
    padded = encode_id(first.id) + "=" * (-len(encode_id(first.id)) % 4)
    assert http.get(f"/shells/{padded}").status_code == 200


def test_filters_and_what_the_exchange_adds() -> None:
    """Test semanticId and idShort filters, and that an offline plant's machines are not free."""
    http = client(_exchange())
    caps = objects(walk(http, "/submodels", 5, semanticId=encode_id(CAPACITY_SEMANTIC_ID)))
    assert len(caps) == len(MACHINES) and all(c.id_short == "Capacity" for c in caps)
    free = {c.id: (c.get_referable("FreeNow").value, c.get_referable("State").value) for c in caps}
    assert free["urn:machine-availability:sm:capacity:north:m-00"] == (True, "idle")
    assert free["urn:machine-availability:sm:capacity:south:m-00"] == (False, "offline")  # its will fired
    plates = objects(http.get("/submodels", params={"idShort": "Nameplate"}).json()["result"])
    assert {p.semantic_id.key[0].value for p in plates} == {NAMEPLATE_SEMANTIC_ID}
    assert plates[0].get_referable("ManufacturerName").value == {"en": "maker of m-00"}
    assert http.get("/submodels", params={"idShort": "Nameplate",
                                          "semanticId": encode_id(CAPACITY_SEMANTIC_ID)}).json()["result"] == []
    assert [s["idShort"] for s in http.get("/shells", params={"idShort": "m_03"}).json()["result"]] == ["m_03"] * 2
    series = http.get("/submodels", params={"idShort": "TimeSeries", "limit": 1}).json()["result"][0]
    linked = {e["idShort"]: e for e in series["submodelElements"][1]["value"]}
    endpoint = next(p["value"] for p in linked["Forecast"]["value"] if p["idShort"] == "Endpoint")
    assert endpoint == "http://testserver/api/v1/offers/north/m-00"  # the exchange's own offer
    assert http.get(endpoint.removeprefix("http://testserver")).json()["machine"] == "m-00"
    assert any(p["value"] == "http://i/q?db=p" for p in linked["History"]["value"] if p["idShort"] == "Endpoint")
    assert http.get("/description").json()["profiles"]


def test_errors_are_part_2_results() -> None:
    """Test 400 for what is not base64url or a bad page, 404 for an unknown id or a submodel asked
    for under another machine's shell: each a Part 2 Result."""
    http = client(_exchange())
    other = encode_id("urn:machine-availability:sm:capacity:north:m-01")
    for path, code in [("/shells/not*base64", 400), ("/submodels/%FF", 400), ("/shells?limit=0", 400),
                       ("/shells?limit=x", 400), ("/submodels?cursor=-1", 400), (f"/shells/{encode_id('x')}", 404),
                       (f"/submodels/{encode_id('urn:machine-availability:sm:capacity:north:nope')}", 404),
                       (f"/submodels/{encode_id('urn:machine-availability:sm:other:north:m-01')}", 404),
                       (f"/shells/{encode_id('urn:machine-availability:aas:north:m%2D01')}", 404),  # not our spelling
                       (f"/shells/{encode_id('urn:machine-availability:aas:north:m-00')}/submodels/{other}", 404),
                       (f"/submodels?semanticId={encode_id('x')[:-1]}*", 400)]:
        response = http.get(path)
        assert response.status_code == code, (path, response.text)
        [message] = response.json()["messages"]
        assert message["code"] == str(code) and message["messageType"] == "Error" and message["text"]


def test_a_machine_whose_ids_cannot_be_aas_ids_is_left_out() -> None:
    """Test that an offer whose machine id makes an id longer than AAS allows (2,000) is left out
    of the lists, and asked for by name, not found, rather than a server error."""
    long = "x" * 2100
    http = client(_exchange([(f"{PREFIX}/north/{long}", offer("north", long, NOW))]))
    assert len(walk(http, "/shells", 100)) == len(MACHINES)
    assert len(walk(http, "/submodels", 100)) == 3 * len(MACHINES)
    assert http.get(f"/shells/{encode_id('urn:machine-availability:aas:north:' + long)}").status_code == 404


def test_the_compliance_tool_passes_what_is_served_and_fails_a_broken_shell(tmp_path: Path) -> None:
    """Test the served shells and submodels, as one environment, through the AAS compliance tool's
    JSON checks (the official AAS 3.0 JSON Schema, then the SDK's reader); and that the same checks
    fail a shell without its asset information, so a pass means something."""
    http = client(_exchange())
    env = {"assetAdministrationShells": walk(http, "/shells", 100), "submodels": walk(http, "/submodels", 100)}
    steps = compliance(env, tmp_path)
    assert len(steps) == 5 and all(s.startswith("SUCCESS") for s in steps), steps
    del env["assetAdministrationShells"][0]["assetInformation"]
    assert any(s.startswith("FAILED") for s in compliance(env, tmp_path))
