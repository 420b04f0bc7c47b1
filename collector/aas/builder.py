
"""A public machine's capacity record in, its Asset Administration Shell out. Pure: no I/O, no
clock; the record is the published one (collector.capacity.schema's ``machine``, plus the
exchange's ``exchange`` block when the exchange serves it), so the plant and the platform build
the same shell from the same data.

Three submodels:
- ``Nameplate``: IDTA 02006-2-0 Digital Nameplate, from the record's ``nameplate`` (OPC UA DI
  Identification where discovery read it, else the config). Only elements the machine told us are
  written: the template's mandatory ones we cannot know (contact information, order code) are
  left out rather than filled with guesses.
- ``TimeSeries``: IDTA 02008-1-1 Time Series Data. One record kind (UTC hour, idle share); linked
  segments point to where the series can be read: the record's forecast in the serving API, and
  the roll-ups in InfluxDB when a history endpoint is configured.
- ``Capacity``: ours (``CAPACITY_SEMANTIC_ID``): state, free now, free hours and free windows,
  capabilities and evidence; the same data as the capacity record.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from basyx.aas import model

from collector.core.errors import BadInputError

# Identifiers. No domain of ours to hang IRIs on, so URNs (RFC 8141 syntax; the NID is ours, not
# registered). Plant and machine are percent-encoded, ':' too, so an id splits back unambiguously.
URN = "urn:machine-availability"
SHELL_PREFIX = f"{URN}:aas:"
SUBMODEL_PREFIX = f"{URN}:sm:"
ASSET_PREFIX = f"{URN}:asset:"
CAPACITY_SEMANTIC_ID = f"{URN}:capacity:1:0"
IDLE_SHARE_SEMANTIC_ID = f"{URN}:capacity:1:0:IdleShare"

NAMEPLATE_SEMANTIC_ID = "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
TIME_SERIES_SEMANTIC_ID = "https://admin-shell.io/idta/TimeSeries/1/1"
_TS = "https://admin-shell.io/idta/TimeSeries/"

NAMEPLATE, TIME_SERIES, CAPACITY = "nameplate", "timeseries", "capacity"
KINDS = (NAMEPLATE, TIME_SERIES, CAPACITY)
# Per kind: (idShort, semantic id), fixed, so the API filters without building anything.
SUBMODELS = {NAMEPLATE: ("Nameplate", NAMEPLATE_SEMANTIC_ID), TIME_SERIES: ("TimeSeries", TIME_SERIES_SEMANTIC_ID),
             CAPACITY: ("Capacity", CAPACITY_SEMANTIC_ID)}

# Nameplate keys (config, OPC UA DI via adapters/opcua/models.py) -> Digital Nameplate 2.0 elements:
# (idShort, ECLASS IRDI, multi-language). `device_class` has no nameplate element and is not carried.
NAMEPLATE_ELEMENTS: dict[str, tuple[str, str, bool]] = {
    "product_instance_uri": ("URIOfTheProduct", "0173-1#02-AAY811#001", False),
    "manufacturer": ("ManufacturerName", "0173-1#02-AAO677#002", True),
    "model": ("ManufacturerProductDesignation", "0173-1#02-AAW338#001", True),
    "product_root": ("ManufacturerProductRoot", "0173-1#02-AAU732#001", True),
    "product_family": ("ManufacturerProductFamily", "0173-1#02-AAU731#001", True),
    "product_type": ("ManufacturerProductType", "0173-1#02-AAO057#002", True),
    "order_code": ("OrderCodeOfManufacturer", "0173-1#02-AAO227#002", True),
    "article_number": ("ProductArticleNumberOfManufacturer", "0173-1#02-AAO676#003", True),
    "serial_number": ("SerialNumber", "0173-1#02-AAM556#002", False),
    "year_of_construction": ("YearOfConstruction", "0173-1#02-AAP906#001", False),
    "hardware_version": ("HardwareVersion", "0173-1#02-AAN270#002", True),
    "firmware_version": ("FirmwareVersion", "0173-1#02-AAM985#002", True),
    "software_version": ("SoftwareVersion", "0173-1#02-AAM737#002", True),
    "country_of_origin": ("CountryOfOrigin", "0173-1#02-AAO259#004", False),
}

# AAS 3.0 strings are XML's characters (no other control characters, no lone surrogates).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_ID = 2000  # an Identifier's length limit
Key = tuple[str, str]  # (plant, machine)


class NotRepresentable(BadInputError):
    """A record whose plant and machine make ids longer than AAS allows: it has no shell."""


@dataclass(frozen=True, slots=True)
class Links:
    """Where the machine's series can be read. ``record_url``: its record in the serving API (JSON;
    the forecast is ``forecast.idle_share``). ``history_url``: an InfluxDB 1.x ``/query`` endpoint
    (with ``db=``) that holds the machine's roll-ups; None: not offered."""

    record_url: str
    history_url: str | None = None


@dataclass(frozen=True, slots=True)
class Shell:
    shell: model.AssetAdministrationShell
    submodels: tuple[model.Submodel, ...]  # in KINDS order


def _q(text: str) -> str:
    return quote(text, safe="-._~")


def _checked(ident: str) -> str:
    if len(ident) > MAX_ID:
        raise NotRepresentable(f"id longer than {MAX_ID} characters: {ident[:60]}...")
    return ident


def shell_id(key: Key) -> str:
    return _checked(f"{SHELL_PREFIX}{_q(key[0])}:{_q(key[1])}")


def submodel_id(key: Key, kind: str) -> str:
    return _checked(f"{SUBMODEL_PREFIX}{kind}:{_q(key[0])}:{_q(key[1])}")


def clean(text: str, limit: int | None = None) -> str:
    """Text as AAS takes it: characters XML allows, at most ``limit`` of them."""
    text = _NOT_XML.sub("", text)
    return text if limit is None else text[:limit]


def parse_shell_id(ident: str) -> Key | None:
    """The (plant, machine) of one of our shell ids; None: not one of ours."""
    if not ident.startswith(SHELL_PREFIX):
        return None
    parts = ident[len(SHELL_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    key = (unquote(parts[0]), unquote(parts[1]))
    return key if shell_id(key) == ident else None  # only the one spelling we write (no %2D for '-')


def parse_submodel_id(ident: str) -> tuple[Key, str] | None:
    """((plant, machine), kind) of one of our submodel ids; None: not one of ours."""
    if not ident.startswith(SUBMODEL_PREFIX):
        return None
    parts = ident[len(SUBMODEL_PREFIX):].split(":")
    if len(parts) != 3 or parts[0] not in KINDS or not parts[1] or not parts[2]:
        return None
    key = (unquote(parts[1]), unquote(parts[2]))
    return (key, parts[0]) if submodel_id(key, parts[0]) == ident else None


def id_short(text: str) -> str:
    """An idShort made from a machine id: a letter, then letters, digits and '_', at most 128.
    (AAS 3.0.1 also allows '-' inside, 3.0.0's JSON Schema does not: left out, so both take it.)
    Other characters become '_'; the id itself stays in the shell's id, the name in displayName."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    cleaned = cleaned if cleaned[:1].isalpha() and cleaned[:1].isascii() else f"M_{cleaned}"
    return cleaned[:128]


def _ref(value: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, value),))


def _text(text: str) -> model.MultiLanguageTextType:
    return model.MultiLanguageTextType({"en": clean(text, 1023) or "-"})


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _prop(name: str | None, value_type: Any, value: Any, semantic: str | None = None) -> model.Property:
    if isinstance(value, str):
        value = clean(value)
    return model.Property(name, value_type, value, semantic_id=None if semantic is None else _ref(semantic))


def _ours(name: str, value_type: Any, value: Any) -> model.Property:
    return _prop(name, value_type, value, f"{CAPACITY_SEMANTIC_ID}:{name}")


def _mlp(name: str, text: str, semantic: str) -> model.MultiLanguageProperty:
    return model.MultiLanguageProperty(name, _text(text), semantic_id=_ref(semantic))


# -- Digital Nameplate ------------------------------------------------------------------------------

def nameplate(key: Key, plate: Mapping[str, str]) -> model.Submodel:
    elements: list[model.SubmodelElement] = []
    for field, (name, irdi, multi) in NAMEPLATE_ELEMENTS.items():
        value = clean(plate.get(field, "")).strip()
        if value:
            elements.append(_mlp(name, value, irdi) if multi else _prop(name, str, value, irdi))
    return model.Submodel(submodel_id(key, NAMEPLATE), elements, id_short="Nameplate",
                          semantic_id=_ref(NAMEPLATE_SEMANTIC_ID),
                          administration=model.AdministrativeInformation(version="2", revision="0"),
                          description=_text("Digital Nameplate (IDTA 02006-2-0) of the machine, as it identifies "
                                            "itself (OPC UA DI Identification) or as configured."))


# -- Time Series Data -------------------------------------------------------------------------------

def _segment(name: str, title: str, description: str, endpoint: str, query: str) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(name, [
        _mlp("Name", title, _TS + "Segment/Name/1/1"),
        _mlp("Description", description, _TS + "Segment/Description/1/1"),
        _prop("Endpoint", str, endpoint, _TS + "Endpoint/1/1"),
        _prop("Query", str, query, _TS + "Query/1/1"),
        _prop("State", str, "in progress", _TS + "Segment/State/1/1"),
    ], semantic_id=_ref(_TS + "Segments/LinkedSegment/1/1"))


def influxql(key: Key) -> str:
    """Idle share per clock hour from the per-minute roll-ups (``machine_availability``,
    docs/DESIGN.md), the same measure the forecast gives for the hours ahead."""
    plant, machine = (k.replace("\\", "\\\\").replace("'", "\\'") for k in key)
    return ('SELECT sum("idle_s") / 3600 AS "IdleShare" FROM "machine_availability" '
            f"WHERE \"plant\" = '{plant}' AND \"machine\" = '{machine}' AND time > now() - 28d GROUP BY time(1h)")


def time_series(key: Key, links: Links) -> model.Submodel:
    record = model.SubmodelElementCollection("Record", [
        _prop("Time", dt.datetime, None, _TS + "UtcTime/1/1"),
        _prop("IdleShare", float, None, IDLE_SHARE_SEMANTIC_ID),
    ], semantic_id=_ref(_TS + "Record/1/1"))
    metadata = model.SubmodelElementCollection("Metadata", [
        _mlp("Name", "Idle share per hour", _TS + "Metadata/Name/1/1"),
        _mlp("Description", "Share of each clock hour the machine was (history) or is usually (forecast) idle, "
                            "0 to 1.", _TS + "Metadata/Description/1/1"),
        record,
    ], semantic_id=_ref(_TS + "Metadata/1/1"))
    segments = [_segment("Forecast", "Usual idle share, next 168 hours",
                         "The capacity record (JSON): forecast.idle_share[i] is the hour forecast.start + i hours; "
                         "null: never seen.", links.record_url, "forecast.idle_share")]
    if links.history_url is not None:
        segments.append(_segment("History", "Idle share per hour, last 28 days",
                                 "InfluxDB 1.x /query (InfluxQL) over the per-minute roll-ups.",
                                 links.history_url, influxql(key)))
    return model.Submodel(submodel_id(key, TIME_SERIES), [
        metadata, model.SubmodelElementCollection("Segments", segments, semantic_id=_ref(_TS + "Segments/1/1")),
    ], id_short="TimeSeries", semantic_id=_ref(TIME_SERIES_SEMANTIC_ID),
        administration=model.AdministrativeInformation(version="1", revision="1"))


# -- Capacity (ours) --------------------------------------------------------------------------------

def _typed(value: Any) -> tuple[Any, Any]:
    """(value type, value) of a capability scalar."""
    if isinstance(value, bool):
        return bool, value
    if isinstance(value, int):
        return int, value
    if isinstance(value, float):
        return float, value
    return str, str(value)


def _capability(name: str, value: Any) -> model.SubmodelElementCollection:
    # A list per capability, not one idShort per name: capability names are free-form and need not
    # be valid idShorts ("5-axis"). A list's values share one type (AASd-109): mixed ones go as text.
    items: list[model.SubmodelElement] = [_ours("Name", str, name)]
    if isinstance(value, list):
        types = {_typed(v)[0] for v in value}
        kind = types.pop() if len(types) == 1 else str
        values = [_typed(v)[1] if kind is not str else str(v) for v in value]
        items.append(model.SubmodelElementList(
            "Values", model.Property, [_prop(None, kind, v) for v in values], value_type_list_element=kind,
            semantic_id=_ref(f"{CAPACITY_SEMANTIC_ID}:Values")))
    else:
        items.append(_ours("Value", *_typed(value)))
    return model.SubmodelElementCollection(None, items)


def _window(window: Mapping[str, Any]) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(None, [
        _ours("Start", dt.datetime, _time(window["start"])),
        _ours("End", dt.datetime, _time(window["end"])),
        _ours("ExpectedFreeHours", float, float(window["expected_free_hours"])),
    ])


def _list(name: str, items: Iterable[model.SubmodelElementCollection]) -> model.SubmodelElementList[Any]:
    return model.SubmodelElementList(name, model.SubmodelElementCollection, list(items),
                                     semantic_id=_ref(f"{CAPACITY_SEMANTIC_ID}:{name}"))


def capacity(key: Key, rec: Mapping[str, Any]) -> model.Submodel:
    fc, evidence = rec["forecast"], rec.get("evidence") or {}
    elements: list[model.SubmodelElement] = [
        _ours("Plant", str, rec["plant"]), _ours("Line", str, rec["line"]), _ours("Kind", str, rec["kind"]),
        _ours("State", str, rec["state"]), _ours("Since", dt.datetime, _time(rec["since"])),
        _ours("FreeNow", bool, bool(rec["free_now"])),
    ]
    if rec["idle_since"] is not None:
        elements.append(_ours("IdleSince", dt.datetime, _time(rec["idle_since"])))
    elements += [
        _ours("FreeHoursLast24h", float, float(rec["free_hours"]["last_24h"])),
        _ours("FreeHoursLast7d", float, float(rec["free_hours"]["last_7d"])),
        _ours("Timezone", str, fc["timezone"]), _ours("Threshold", float, float(fc["threshold"])),
        _ours("ForecastStart", dt.datetime, _time(fc["start"])),
        _list("FreeWindows", (_window(w) for w in fc["windows"])),
        _list("Capabilities", (_capability(n, v) for n, v in sorted(rec["capabilities"].items()))),
    ]
    if evidence.get("last_heard") is not None:
        elements.append(_ours("LastHeard", dt.datetime, _time(evidence["last_heard"])))
    elements.append(model.SubmodelElementList(
        "SilenceDetectedBy", model.Property,
        [_prop(None, str, how) for how in evidence.get("silence_detected_by", [])],
        value_type_list_element=str, semantic_id=_ref(f"{CAPACITY_SEMANTIC_ID}:SilenceDetectedBy")))
    shown = rec.get("exchange")
    if shown is not None:  # served by the exchange: what it adds (free_now above already heeds it)
        if shown["plant_online"] is not None:
            elements.append(_ours("PlantOnline", bool, bool(shown["plant_online"])))
        if shown["evidence_age_s"] is not None:
            elements.append(_ours("EvidenceAgeS", float, float(shown["evidence_age_s"])))
        elements.append(_ours("Stale", bool, bool(shown["stale"])))
    elements.append(_ours("Updated", dt.datetime, _time(rec["updated"])))
    return model.Submodel(submodel_id(key, CAPACITY), elements, id_short="Capacity",
                          semantic_id=_ref(CAPACITY_SEMANTIC_ID),
                          administration=model.AdministrativeInformation(version="1", revision="0"),
                          description=_text("Free capacity of the machine: state, free hours, usual free windows, "
                                            "capabilities (docs/CAPACITY.md)."))


# -- the shell --------------------------------------------------------------------------------------

def submodel_ref(key: Key, kind: str) -> model.ModelReference[model.Submodel]:
    return model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel_id(key, kind)),), model.Submodel)


def shell(rec: Mapping[str, Any]) -> model.AssetAdministrationShell:
    """The shell of one public machine's record; its submodels are referred to by id only."""
    key: Key = (rec["plant"], rec["machine"])
    plate: Mapping[str, str] = rec["nameplate"]
    # The asset's own global id where the machine has one (OPC UA ProductInstanceUri), else ours.
    asset = clean(plate.get("product_instance_uri", "")).strip()
    if not asset or len(asset) > MAX_ID:
        asset = _checked(f"{ASSET_PREFIX}{_q(key[0])}:{_q(key[1])}")
    serial = clean(plate.get("serial_number", "")).strip()
    specific = [model.SpecificAssetId("serialNumber", serial)] if 0 < len(serial) <= MAX_ID else []
    return model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id=asset, specific_asset_id=specific),
        shell_id(key), id_short=id_short(rec["machine"]),
        display_name=model.MultiLanguageNameType({"en": clean(rec["name"], 128) or clean(rec["machine"], 128) or "-"}),
        description=_text(f"{rec['kind'] or 'machine'} {rec['machine']} of plant {rec['plant']}"),
        submodel={submodel_ref(key, kind) for kind in KINDS})


def build(rec: Mapping[str, Any], links: Links) -> Shell:
    """The shell of one public machine's record, with its submodels."""
    return Shell(shell(rec), tuple(submodel(rec, links, kind) for kind in KINDS))


def submodel(rec: Mapping[str, Any], links: Links, kind: str) -> model.Submodel:
    """One submodel of a record, without building the others."""
    key: Key = (rec["plant"], rec["machine"])
    if kind == NAMEPLATE:
        return nameplate(key, rec["nameplate"])
    if kind == TIME_SERIES:
        return time_series(key, links)
    return capacity(key, rec)
