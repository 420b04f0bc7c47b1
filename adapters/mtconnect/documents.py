"""MTConnect documents -> plain records: MTConnectDevices (probe), MTConnectStreams (current,
sample) and MTConnectError, in XML (any 1.x or 2.x namespace) or cppagent's JSON (versions 1 and
2), and the one-observation JSON of cppagent's MQTT entity sink.

Pure functions of bytes; no session state (that is ``decoder.py``'s). Elements are matched on
their local names, so every schema version's namespace reads the same.

Hostile XML: documents from the network never carry a DTD, so one that declares a DOCTYPE or an
ENTITY is refused before parsing (no entity expansion, no external fetches: what defusedxml's
``forbid_dtd`` does, without the dependency). Python's expat also caps entity amplification.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.core.errors import BadInputError

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?$")
CONDITION_LEVELS = {"Fault": "FAULT", "Warning": "WARNING", "Normal": "NORMAL", "Unavailable": "UNAVAILABLE"}
_CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}


class DocumentError(BadInputError):
    """A document that cannot be read; ``kind`` is its bad-input kind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Header:
    instance_id: int
    first: int | None = None  # firstSequence: the oldest observation the agent still has
    last: int | None = None  # lastSequence
    next: int | None = None  # nextSequence: where the next /sample starts


@dataclass(frozen=True, slots=True)
class DataItem:
    id: str
    name: str
    type: str  # e.g. EXECUTION; for conditions the condition's type (SYSTEM, LOGIC_PROGRAM...)
    category: str  # SAMPLE, EVENT, CONDITION


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str
    uuid: str
    data_items: list[DataItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Observation:
    device_name: str
    device_uuid: str
    data_item_id: str
    name: str
    type: str  # EXECUTION...; conditions: their type
    category: str  # SAMPLE, EVENT, CONDITION
    sequence: int
    ts_ns: int
    value: str  # conditions: the level (FAULT, WARNING, NORMAL, UNAVAILABLE)
    code: str = ""  # conditions: nativeCode (or conditionId), which alarm of the data item


@dataclass(frozen=True, slots=True)
class Devices:
    header: Header
    devices: list[Device]
    agents: list[str] = field(default_factory=list)  # uuids of the agents' own devices (never machines)


@dataclass(frozen=True, slots=True)
class Streams:
    header: Header
    observations: list[Observation]  # in sequence order


@dataclass(frozen=True, slots=True)
class Errors:
    header: Header | None
    codes: list[str]  # OUT_OF_RANGE, NO_DEVICE...
    message: str


Document = Devices | Streams | Errors


def type_of(element: str) -> str:
    """The data item type an observation element names: ``ControllerMode`` -> ``CONTROLLER_MODE``."""
    return _CAMEL.sub("_", element).upper()


def parse_time(text: str) -> int:
    """An MTConnect timestamp (ISO 8601, UTC, up to ns; `Z` may be missing in old agents) -> ns."""
    match = _TS.match(text.strip())
    if match is None:
        raise DocumentError("bad_timestamp", f"timestamp {text[:40]!r} is not ISO 8601")
    whole, fraction, zone = match.groups()
    try:
        seconds = _seconds(whole, zone)
    except (ValueError, OverflowError) as exc:
        raise DocumentError("bad_timestamp", f"timestamp {text[:40]!r}: {exc}") from exc
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


@functools.lru_cache(maxsize=4096)
def _seconds(whole: str, zone: str | None) -> int:
    """The whole seconds of a stamp: a document's observations share few of them (cached)."""
    return int(dt.datetime.fromisoformat(whole + ("+00:00" if zone in (None, "Z") else zone)).timestamp())


def parse(body: bytes) -> Document:
    """Any agent document, XML or JSON, by its first character."""
    head = body.lstrip()[:1]
    if head == b"<":
        return _parse_xml(body)
    if head == b"{":
        return _parse_json(body)
    raise DocumentError("malformed_document", "neither XML nor JSON")


# -- XML ------------------------------------------------------------------------------------------

def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _parse_xml(body: bytes) -> Document:
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise DocumentError("xml_dtd", "a document with a DTD or entity declarations (never sent by an agent)")
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown declared encoding
        raise DocumentError("malformed_xml", f"XML: {exc}") from exc
    kind = _local(root.tag)
    header_el = next((c for c in root if _local(c.tag) == "Header"), None)
    header = _xml_header(header_el) if header_el is not None else None
    if kind == "MTConnectError":
        codes = [e.get("errorCode", "") for e in root.iter() if e.get("errorCode")]
        text = "; ".join(" ".join(t.strip() for t in e.itertext() if t.strip()) for e in root.iter()
                         if e.get("errorCode"))
        return Errors(header, codes, text[:300])
    if header is None:
        raise DocumentError("malformed_document", f"{kind} without a Header")
    if kind == "MTConnectStreams":
        return Streams(header, _sorted(_xml_observations(root)))
    if kind == "MTConnectDevices":
        return Devices(header, [_xml_device(d) for d in root.iter() if _local(d.tag) == "Device"],
                       [a.get("uuid", "") for a in root.iter() if _local(a.tag) == "Agent"])
    raise DocumentError("malformed_document", f"unexpected document {kind[:60]!r}")


def _xml_header(el: ET.Element) -> Header:
    return Header(_int(el.get("instanceId"), "instanceId"), _opt_int(el.get("firstSequence")),
                  _opt_int(el.get("lastSequence")), _opt_int(el.get("nextSequence")))


def _xml_device(el: ET.Element) -> Device:
    items = [DataItem(d.get("id", ""), d.get("name", ""), d.get("type", ""), d.get("category", ""))
             for d in el.iter() if _local(d.tag) == "DataItem"]
    return Device(el.get("id", ""), el.get("name", ""), el.get("uuid", ""), items)


def _xml_observations(root: ET.Element) -> list[Observation]:
    out: list[Observation] = []
    for device in root.iter():
        if _local(device.tag) != "DeviceStream":
            continue
        name, uuid = device.get("name", ""), device.get("uuid", "")
        for component in device:
            for group in component:
                category = _CATEGORIES.get(_local(group.tag))
                if category is None:
                    continue
                for obs in group:
                    element = _local(obs.tag)
                    a = obs.attrib
                    if category == "CONDITION":
                        level = CONDITION_LEVELS.get(element)
                        if level is None:
                            raise DocumentError("malformed_document", f"condition element {element[:40]!r}")
                        typ, value, code = a.get("type", ""), level, a.get("nativeCode") or a.get("conditionId") or ""
                    else:
                        typ, value, code = type_of(element), (obs.text or "").strip(), ""
                    out.append(Observation(name, uuid, a.get("dataItemId", ""), a.get("name", ""), typ, category,
                                           _int(a.get("sequence"), "sequence"), parse_time(a.get("timestamp", "")),
                                           value, code))
    return out


# -- JSON (cppagent's JsonPrinter, versions 1 and 2, and the MQTT entity sink) --------------------

def _parse_json(body: bytes) -> Document:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DocumentError("malformed_json", f"JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DocumentError("malformed_document", "a JSON document that is not an object")
    try:
        if "MTConnectStreams" in doc:
            root = doc["MTConnectStreams"]
            return Streams(_json_header(root["Header"]), _sorted(_json_observations(root.get("Streams"))))
        if "MTConnectDevices" in doc:
            root = doc["MTConnectDevices"]
            devices = [_json_device(d) for d in _entries(root.get("Devices"), "Device")]
            agents = [str(a.get("uuid", "")) for _, a in _entries(root.get("Devices"), "Agent")]
            return Devices(_json_header(root["Header"]), devices, agents)
        if "MTConnectError" in doc:
            root = doc["MTConnectError"]
            header = _json_header(root["Header"]) if "Header" in root else None
            codes = re.findall(r'"errorCode":\s*"([A-Z_]+)"', orjson.dumps(root).decode())
            return Errors(header, codes, orjson.dumps(root.get("Errors", ""))[:300].decode(errors="replace"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DocumentError("malformed_document", f"JSON document: missing or wrong {exc}") from exc
    raise DocumentError("malformed_document", "JSON without MTConnectStreams, MTConnectDevices or MTConnectError")


def _json_header(h: Any) -> Header:
    if not isinstance(h, dict):
        raise DocumentError("malformed_document", "Header is not an object")
    return Header(_int(h.get("instanceId"), "instanceId"), _opt_int(h.get("firstSequence")),
                  _opt_int(h.get("lastSequence")), _opt_int(h.get("nextSequence")))


def _entries(container: Any, key: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(element name, attributes) of a JSON collection in either shape: version 1 is a list of
    one-key objects (``[{"Execution": {...}}]``), version 2 an object of lists
    (``{"Execution": [{...}]}``). With ``key``, only entries of that element, as their objects."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(container, list):
        for entry in container:
            if isinstance(entry, dict):
                out += [(k, v) for k, v in entry.items() if isinstance(v, dict)]
    elif isinstance(container, dict):
        for k, v in container.items():
            if isinstance(v, list):
                out += [(k, x) for x in v if isinstance(x, dict)]
            elif isinstance(v, dict):
                out.append((k, v))
    elif container is not None:
        raise DocumentError("malformed_document", f"a collection that is a {type(container).__name__}")
    return [(k, v) for k, v in out if key is None or k == key]


def _json_device(d: tuple[str, dict[str, Any]]) -> Device:
    attrs = d[1]
    items: list[DataItem] = []

    def walk(node: dict[str, Any]) -> None:
        for _, item in _entries(node.get("DataItems"), "DataItem"):
            items.append(DataItem(str(item.get("id", "")), str(item.get("name", "")), str(item.get("type", "")),
                                  str(item.get("category", ""))))
        for _, child in _entries(node.get("Components")):
            walk(child)

    walk(attrs)
    return Device(str(attrs.get("id", "")), str(attrs.get("name", "")), str(attrs.get("uuid", "")), items)


def _json_observations(streams: Any) -> list[Observation]:
    out: list[Observation] = []
    for _, device in _entries(streams, "DeviceStream"):
        name, uuid = str(device.get("name", "")), str(device.get("uuid", ""))
        if "ComponentStream" in device:  # version 2: a list of the components themselves
            raw = device["ComponentStream"]
            components = [c for c in (raw if isinstance(raw, list) else [raw]) if isinstance(c, dict)]
        else:  # version 1: a list of {"ComponentStream": {...}}
            components = [c for _, c in _entries(device.get("ComponentStreams"), "ComponentStream")]
        for component in components:
            for group, category in _CATEGORIES.items():
                for element, a in _entries(component.get(group)):
                    if category == "CONDITION":
                        level = CONDITION_LEVELS.get(element)
                        if level is None:
                            raise DocumentError("malformed_document", f"condition element {element[:40]!r}")
                        typ, value = str(a.get("type", "")), level
                        code = str(a.get("nativeCode") or a.get("conditionId") or "")
                    else:
                        typ, value, code = type_of(element), _text(a.get("value")), ""
                    out.append(Observation(name, uuid, str(a.get("dataItemId", "")), str(a.get("name", "")), typ,
                                           category, _int(a.get("sequence"), "sequence"),
                                           parse_time(str(a.get("timestamp", ""))), value, code))
    return out


def parse_entity(body: bytes, device_uuid: str) -> Observation:
    """One observation as cppagent's MQTT entity sink publishes it
    (``<prefix>/Devices/<uuid>/Observations/<dataItemId>``)."""
    try:
        a = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DocumentError("malformed_json", f"JSON: {exc}") from exc
    if not isinstance(a, dict):
        raise DocumentError("malformed_document", "an observation that is not a JSON object")
    category = str(a.get("category", ""))
    if category == "CONDITION":
        value = str(a.get("level", "")).upper()
        if value not in CONDITION_LEVELS.values():
            raise DocumentError("malformed_document", f"condition level {value[:40]!r}")
        code = str(a.get("nativeCode") or a.get("conditionId") or "")
    else:
        value, code = _text(a.get("result", a.get("value"))), ""
    return Observation("", device_uuid, str(a.get("dataItemId", "")), str(a.get("name", "")), str(a.get("type", "")),
                       category, _int(a.get("sequence"), "sequence"), parse_time(str(a.get("timestamp", ""))),
                       value, code)


# -- helpers --------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def _int(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DocumentError("malformed_document", f"{what} {str(value)[:30]!r} is not an integer") from None
    if not 0 <= number < 2**64:
        raise DocumentError("malformed_document", f"{what} {number} out of range")
    return number


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value, "sequence")


def _sorted(observations: list[Observation]) -> list[Observation]:
    """A document groups observations by component and category; one device's readings are
    handed over in the order the agent took them: by sequence."""
    return sorted(observations, key=lambda o: o.sequence)
