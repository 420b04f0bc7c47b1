"""Sparkplug `signals:` rename metrics to signals (births, data, aliases, `DATA/` prefixes), and
only what carries a mapped signal becomes a machine. Checked with payloads of our own encoder,
with payloads captured from mqtt-spb-wrapper (a library we do not use), and end to end with
that library publishing through mosquitto into the collector and InfluxDB, using the shipped
config/sparkplug-plant.yaml, whose metric names differ from its signal names."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from adapters.mqtt.sparkplug import SparkplugSession, signal_names
from collector.configfile import load_config_text
from collector.core.badinput import BadInput
from collector.core.model import Connectivity, MachineFound, Reading
from collector.engine import Engine
from collector.influx import make_sink
from tests.fixtures._foreign import foreign_python
from tests.fixtures._mqtt import Publisher, machine, make_adapter, make_source, running
from tests.fixtures._ports import until
from tests.fixtures._sparkplug import BOOLEAN, INT64, STRING, M, payload
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
PLANT = ROOT / "config" / "sparkplug-plant.yaml"
GOLDEN = ROOT / "tests" / "golden" / "sparkplug" / "mqtt-spb-wrapper.json"
PRODUCER = ROOT / "tests" / "independent" / "spb_edge.py"
MS = 1_000_000
PLANT_SIGNALS = {"state": "PackML/State", "unit_mode": "PackML/UnitMode"}
# The built-in packml profile, written out independently: state number -> canonical state.
PACKML = {4: "idle", 6: "busy", 11: "down", 2: "idle"}


def test_signal_names_cover_both_data_prefix_forms() -> None:
    """Test that a mapped metric is found as `DATA/<name>` and as `<name>`, whichever the config names."""
    names = signal_names({"state": "PackML/State", "rpm": "DATA/Spindle"})
    assert names["PackML/State"] == names["DATA/PackML/State"] == ("state",)
    assert names["Spindle"] == names["DATA/Spindle"] == ("rpm",)


def test_captured_foreign_payloads_decode_to_signals() -> None:
    """Test the golden capture of mqtt-spb-wrapper (birth metrics `DATA/PackML/State`, data metrics
    `PackML/State`): with the plant's `signals` both become signal `state`, attributes and the
    gateway's own metrics become nothing."""
    golden = json.loads(GOLDEN.read_text())
    bad: list[tuple[str, str]] = []
    session = SparkplugSession("spb")
    names = signal_names(PLANT_SIGNALS)
    out: dict[str, list[Any]] = {}
    for msg in golden["messages"]:
        device = "" if msg["type"].startswith("N") else golden["device"]
        outcome = session.handle(golden["group"], msg["type"], golden["edge_node"], device,
                                 bytes.fromhex(msg["hex"]), 0, device or golden["edge_node"], names)
        out[msg["type"]] = outcome.events
        bad += outcome.problems
    stamp = 1_764_000_000_000 * MS
    # Firmware, Uptime, Node Control: no machine signal on the gateway (the adapter then drops its
    # online event too: a node without readings is not registered, see the next test).
    assert not any(isinstance(e, Reading) for e in out["NBIRTH"])
    assert out["DBIRTH"] == [Connectivity("spb", True, out["DBIRTH"][0].ts_ns, "Sparkplug DBIRTH", ("capper-2",)),
                             Reading("capper-2", "state", 4, stamp), Reading("capper-2", "unit_mode", 1, stamp)]
    assert out["DDATA"] == [Reading("capper-2", "state", 6, stamp + 1500 * MS)]
    assert bad == []


async def test_aliases_rename_and_only_mapped_nodes_become_machines(mosquitto: Mosquitto) -> None:
    """Test through mosquitto with `discover: *`: garbage on an NBIRTH topic and an NBIRTH without a
    mapped metric (a gateway) register nothing; a device whose birth maps metric `Line/Exec` (alias 7)
    to signal `execution` is registered once, and its alias-only data arrives as `execution`."""
    bad = BadInput()
    sub = {"topic": "spBv1.0/{group}/#", "payload": "sparkplug_b", "signals": {"execution": "Line/Exec"},
           "discover": [{"match": "*", "profile": "lathe"}]}
    adapter = make_adapter(make_source(mosquitto, subscriptions=[sub]), [machine("other")], bad=bad)
    pub = Publisher(mosquitto)
    try:
        async with running(adapter) as events:
            pub.publish("spBv1.0/G/NBIRTH/N", b"\x0a\xff\xff\xff\x0f garbage")
            pub.publish("spBv1.0/G/NBIRTH/gw", payload([M("bdSeq", datatype=INT64, value=0),
                                                        M("Node Control/Rebirth", 1, BOOLEAN, False),
                                                        M("Uptime", 2, STRING, "3d")], seq=0, timestamp=1))
            pub.publish("spBv1.0/G/DBIRTH/gw/lathe-9", payload([M("Line/Exec", 7, STRING, "READY"),
                                                                M("Temp", 8, STRING, "20")], seq=1, timestamp=2))
            pub.publish("spBv1.0/G/DDATA/gw/lathe-9", payload([M(alias=7, value="ACTIVE"), M(alias=8, value="21")],
                                                              seq=2, timestamp=3))
            pub.publish("spBv1.0/G/NDATA/gw", payload([M(alias=2, value="4d")], seq=3, timestamp=4))
            # The NDEATH of a node that is no machine and has none must not take the source offline.
            pub.publish("spBv1.0/G/NDEATH/gw-2", payload([M("bdSeq", datatype=INT64, value=0)]))
            await until(lambda: sum(isinstance(e, Reading) for e in events) == 2, what="two readings")
            await asyncio.sleep(0.2)  # the NDATA and NDEATH after them must not register or drop anything
    finally:
        pub.close()
    assert not any(isinstance(e, Connectivity) and not e.online for e in events)
    found = [e.machine for e in events if isinstance(e, MachineFound)]
    assert found == ["lathe-9"]
    assert [(r.machine, r.signal, r.value, r.ts_ns) for r in events if isinstance(r, Reading)] == [
        ("lathe-9", "execution", "READY", 2 * MS), ("lathe-9", "execution", "ACTIVE", 3 * MS)]
    assert events.index(next(e for e in events if isinstance(e, MachineFound))) < events.index(
        next(e for e in events if isinstance(e, Reading)))  # registered before its first reading
    assert bad.counts[("mq", "malformed_sparkplug")] == 1
    assert adapter.decoder.found == {"lathe-9": "lathe"} and "N" not in adapter.decoder.sparkplug.nodes  # type: ignore[union-attr]


def plant_config(broker: Mosquitto, influxd: InfluxD, tmp: Path, database: str) -> str:
    """config/sparkplug-plant.yaml as shipped, pointed at the test's broker and influxd."""
    data = yaml.safe_load(PLANT.read_text())
    source = data["sources"][0]
    source.update(host=broker.host, port=broker.port, client_id=f"collector-{database}")
    source.pop("tls")
    data["influx"] = {"url": influxd.url, "api": "v1", "database": database, "create_database": True}
    data["outbox"] = {"path": str(tmp / "outbox.sqlite"), "flush_interval": 0.1}
    data["data_dir"] = str(tmp)
    data["http"] = {"enabled": False}
    return yaml.safe_dump(data)


async def test_foreign_edge_library_drives_the_plant_config_into_influxdb(mosquitto: Mosquitto, influxd: InfluxD,
                                                                          tmp_path: Path) -> None:
    """Test config/sparkplug-plant.yaml against an edge node and device published by mqtt-spb-wrapper
    (own venv, paho-mqtt 1.6): InfluxDB holds the device's state history exactly as the stream
    implies (times, states, previous states, durations), and the gateway is no machine."""
    python = await asyncio.to_thread(foreign_python)
    loaded = load_config_text(plant_config(mosquitto, influxd, tmp_path, "spb_plant"), str(PLANT))
    engine = Engine(loaded, make_sink(loaded.config))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    states = [4, 6, 11, 4, 6, 2]
    try:
        await until(lambda: engine.stats.source_online.get("spb") is True, what="collector connected")
        producer = await asyncio.to_thread(
            subprocess.run, [str(python), str(PRODUCER), mosquitto.host, str(mosquitto.port), "plant3", "gw-1",
                             "capper-2", ",".join(map(str, states))], capture_output=True, text=True, timeout=60)
        assert producer.returncode == 0, producer.stderr
        sent = [json.loads(line) for line in producer.stdout.splitlines()]
        stamps = [m["ts_ms"] * MS for m in sent if "ts_ms" in m]

        def rows() -> list[dict[str, Any]]:
            return influxd.rows("SELECT state, previous, previous_s FROM machine_state WHERE machine = 'capper-2'",
                                "spb_plant")

        await until(lambda: len(rows()) >= len(states), 30, "the device's state changes in InfluxDB")
        assert "gw-1" not in engine.trackers and "capper-2" in engine.trackers
    finally:
        stop.set()
        await task
    stored = [(r["time"], r["state"], r["previous"], r["previous_s"]) for r in rows()
              if r["time"] <= stamps[-1]]
    expected = []
    for i, (ts, number) in enumerate(zip(stamps, states, strict=True)):
        previous = "offline" if i == 0 else PACKML[states[i - 1]]
        expected.append((ts, PACKML[number], previous, None if i == 0 else (ts - stamps[i - 1]) / 1e9))
    assert [row[:3] for row in stored] == [row[:3] for row in expected]
    for got, want in zip(stored[1:], expected[1:], strict=True):
        assert abs(got[3] - want[3]) < 1e-9
    assert influxd.rows("SELECT count(state_code) FROM machine_state WHERE machine = 'gw-1'", "spb_plant") == []
    assert engine.bad_input.counts.get(("spb", "unknown_alias"), 0) == 0
