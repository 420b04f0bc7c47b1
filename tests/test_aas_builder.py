"""The AAS builder (collector/aas/builder.py) and the AAS routes in-process: every shell and
submodel is written with the BaSyx SDK's JSON encoder and read back with its strict decoder (which
refuses anything the AAS 3.0 metamodel does not allow); what a buyer reads back is what the record
said. Hypothesis throws arbitrary plant and machine ids, nameplates and capabilities at it."""

from __future__ import annotations

import datetime as dt
import re
import string
from typing import Any

from basyx.aas import model
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aas.api import decode_id, encode_id
from collector.aas.builder import (
    CAPACITY_SEMANTIC_ID,
    NAMEPLATE_SEMANTIC_ID,
    TIME_SERIES_SEMANTIC_ID,
    Links,
    build,
    id_short,
    parse_shell_id,
    parse_submodel_id,
)
from tests.aas_helpers import read_back
from tests.exchange_helpers import offer

NOW = dt.datetime(2026, 12, 5, 10, 30, tzinfo=dt.UTC)
LINKS = Links("http://plant:8080/api/v1/capacity/vmc-1", "http://influx:8086/query?db=platform")
PLATE = {"manufacturer": "ACME Werkzeugmaschinen", "model": "VMC 500", "serial_number": "SN-1001",
         "product_instance_uri": "urn:acme:SN-1001", "year_of_construction": "2019", "device_class": "mill",
         "firmware_version": "4.2"}
ID_SHORT = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")  # AAS 3.0.0's JSON Schema (3.0.1 also allows '-')


def element(parent: Any, name: str) -> Any:
    return parent.get_referable(name)


def record(**changes: Any) -> dict[str, Any]:
    rec = offer("north", "vmc-1", NOW, capabilities={"process": "milling", "axes": 5, "max_diameter_mm": 300.5,
                                                     "coolant": True, "materials": ["steel", "aluminium"],
                                                     "5-axis simultaneous": True, "mixed": ["a", 1]})
    rec["nameplate"] = dict(PLATE)
    rec["forecast"]["windows"] = [{"start": "2026-12-05T12:00:00+01:00", "end": "2026-12-05T15:00:00+01:00",
                                   "expected_free_hours": 2.5}]
    rec.update(changes)
    return rec


def test_a_record_reads_back_as_the_three_submodels_it_says() -> None:
    """Test one machine's shell and submodels, read back through the SDK: the Digital Nameplate
    carries the OPC UA identification under the IDTA 02006-2-0 ids, the time series links the API
    and InfluxDB, the capacity submodel the record's state, windows and capabilities."""
    built = build(record(), LINKS)
    shell = read_back(built.shell)
    plate, series, cap = (read_back(sm) for sm in built.submodels)
    assert isinstance(shell, model.AssetAdministrationShell)
    assert shell.id == "urn:machine-availability:aas:north:vmc-1" and shell.id_short == "vmc_1"
    assert shell.asset_information.global_asset_id == "urn:acme:SN-1001"  # the machine's own, from OPC UA
    assert [(a.name, a.value) for a in shell.asset_information.specific_asset_id] == [("serialNumber", "SN-1001")]
    assert {ref.key[0].value for ref in shell.submodel} == {plate.id, series.id, cap.id}
    assert parse_shell_id(shell.id) == ("north", "vmc-1")
    assert parse_submodel_id(cap.id) == (("north", "vmc-1"), "capacity")

    assert plate.semantic_id.key[0].value == NAMEPLATE_SEMANTIC_ID
    assert element(plate, "ManufacturerName").value == {"en": "ACME Werkzeugmaschinen"}
    assert element(plate, "ManufacturerProductDesignation").value == {"en": "VMC 500"}
    assert element(plate, "FirmwareVersion").value == {"en": "4.2"}
    assert (element(plate, "SerialNumber").value, element(plate, "SerialNumber").semantic_id.key[0].value) \
        == ("SN-1001", "0173-1#02-AAM556#002")
    assert element(plate, "URIOfTheProduct").value == "urn:acme:SN-1001"
    assert element(plate, "YearOfConstruction").value == "2019"
    assert len(plate.submodel_element) == 6  # device_class has no nameplate element; nothing is made up

    assert series.semantic_id.key[0].value == TIME_SERIES_SEMANTIC_ID
    segments = element(series, "Segments")
    forecast, history = element(segments, "Forecast"), element(segments, "History")
    assert (element(forecast, "Endpoint").value, element(forecast, "Query").value) \
        == (LINKS.record_url, "forecast.idle_share")
    assert element(history, "Endpoint").value == LINKS.history_url
    assert "\"machine_availability\"" in element(history, "Query").value
    assert "'vmc-1'" in element(history, "Query").value
    assert [e.id_short for e in element(element(series, "Metadata"), "Record")] == ["Time", "IdleShare"]

    assert cap.semantic_id.key[0].value == CAPACITY_SEMANTIC_ID
    assert (element(cap, "State").value, element(cap, "FreeNow").value) == ("idle", True)
    assert element(cap, "Since").value == dt.datetime.fromisoformat(record()["since"])
    [window] = list(element(cap, "FreeWindows").value)
    assert element(window, "ExpectedFreeHours").value == 2.5
    assert element(window, "Start").value == dt.datetime(2026, 12, 5, 11, tzinfo=dt.UTC)
    caps = {element(c, "Name").value: c for c in element(cap, "Capabilities").value}
    assert element(caps["axes"], "Value").value == 5 and element(caps["coolant"], "Value").value is True
    assert element(caps["max_diameter_mm"], "Value").value == 300.5
    assert [p.value for p in element(caps["materials"], "Values").value] == ["steel", "aluminium"]
    assert [p.value for p in element(caps["mixed"], "Values").value] == ["a", "1"]  # one type per list
    assert element(caps["5-axis simultaneous"], "Value").value is True  # not an idShort: kept as a value
    assert [p.value for p in element(cap, "SilenceDetectedBy").value] == ["status_topic"]


def test_without_a_nameplate_or_a_history_link_nothing_is_invented() -> None:
    """Test that a machine that told us nothing has an empty (still valid) nameplate and our own
    asset id, and that without a history endpoint the series links the API only."""
    built = build(record(nameplate={}), Links("http://x/api/v1/capacity/vmc-1"))
    shell, plate, series = read_back(built.shell), read_back(built.submodels[0]), read_back(built.submodels[1])
    assert len(plate.submodel_element) == 0
    assert shell.asset_information.global_asset_id == "urn:machine-availability:asset:north:vmc-1"
    assert not shell.asset_information.specific_asset_id
    assert [s.id_short for s in element(series, "Segments")] == ["Forecast"]


def test_the_exchange_s_view_is_carried() -> None:
    """Test that an offer as the exchange shows it (stale, plant online) adds what the exchange knows."""
    rec = record(free_now=False, idle_since=None)
    rec["exchange"] = {"plant_online": True, "evidence_age_s": 700.0, "stale": True, "silence_detected": True,
                       "received": "2026-12-05T10:30:00Z", "free_hours_next_24h": 1.0, "free_hours_next_7d": 2.0}
    cap = read_back(build(rec, LINKS).submodels[2])
    assert (element(cap, "FreeNow").value, element(cap, "Stale").value, element(cap, "PlantOnline").value) \
        == (False, True, True)
    assert element(cap, "EvidenceAgeS").value == 700.0
    assert "IdleSince" not in {e.id_short for e in cap.submodel_element}


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
_scalar = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(plant=_text, machine=_text, name=st.text(max_size=200), kind=st.text(max_size=20),
       plate=st.dictionaries(st.sampled_from([*sorted(PLATE), "hardware_version", "country_of_origin", "other"]),
                             st.text(max_size=30)),
       caps=st.dictionaries(_text, st.one_of(_scalar, st.lists(_scalar, max_size=4)), max_size=5))
def test_any_machine_builds_a_standard_shell(plant: str, machine: str, name: str, kind: str,
                                            plate: dict[str, str], caps: dict[str, Any]) -> None:
    """Test that whatever the ids, names, nameplate and capabilities, the shell and its submodels
    pass the SDK's strict decoder, the idShort is a valid one, and the ids name the machine back."""
    rec = record(plant=plant, machine=machine, name=name, kind=kind, nameplate=plate, capabilities=caps)
    built = build(rec, LINKS)
    shell = read_back(built.shell)
    subs = [read_back(sm) for sm in built.submodels]
    assert ID_SHORT.match(shell.id_short)
    assert parse_shell_id(shell.id) == (plant, machine)
    assert [parse_submodel_id(sm.id) for sm in subs] == [((plant, machine), k) for k in
                                                         ("nameplate", "timeseries", "capacity")]
    assert len(element(subs[2], "Capabilities").value) == len(caps)


@given(st.text())
def test_ids_go_through_base64url_with_or_without_padding(ident: str) -> None:
    encoded = encode_id(ident)
    assert set(encoded) <= set(string.ascii_letters + string.digits + "-_")
    padded = encoded + "=" * (-len(encoded) % 4)
    assert decode_id(encoded) == decode_id(padded) == ident


def test_id_short_of_awkward_machine_ids() -> None:
    assert [id_short(m) for m in ("lathe_01", "lathe-01", "5-axis", "a", "mill:1", "ü", "x" * 200)] \
        == ["lathe_01", "lathe_01", "M_5_axis", "a", "mill_1", "M__", "x" * 128]
