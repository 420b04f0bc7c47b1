"""The `type: opcua` source in the YAML config: defaults, cross-field checks, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters import REGISTRY
from adapters.opcua.addressing import AddressError, parse
from adapters.opcua.config import OpcUaSource
from collector.configfile import ConfigError, load_config_text

BASE = """
site: {plant: p}
sources:
  - id: cell
    type: opcua
    endpoint: "opc.tcp://10.0.0.5:4840"
EXTRA
machines:
  - {id: m1, source: cell, profile: opc40001, signals: {item_state: "nsu=urn:x;s=M1.State"}}
"""


def load(extra: str = "") -> OpcUaSource:
    source = load_config_text(BASE.replace("EXTRA", extra)).config.sources[0]
    assert isinstance(source, OpcUaSource)
    return source


def test_opcua_is_registered_with_sensible_defaults() -> None:
    """Test that `type: opcua` is in the registry and loads with the documented defaults."""
    assert REGISTRY["opcua"].config is OpcUaSource
    source = load()
    assert (source.keepalive, source.publishing_interval, source.queue_size) == (5.0, 0.5, 10)
    assert (source.security_policy, source.uncertain, source.discover, source.trust_any_server) == \
        ("None", "bad", None, False)


def test_durations_and_secrets() -> None:
    """Test that durations parse and the password never shows in the model's repr."""
    source = load("    publishing_interval: 250ms\n    username: op\n    password: hunter2\n    discover: machinery")
    assert source.publishing_interval == 0.25 and source.discover == "machinery"
    assert source.password is not None and source.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(source)


@pytest.mark.parametrize(("extra", "message"), [
    ("    certificate: c.der", "`certificate` and `private_key` go together"),
    ("    password: x", "`password` needs `username`"),
    ("    security_policy: Basic128Rsa15", "sources[0].security_policy"),
    ("    uncertain: maybe", "sources[0].uncertain"),
])
def test_config_errors_name_the_key(extra: str, message: str) -> None:
    """Test that bad opcua settings fail with a message naming the key."""
    with pytest.raises(ConfigError) as err:
        load(extra)
    assert message in str(err.value)


def test_endpoint_must_be_opc_tcp() -> None:
    """Test that an endpoint that is not opc.tcp:// is refused at load time."""
    with pytest.raises(ConfigError, match=r"sources\[0\]\.endpoint"):
        load_config_text(BASE.replace("opc.tcp://10.0.0.5:4840", "http://10.0.0.5").replace("EXTRA", ""))


@pytest.mark.parametrize(("text", "parts"), [
    ("ns=2;s=A;B", ("s=A;B", 2, None)),
    ("nsu=http://opcfoundation.org/UA/Machinery/;i=1001", ("i=1001", 0, "http://opcfoundation.org/UA/Machinery/")),
    ("i=2259", ("i=2259", 0, None)),
    ("nsu=urn:x;g=09087e75-8e5e-499b-954f-f2a9603db28a", ("g=09087e75-8e5e-499b-954f-f2a9603db28a", 0, "urn:x")),
])
def test_node_id_forms_parse(text: str, parts: tuple[str, int, str | None]) -> None:
    """Test that node id addresses split into identifier, index and URI."""
    parsed = parse(text)
    assert (parsed.identifier, parsed.index, parsed.uri) == parts


def test_browse_path_with_uri_containing_slashes() -> None:
    """Test that a browse path segment's namespace URI may contain slashes."""
    parsed = parse("/Objects/nsu=http://opcfoundation.org/UA/Machinery/;Machines/3:Mill1")
    assert [(s.name, s.index, s.uri) for s in parsed.path] == [
        ("Objects", 0, None), ("Machines", None, "http://opcfoundation.org/UA/Machinery/"), ("Mill1", 3, None)]


@pytest.mark.parametrize("text", ["", "ns=x;s=A", "nsu=urn:x", "s", "q=5", "/Objects//X", "/nsu=urn:x/Name"])
def test_bad_addresses_are_refused(text: str) -> None:
    """Test that malformed addresses raise AddressError."""
    with pytest.raises(AddressError):
        parse(text)


def test_readme_examples_are_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that every YAML example in adapters/opcua/README.md loads as config (with a site added)."""
    monkeypatch.setenv("OPCUA_PASSWORD", "from-the-environment")
    readme = (Path(__file__).resolve().parent.parent / "adapters" / "opcua" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) == 2
    for block in blocks:
        loaded = load_config_text("site: {plant: p}\n" + block, "README.md")
        assert all(isinstance(s, OpcUaSource) for s in loaded.config.sources)
