"""Property-based and mutation fuzzing of every decoder a network peer can feed: JSON paths and
payloads, plain values, timestamps in every format, Sparkplug B protobuf (valid births and data,
mutated), OPC UA values and status codes of odd types. The contract: a decoder returns
well-formed events or reports bad input of a known kind; nothing else escapes."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from asyncua import ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.mqtt.adapter import MqttAdapter
from adapters.mqtt.payloads import MISSING, compile_path, parse_timestamp, parse_value
from adapters.mqtt.sparkplug import SparkplugSession
from adapters.opcua.values import plain, quality, to_ns
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, MachineFound, Quality, Reading, Sample
from tests.fixtures._mqtt import machine, make_adapter
from tests.fixtures._sparkplug import BOOLEAN, DOUBLE, FLOAT, INT16, INT64, STRING, M, payload

GOLDEN = Path(__file__).resolve().parent / "golden" / "sparkplug" / "mqtt-spb-wrapper.json"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)
PATHS = ["exec", "spindle.speed", "alarms[0]", "a.b[2].c", "alarms[-1]", "length(alarms)", "items[?x > `1`].y",
         "a || b", "*.speed"]
KINDS = {"malformed_json", "wrong_type", "missing_path", "bad_timestamp", "malformed_sparkplug", "unknown_alias",
         "sparkplug_seq_gap", "unknown_machine", "unmatched_topic", "bad_topic", "payload_too_large",
         "unknown_status", "too_many_machines", "too_many_aliases", "too_many_nodes", "too_many_devices", "no_signals"}


@given(JSON, st.sampled_from(PATHS))
def test_json_paths_never_raise(obj: Any, path: str) -> None:
    """Test that every compiled path, fast or JMESPath, maps any JSON value to a value or MISSING."""
    value = compile_path(path)(obj)
    assert value is MISSING or value is not None


@given(st.binary(max_size=200) | st.text(max_size=50).map(str.encode))
def test_plain_values_are_a_scalar_or_not_utf8(data: bytes) -> None:
    """Test that a plain payload is a bool, int, finite float or string, or fails as not UTF-8."""
    try:
        value = parse_value(data)
    except UnicodeDecodeError:
        return
    assert isinstance(value, bool | int | float | str)
    if isinstance(value, float):
        assert value == value and abs(value) != float("inf")


TIMESTAMPS = (st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=40)
              | st.datetimes().map(dt.datetime.isoformat) | st.integers(-(10**30), 10**30).map(str)
              | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.lists(st.integers(), max_size=2))


@given(TIMESTAMPS, st.sampled_from(["auto", "s", "ms", "us", "ns", "iso"]))
def test_timestamps_are_an_int_or_a_value_error(raw: Any, fmt: str) -> None:
    """Test that any timestamp value in any format is integer ns or a ValueError (bad_timestamp)."""
    try:
        ts = parse_timestamp(raw, fmt)
    except ValueError:
        return
    assert type(ts) is int


# -- the whole per-message path of the MQTT adapter, without a socket -------------------------

SUBS = [
    {"topic": "f/{line}/{machine}/status", "payload": "json", "signals": {"execution": "exec", "rpm": "spindle.speed"},
     "timestamp": "ts", "discover": [{"match": "*", "profile": "p"}]},
    {"topic": "v/{machine}/{signal}", "payload": "value"},
    {"topic": "spBv1.0/{group}/#", "payload": "sparkplug_b", "signals": {"state": "PackML/State"},
     "discover": [{"match": "*", "profile": "p"}]},
]
STATUS = [{"topic": "f/{line}/{machine}/lwt"}]


def offline_adapter(bad: BadInput) -> MqttAdapter:
    source = {"host": "127.0.0.1", "port": 1, "subscriptions": SUBS, "status": STATUS, "max_payload": 4096,
              "max_machines": 50, "rebirth": True}
    return make_adapter(_source(source), [machine("cnc-1")], bad=bad)


def _source(fields: dict[str, Any]) -> Any:
    from adapters.mqtt.config import MqttSource

    return MqttSource.model_validate({"id": "mq", "type": "mqtt", **fields})


def deliver(adapter: MqttAdapter, topic: bytes, data: bytes) -> None:
    msg = paho.MQTTMessage(topic=topic)
    msg.payload = data
    adapter._on_message(None, None, msg)  # type: ignore[arg-type]  # the client is not used on this path


def check_events(adapter: MqttAdapter) -> None:
    for event in adapter.events:
        assert isinstance(event, Reading | Sample | Connectivity | MachineFound), event
        if isinstance(event, Reading | Sample | Connectivity):
            assert type(event.ts_ns) is int
        if isinstance(event, Reading | Sample):
            assert adapter.decoder.is_known(event.machine)
    assert len(adapter.decoder.found) + 1 <= 50


TOPICS = st.sampled_from([b"f/l1/cnc-1/status", b"f/l1/new-%d/status", b"v/cnc-1/rpm", b"v/x-%d/rpm", b"f/l/m/lwt",
                          b"spBv1.0/G/NBIRTH/n%d", b"spBv1.0/G/DBIRTH/n1/d%d", b"spBv1.0/G/DDATA/n1/d%d",
                          b"spBv1.0/G/NDEATH/n%d", b"spBv1.0/STATE/x", b"other/%d", b"\xff\xfe/%d"])
PAYLOADS = (st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
            | st.fixed_dictionaries({"exec": JSON, "spindle": st.fixed_dictionaries({"speed": JSON}), "ts": JSON})
            .map(lambda v: json.dumps(v).encode()))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TOPICS, st.integers(0, 60), PAYLOADS), min_size=1, max_size=30))
def test_any_message_sequence_yields_well_formed_events(messages: list[tuple[bytes, int, bytes]]) -> None:
    """Test the adapter's per-message path (route, decode, discover, Sparkplug session) on random
    topics and payloads: only counted bad input of known kinds, well-formed events, machines bounded."""
    bad = BadInput()
    adapter = offline_adapter(bad)
    for topic, n, data in messages:
        deliver(adapter, topic.replace(b"%d", str(n).encode()), data)
    check_events(adapter)
    assert {kind for _, kind in bad.counts} <= KINDS


# -- Sparkplug protobuf mutations of valid births and data --------------------------------------

def valid_messages() -> list[tuple[str, bytes]]:
    ours = [
        ("NBIRTH", payload([M("bdSeq", datatype=INT64, value=3), M("Node Control/Rebirth", 1, BOOLEAN, False)],
                           seq=0, timestamp=1_700_000_000_000)),
        ("DBIRTH", payload([M("PackML/State", 10, INT16, 6), M("rpm", 11, FLOAT, 1.5), M("t", 12, DOUBLE, -2.5),
                            M("s", 13, STRING, "x")], seq=1, timestamp=1_700_000_000_001)),
        ("DDATA", payload([M(alias=10, datatype=INT16, value=4), M(alias=11, datatype=FLOAT, value=2.5)],
                          seq=2, timestamp=1_700_000_000_002)),
    ]
    golden = json.loads(GOLDEN.read_text())
    return ours + [(m["type"], bytes.fromhex(m["hex"])) for m in golden["messages"]]


VALID = valid_messages()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind, data = draw(st.sampled_from(VALID))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        at = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x08]))
        elif op == "cut":
            del buf[at:at + draw(st.integers(1, 8))]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "dup":
            buf += buf[at:]
    return kind, bytes(buf)


@settings(max_examples=1000)
@given(st.lists(mutated(), min_size=1, max_size=6))
def test_mutated_sparkplug_payloads_decode_or_are_bad_input(messages: list[tuple[str, bytes]]) -> None:
    """Test that Sparkplug births and data with flipped, cut, inserted and repeated bytes decode to
    readings with integer timestamps, or report bad input of a known kind, and nothing else."""
    session = SparkplugSession("spb")
    for kind, data in messages:
        device = "" if kind.startswith("N") else "d1"
        outcome = session.handle("G", kind, "n1", device, data, 5, device or "n1")
        assert {problem for problem, _ in outcome.problems} <= KINDS
        for event in outcome.events:
            assert isinstance(event, Reading | Connectivity)
            assert type(event.ts_ns) is int
        if outcome.node_death is not None:
            assert type(outcome.node_death.ts_ns) is int


# -- OPC UA values and status codes ---------------------------------------------------------------

class _Mode(enum.IntEnum):
    A = 1
    B = 2


NODE_IDS = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda i: ua.NodeId(i, 2)),
    st.text(max_size=20).map(lambda s: ua.NodeId(s, 3)),
    st.binary(max_size=16).map(lambda b: ua.NodeId(b, 1, ua.NodeIdType.ByteString)),
    st.uuids().map(lambda u: ua.NodeId(u, 4, ua.NodeIdType.Guid)),
)
OPC_VALUES = st.one_of(
    NODE_IDS, st.text(max_size=20).map(lambda t: ua.LocalizedText(t)), st.text(max_size=20).map(ua.QualifiedName),
    st.sampled_from(list(_Mode)), st.sampled_from(list(ua.NodeClass)), st.integers(), st.floats(), st.booleans(),
    st.none(), st.binary(max_size=10), st.datetimes(), st.lists(st.integers(), max_size=3), st.uuids(),
)


@given(OPC_VALUES)
def test_opcua_values_become_plain_values(value: Any) -> None:
    """Test that NodeIds of every identifier type, texts, names and enums become plain comparable values."""
    out = plain(value)
    assert not isinstance(out, ua.NodeId | ua.LocalizedText | ua.QualifiedName | enum.Enum)
    if isinstance(value, ua.NodeId):
        assert out == value.Identifier
    elif isinstance(value, uuid.UUID | int | float | str | bytes | bool | type(None)):
        assert out is value or out == value or out != out


@given(st.integers(0, 2**32 - 1), st.booleans())
def test_any_status_code_has_a_quality_and_a_name(code: int, uncertain_is_bad: bool) -> None:
    """Test that any 32-bit status code, defined or not, maps to a quality and a printable status."""
    q, name = quality(ua.StatusCode(code), uncertain_is_bad)
    assert q in (Quality.GOOD, Quality.BAD) and isinstance(name, str)
    assert (q is Quality.GOOD) == (code >> 30 == 0 or (code >> 30 == 1 and not uncertain_is_bad))


@given(st.datetimes(timezones=st.none() | st.timezones()) | st.none())
def test_opcua_timestamps_are_ns_or_none(when: dt.datetime | None) -> None:
    """Test that any source timestamp, naive or zoned, from year 1 to 9999, is integer ns or None."""
    ns = to_ns(when)
    assert ns is None or (type(ns) is int and ns > 0)
