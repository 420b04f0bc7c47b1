"""MQTT config checks and payload decoding (paths, plain values, timestamps) without a broker."""

from __future__ import annotations

import jmespath
import pytest
from pydantic import ValidationError

from adapters.mqtt.config import MqttSource
from adapters.mqtt.payloads import MISSING, PathError, compile_path, parse_timestamp, parse_value
from adapters.mqtt.topics import TopicTemplate

DOC = {"exec": "ACTIVE", "spindle": {"speed": 1200, "load": None}, "alarms": [False, True],
       "axes": [{"name": "x", "pos": 1.5}, {"name": "y", "pos": 2.5}]}


@pytest.mark.parametrize("path", ["exec", "spindle.speed", "alarms[0]", "alarms[-1]", "axes[1].pos",
                                  "axes[?name=='y'].pos | [0]", "length(alarms)", "nope", "spindle.load",
                                  "alarms[5]", "exec.deeper", "spindle[0]"])
def test_fast_paths_agree_with_jmespath(path: str) -> None:
    """Test that compiled paths give JMESPath's result (``MISSING`` where JMESPath gives null)."""
    expected = jmespath.search(path, DOC)
    got = compile_path(path)(DOC)
    assert (got is MISSING) if expected is None else got == expected


def test_bad_path_is_rejected() -> None:
    """Test that a path JMESPath cannot parse raises PathError naming it."""
    with pytest.raises(PathError, match="a\\[\\["):
        compile_path("a[[")


@pytest.mark.parametrize(("raw", "value"), [(b"1", 1), (b"-3", -3), (b"2.5", 2.5), (b"true", True), (b"OFF", False),
                                            (b" ACTIVE\n", "ACTIVE"), (b"nan", "nan")])
def test_plain_values(raw: bytes, value: object) -> None:
    """Test that plain payloads become int, float, bool or text."""
    assert parse_value(raw) == value and type(parse_value(raw)) is type(value)


@pytest.mark.parametrize(("raw", "fmt", "ns"), [
    (1_700_000_000, "auto", 1_700_000_000 * 10**9),
    (1_700_000_000.25, "auto", 1_700_000_000_250_000_000),
    (1_700_000_000_123, "auto", 1_700_000_000_123_000_000),
    (1_700_000_000_123_456, "auto", 1_700_000_000_123_456_000),
    (1_700_000_000_123_456_789, "auto", 1_700_000_000_123_456_789),
    ("2023-11-14T22:13:20Z", "auto", 1_700_000_000 * 10**9),
    ("2023-11-15T06:13:20.5+08:00", "iso", 1_700_000_000_500_000_000),
    ("2023-11-14T22:13:20", "auto", 1_700_000_000 * 10**9),
    (1_700_000_000_123, "ms", 1_700_000_000_123_000_000),
    ("1700000000", "s", 1_700_000_000 * 10**9),
])
def test_timestamps(raw: object, fmt: str, ns: int) -> None:
    """Test that epoch s/ms/us/ns (told apart by size in `auto`) and ISO 8601 become exact ns."""
    assert parse_timestamp(raw, fmt) == ns


@pytest.mark.parametrize("raw", [True, "yesterday", None, [1]])
def test_bad_timestamps(raw: object) -> None:
    """Test that booleans, non-ISO strings and other types are rejected with ValueError."""
    with pytest.raises(ValueError):
        parse_timestamp(raw, "auto")


def test_topic_template_filter_and_match() -> None:
    """Test that a template subscribes with `+` for named levels and matches only its shape."""
    t = TopicTemplate("factory/{plant}/{line}/{machine}/status")
    assert t.filter == "factory/+/+/+/status"
    assert t.match("factory/sz/turning/cnc-07/status".split("/")) == {"plant": "sz", "line": "turning",
                                                                      "machine": "cnc-07"}
    assert t.match("factory/sz/turning/cnc-07/lwt".split("/")) is None
    assert t.match("factory/sz/turning/status".split("/")) is None
    multi = TopicTemplate("plc/{machine}/#")
    assert multi.filter == "plc/+/#" and multi.match(["plc", "m1", "a", "b"]) == {"machine": "m1"}


@pytest.mark.parametrize(("sub", "message"), [
    ({"topic": "factory/#/x"}, "`#` only as the whole last level"),
    ({"topic": "factory/{line}/status"}, "name the machine level"),
    ({"topic": "a/{machine}x/b"}, "a named level is a whole level"),
    ({"topic": "a/{machine}/{machine}"}, "a name appears twice"),
    ({"topic": "a/{machine}", "machine_id": "{plant}-{machine}"}, "{plant} is not a named level"),
    ({"topic": "a/{machine}", "payload": "value"}, "set `signal` or name a topic level"),
    ({"topic": "a/{machine}", "payload": "sparkplug_b"}, "start with `spBv1.0/`"),
    ({"topic": "a/{machine}", "discover": [{"match": "*", "profile": "p"}]}, "needs `signals`"),
])
def test_config_errors_name_the_problem(sub: dict[str, object], message: str) -> None:
    """Test that bad subscriptions are rejected at load time with a message naming the problem."""
    with pytest.raises(ValidationError, match=message.replace("{", "\\{").replace("}", "\\}").replace("`", ".")):
        MqttSource.model_validate({"id": "s", "type": "mqtt", "host": "h", "subscriptions": [sub]})


def test_tls_needs_cert_and_key_together() -> None:
    """Test that a client certificate without its key is a config error."""
    with pytest.raises(ValidationError, match="go together"):
        MqttSource.model_validate({"id": "s", "type": "mqtt", "host": "h", "tls": {"cert_file": "c.pem"},
                                   "subscriptions": [{"topic": "a/{machine}"}]})
