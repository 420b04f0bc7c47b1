"""The AAS routes served for real: a plant collector reading its machines from mosquitto (its
HTTP server, its capacity feed), and `collector exchange` (a subprocess) fed by that feed through
the same broker. From both, every public machine's shell and submodels read back with the BaSyx
SDK's strict decoder, pass the AAS compliance tool's JSON checks, say the state the plant reports,
and nothing of the private machine appears."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from basyx.aas import model

from collector.aas.api import encode_id
from collector.aas.builder import Links, build
from collector.core.lineprotocol import interval
from collector.core.model import Interval, MachineInfo, State
from tests.aas_helpers import compliance, next_query, objects, read_back
from tests.capacity_helpers import PLANT, PREFIX, PRIVATE_STRINGS, PUBLIC, plant_running
from tests.exchange_helpers import exchanges, offer
from tests.fixtures._ports import until
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration
HISTORY = "http://platform-influx:8086/query?db=platform"
MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS


async def walk(client: httpx.AsyncClient, path: str, limit: int) -> list[Any]:
    """Every page (async: the plant's server runs on this event loop)."""
    out: list[Any] = []
    params: dict[str, Any] | None = {"limit": limit}
    while params is not None:
        page = await client.get(path, params=params)
        assert page.status_code == 200, page.text
        out += page.json()["result"]
        params = next_query(page.json(), limit, {})
    return out


async def served(base: str) -> tuple[dict[str, Any], str]:
    """The environment a server serves (every shell and submodel, paged) and all the text it served."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        env = {"assetAdministrationShells": await walk(client, "/shells", 1),
               "submodels": await walk(client, "/submodels", 2)}
        text = json.dumps(env)
        for shell in env["assetAdministrationShells"]:  # each by id, and its submodels through it
            one = await client.get(f"/shells/{encode_id(shell['id'])}")
            assert one.json() == shell
            for ref in shell["submodels"]:
                sm_id = ref["keys"][0]["value"]
                sm = await client.get(f"/shells/{encode_id(shell['id'])}/submodels/{encode_id(sm_id)}")
                assert sm.status_code == 200 and sm.json()["id"] == sm_id
        private = encode_id(f"urn:machine-availability:aas:{PLANT}:hidden-grinder-77")
        assert (await client.get(f"/shells/{private}")).status_code == 404
        openapi = (await client.get("/api/v1/openapi.json")).json()
        assert {"/shells", "/shells/{aasIdentifier}", "/submodels", "/submodels/{submodelIdentifier}"} \
            <= set(openapi["paths"])
    return env, text


def states(env: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Machine -> (state, free now), read through the SDK from the capacity submodels."""
    subs = objects(env["submodels"])
    caps = [s for s in subs if s.id_short == "Capacity"]
    return {s.id.rsplit(":", 1)[1]: (s.get_referable("State").value, s.get_referable("FreeNow").value) for s in caps}


async def test_every_public_machine_reads_back_from_the_plant_and_the_exchange(mosquitto: Mosquitto,
                                                                              tmp_path: Path) -> None:
    async with plant_running(mosquitto, tmp_path, period="1s") as plant:
        plant.set_state("pub-lathe", exec="ACTIVE")
        plant.set_state("pub-mill", exec="READY")
        plant.set_state("hidden-grinder-77", probe=5)
        await until(lambda: {m: plant.engine.snapshot()[m].state.value for m in PUBLIC}
                    == {"pub-lathe": "busy", "pub-mill": "idle"}, 10, "the plant's states")
        with exchanges(mosquitto.port, tmp_path, 1, PREFIX, "--history-url", HISTORY) as (ex,):
            await until(lambda: {(o["machine"], o["state"]) for o in ex.get("/api/v1/offers")}
                        == {("pub-lathe", "busy"), ("pub-mill", "idle")}, 15, "the exchange's offers")
            for base, history in ((plant.base, None), (ex.base, HISTORY)):
                env, text = await served(base)
                shells = objects(env["assetAdministrationShells"])
                assert all(isinstance(s, model.AssetAdministrationShell) for s in shells)
                assert sorted(s.id for s in shells) == [f"urn:machine-availability:aas:{PLANT}:{m}" for m in PUBLIC]
                assert len(env["submodels"]) == 3 * len(PUBLIC)
                assert states(env) == {"pub-lathe": ("busy", False), "pub-mill": ("idle", True)}
                assert not any(secret in text for secret in PRIVATE_STRINGS), base
                series = [s for s in objects(env["submodels"]) if s.id_short == "TimeSeries"]
                for s in series:
                    segments = s.get_referable("Segments")
                    assert {e.id_short for e in segments} == ({"Forecast", "History"} if history else {"Forecast"})
                    # The Forecast segment links the serving API's own record of the machine.
                    endpoint = segments.get_referable("Forecast").get_referable("Endpoint").value
                    assert endpoint.startswith(base)
                    async with httpx.AsyncClient(timeout=10) as client:
                        linked = (await client.get(endpoint)).json()
                    assert linked["machine"] == s.id.rsplit(":", 1)[1] and len(linked["forecast"]["idle_share"]) == 168
                steps = compliance(env, tmp_path)
                assert len(steps) == 5 and all(step.startswith("SUCCESS") for step in steps), (base, steps)
            # capacity.history_url on the plant links its InfluxDB the same way.
            plant.capacity.settings = plant.capacity.settings.model_copy(update={"history_url": HISTORY})
            sm_id = encode_id(f"urn:machine-availability:sm:timeseries:{PLANT}:pub-mill")
            async with httpx.AsyncClient(base_url=plant.base) as client:
                [series] = objects([(await client.get(f"/submodels/{sm_id}")).json()])
            history = series.get_referable("Segments").get_referable("History")
            assert history.get_referable("Endpoint").value == HISTORY
            assert "'pub-mill'" in history.get_referable("Query").value


def test_the_history_link_answers_hourly_idle_shares_from_influxd(influxd: InfluxD) -> None:
    """Test the Time Series Data submodel's History segment as a client would use it: its Endpoint
    and Query, sent to a real influxd holding per-minute roll-ups as the collector writes them,
    answer the machine's idle share of each hour, and nothing of another machine. The machine id
    holds a quote, which the query must escape."""
    influxd.query("CREATE DATABASE platform")
    mill = MachineInfo(id="o'mill", plant=PLANT, public=True)
    other = MachineInfo(id="other", plant=PLANT, public=True)
    hour = (time.time_ns() // HOUR_NS - 3) * HOUR_NS
    lines = []
    for minute in range(120):  # first hour: idle half the minutes; second hour: idle throughout
        start = hour + minute * MINUTE_NS
        idle = minute >= 60 or minute % 2 == 0
        secs = {State.IDLE: MINUTE_NS} if idle else {State.BUSY: MINUTE_NS}
        lines.append(interval(Interval(mill, start, start + MINUTE_NS, secs, State.IDLE)))
        lines.append(interval(Interval(other, start, start + MINUTE_NS, {State.IDLE: MINUTE_NS}, State.IDLE)))
    influxd.write("\n".join(lines), "platform")

    rec = offer(PLANT, "o'mill", dt.datetime.now(dt.UTC))
    series = read_back(build(rec, Links("http://x", f"{influxd.url}/query?db=platform")).submodels[1])
    history = series.get_referable("Segments").get_referable("History")
    endpoint, query = history.get_referable("Endpoint").value, history.get_referable("Query").value
    # The endpoint carries db=; the client adds q= to it.
    answer = httpx.get(httpx.URL(endpoint).copy_merge_params({"q": query, "epoch": "ns"}), timeout=10).json()
    [result] = answer["results"]
    assert "series" in result, (answer, query, endpoint)
    [found] = result["series"]
    shares = {t: v for t, v in found["values"] if v is not None}
    assert shares == {hour: 0.5, hour + HOUR_NS: 1.0}
