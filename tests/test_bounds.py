"""Every table the network feeds is bounded: bad-input kinds, Sparkplug nodes, aliases and
devices, the MQTT route cache."""

from __future__ import annotations

import pytest

from adapters.mqtt import decoder as decoder_module
from adapters.mqtt import sparkplug
from adapters.mqtt.sparkplug import SparkplugSession
from collector.core import badinput
from collector.core.badinput import BadInput
from tests.fixtures._sparkplug import INT64, STRING, M, payload
from tests.test_fuzz_decoders import deliver, offline_adapter


def test_bad_input_kinds_beyond_the_bound_fold_into_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that past MAX_KEYS (source, kind) pairs new pairs are counted under `other`."""
    monkeypatch.setattr(badinput, "MAX_KEYS", 3)
    bad = BadInput()
    for i in range(10):
        bad.report("s", f"kind-{i}", "x")
    bad.report("s", "kind-0", "x")
    assert bad.counts == {("s", "kind-0"): 2, ("s", "kind-1"): 1, ("s", "kind-2"): 1, ("s", "other"): 7}


def nbirth(n_aliases: int = 0) -> bytes:
    return payload([M("bdSeq", datatype=INT64, value=0), *[M(f"m{i}", i, STRING, "x") for i in range(n_aliases)]],
                   seq=0, timestamp=1)


def test_sparkplug_nodes_aliases_and_devices_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test the per-source node bound, the alias bound across nodes (a rebirth frees a node's
    aliases first), the device bound per node; garbage creates no node at all."""
    monkeypatch.setattr(sparkplug, "MAX_NODES", 3)
    monkeypatch.setattr(sparkplug, "MAX_ALIASES", 10)
    monkeypatch.setattr(sparkplug, "MAX_DEVICES", 2)
    reports: list[str] = []
    session = SparkplugSession("s")

    def handle(kind: str, node: str, data: bytes, device: str = "") -> list[str]:
        problems = [kind for kind, _ in session.handle("G", kind, node, device, data, 1, None).problems]
        reports.extend(problems)
        return problems

    for i in range(5):
        assert handle("NBIRTH", f"junk-{i}", b"\x0a\xff\xff\xff") == ["malformed_sparkplug"]
    assert session.nodes == {}
    reports.clear()
    handle("NBIRTH", "n0", nbirth(6))
    handle("NBIRTH", "n1", nbirth(6))  # 4 of its 6 aliases fit
    assert session.aliases == 10 and reports == ["too_many_aliases"]
    handle("NBIRTH", "n0", nbirth(2))  # a rebirth replaces n0's table: 4 aliases free again
    assert session.aliases == 6
    handle("NBIRTH", "n2", nbirth())
    assert handle("NBIRTH", "n3", nbirth()) == ["too_many_nodes"] and len(session.nodes) == 3
    data = payload([M("x", None, STRING, "1")], seq=1, timestamp=2)
    handle("DBIRTH", "n2", data, "d0")
    handle("DBIRTH", "n2", payload([M("x", None, STRING, "1")], seq=2, timestamp=2), "d1")
    assert handle("DBIRTH", "n2", payload([M("x", None, STRING, "1")], seq=3, timestamp=2), "d2") == \
        ["too_many_devices"]


def test_route_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a flood of distinct topics never keeps more than ROUTE_CACHE routes."""
    monkeypatch.setattr(decoder_module, "ROUTE_CACHE", 100)
    adapter = offline_adapter(BadInput())
    for i in range(1_000):
        deliver(adapter, f"other/{i}".encode(), b"{}")
        assert len(adapter.decoder._routes) <= 100
