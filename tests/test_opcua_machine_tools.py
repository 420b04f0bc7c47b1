"""Zero-config discovery of machine tools on a server not built on asyncua: node-opcua loading the
OPC Foundation's Machine Tools and Woodworking nodesets, through the engine and the outbox into
influxd. Each machine runs a scripted cycle (setup, automatic and running, program ended, a
fault, switched off) in its own state model; what lands in influxd is checked against the
script's own expectation and the times it wrote at."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client

from adapters.opcua.discovery import Discovery
from collector.aas.builder import Links, build
from collector.capacity.service import Capacity
from collector.check import EXIT_NO_DATA
from collector.configfile import load_config_text
from collector.engine import Engine
from collector.influx import make_sink
from tests.aas_helpers import read_back
from tests.fixtures._ports import until
from tests.fixtures.influxdb import InfluxD
from tests.fixtures.node_opcua import MachineToolsServer
from tests.test_check_simulate import run_check, summary_states

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

CONFIG = """
site: {{plant: p1}}
data_dir: {tmp}
http: {{enabled: false}}
influx: {{url: '{url}', api: v1, database: tools, create_database: true}}
outbox: {{path: {tmp}/outbox.sqlite, flush_interval: 0.2}}
sources:
  - {{id: cell, type: opcua, endpoint: "{endpoint}", discover: machinery, keepalive: 0.5,
     publishing_interval: 0.05, timeout: 3}}
machines:  # tags and sharing for one discovered machine; its nameplate and kind come from the server
  - {{id: mill-item, line: milling, public: true, source: cell, profile: opc40001}}
"""

# Per step: what the script writes to each machine, and the state the profile must make of it.
# Machine Tools (OPC 40501): operation_mode 0 Manual 1 Automatic 2 Setup 4 Service; program
# 1 Running 2 Ended; channels 0 Active 2 Reset; stack light colours on/off.
# Machinery (OPC 40001): item_state 5004 OutOfService 5006 Executing 5007 NotExecuting;
# operation_state 5026 Processing 5027 Setup. Woodworking: ww_state 2 READY 3 WORKING 4 ERROR,
# ww_mode 1 AUTOMATIC 4 SETUP.
SCRIPT: list[dict[str, tuple[dict[str, Any], str]]] = [
    {"lathe-basic": ({"operation_mode": 1, "program": 2}, "idle"),
     "mill-channels": ({"operation_mode": 1, "channels": [2, 2]}, "idle"),
     "mill-item": ({"item_state": 5007, "operation_state": 5026}, "idle"),
     "edge-bander": ({"ww_state": 2, "ww_mode": 1}, "idle")},
    {"lathe-basic": ({"operation_mode": 2}, "setup"),
     "mill-channels": ({"operation_mode": 2}, "setup"),
     "mill-item": ({"operation_state": 5027}, "setup"),
     "edge-bander": ({"ww_mode": 4}, "setup")},
    # written in this order (the program starts, then the mode turns automatic), so no machine
    # passes through idle on the way
    {"lathe-basic": ({"program": 1, "stacklight": {"green": True}, "operation_mode": 1}, "busy"),
     "mill-channels": ({"channels": [0, 2], "operation_mode": 1}, "busy"),
     "mill-item": ({"item_state": 5006, "operation_state": 5026}, "busy"),
     "edge-bander": ({"ww_state": 3, "ww_mode": 1}, "busy")},
    {"lathe-basic": ({"program": 2}, "idle"),
     "mill-channels": ({"channels": [2, 2]}, "idle"),
     "mill-item": ({"item_state": 5007}, "idle"),
     "edge-bander": ({"ww_state": 2}, "idle")},
    {"lathe-basic": ({"stacklight": {"green": False, "red": True}}, "down"),
     "mill-channels": ({"operation_mode": 4}, "down"),
     "mill-item": ({"item_state": 5004}, "down"),
     "edge-bander": ({"ww_state": 4}, "down")},
]
MACHINES = sorted(SCRIPT[0])


async def test_machine_tools_and_woodworking_are_tracked_by_type(machine_tools_server: MachineToolsServer,
                                                                 influxd: InfluxD, tmp_path: Path) -> None:
    """Test that discovery by type tracks a machine tool with MachineryItemState under Monitoring, one
    with only OperationMode, stack light and active program, one with NC channels, and a
    woodworking machine, each through its cycle, and that switching the server off makes them
    offline: the exact history in influxd, changes dated when the server wrote them."""
    server = machine_tools_server
    written: list[dict[str, tuple[int, int]]] = []  # per step, machine -> (ns before, ns after) the write

    async def step(number: int) -> None:
        times = {}
        for machine, (values, _) in SCRIPT[number].items():
            before = time.time_ns()
            await server.set(machine, **values)
            times[machine] = (before, time.time_ns())
        written.append(times)

    await step(0)
    loaded = load_config_text(CONFIG.format(tmp=tmp_path, url=influxd.url, endpoint=server.url), "tools.yaml")
    engine = Engine(loaded, make_sink(loaded.config), backoff_initial_s=0.2, backoff_cap_s=0.5)
    capacity = Capacity(loaded.config.capacity, None)
    capacity.bind(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    def current(machine: str) -> str | None:
        if task.done():
            task.result()  # the engine failed: its error, not a time-out
        status = engine.snapshot().get(machine)
        return None if status is None else status.state.value

    try:
        await until(lambda: all(current(m) == "idle" for m in MACHINES), 30, "all four machines found and idle")
        assert "cmm-1" not in engine.trackers  # no state model: not tracked, reported (see the check test)
        info = engine.machines["mill-item"].info
        assert info.kind == "machine tool"
        assert dict(info.nameplate) == {"manufacturer": "ACME Werkzeugmaschinen", "model": "VMC 500",
                                        "serial_number": "SN-1001", "product_instance_uri": "urn:acme:SN-1001"}
        record = capacity.record("mill-item")  # what the capacity API and feed share of it
        assert record is not None and record["kind"] == "machine tool" and record["line"] == "milling"
        assert record["nameplate"]["serial_number"] == "SN-1001"
        # ... and its Asset Administration Shell's Digital Nameplate, read back through the BaSyx SDK.
        plate = read_back(build(record, Links("http://x")).submodels[0])
        assert {e.id_short: e.value for e in plate.submodel_element} == {
            "ManufacturerName": {"en": "ACME Werkzeugmaschinen"}, "ManufacturerProductDesignation": {"en": "VMC 500"},
            "SerialNumber": "SN-1001", "URIOfTheProduct": "urn:acme:SN-1001"}
        assert capacity.record("lathe-basic") is None  # discovered, not public: not shared
        assert engine.machines["edge-bander"].info.nameplate == (("manufacturer", "Holz AG"),
                                                                 ("serial_number", "WW-77"))
        assert {m: engine.machines[m].profile for m in MACHINES} == {
            "lathe-basic": "machinetool", "mill-channels": "machinetool", "mill-item": "opc40001",
            "edge-bander": "woodworking"}
        for number in range(1, len(SCRIPT)):
            await step(number)
            await until(lambda n=number: all(current(m) == SCRIPT[n][m][1] for m in MACHINES), 15,  # type: ignore[misc]
                        f"step {number}: {[SCRIPT[number][m][1] for m in MACHINES]}")
        killed = time.time_ns()
        await server.kill()  # switched off: no goodbye, the session is lost
        await until(lambda: all(current(m) == "offline" for m in MACHINES), 15, "all offline after the server died")
        lost = time.time_ns()

        def history(machine: str) -> list[dict[str, Any]]:
            return influxd.rows(f"SELECT state, previous_s FROM machine_state WHERE machine = '{machine}'", "tools")

        await until(lambda: all(len(history(m)) >= len(SCRIPT) + 1 for m in MACHINES), 30, "every change in influxd")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    for machine in MACHINES:
        rows = history(machine)
        states = [r["state"] for r in rows]
        assert states[:len(SCRIPT) + 1] == [step[machine][1] for step in SCRIPT] + ["offline"], (machine, states)
        # the first change is when the collector first saw the machine; every later one is dated
        # by the server's source timestamp of the write that caused it (milliseconds, kept
        # strictly increasing by the server, so they may run a few ms ahead of its clock)
        for number in range(1, len(SCRIPT)):
            before, after = written[number][machine]
            assert before - 2_000_000 <= rows[number]["time"] <= after + 50_000_000, (machine, number)
        assert killed <= rows[len(SCRIPT)]["time"] <= lost, machine
        for earlier, later in itertools.pairwise(rows[:len(SCRIPT) + 1]):  # durations add up exactly
            assert abs(later["previous_s"] * 1e9 - (later["time"] - earlier["time"])) < 1_000, machine


async def test_check_lists_each_model_and_the_machine_it_cannot_track(
        machine_tools_server: MachineToolsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test that `collector check` on the zero-config example finds the four machines with the state
    their model gives, and lists the machine without a state model as a problem, with what it has."""
    monkeypatch.setenv("OPCUA_ENDPOINT", machine_tools_server.url)
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    await machine_tools_server.set("lathe-basic", operation_mode=2)
    await machine_tools_server.set("edge-bander", ww_state=3, ww_mode=1)
    await machine_tools_server.set("mill-item", item_state=5006, operation_state=5026)
    await machine_tools_server.set("mill-channels", operation_mode=1, channels=[1, 2])
    code, output, checker = await run_check(
        CONFIG_DIR / "opc40001-server.yaml", duration=20,
        settle=lambda c: set(MACHINES) <= {m for m, check in c.machines.items() if check.state is not None})
    states = summary_states(output)
    assert {m: states[m] for m in MACHINES} == {"lathe-basic": "setup", "edge-bander": "busy", "mill-item": "busy",
                                               "mill-channels": "idle"}, output
    assert "cmm-1" not in checker.machines
    problems = output.split("problems", 1)[1]
    assert "not_trackable: machine cmm-1 is not trackable: no machine type (a plain object); objects Identification" \
        in problems, output
    assert "never arrived" not in problems  # a lamp's or channel's nodes arrive as the whole stack light / channels
    assert "found machine lathe-basic on source hall-1 (profile machinetool)" in output
    assert code == EXIT_NO_DATA  # press-7 is configured but not on this server


async def test_a_rescan_examines_only_what_is_new(machine_tools_server: MachineToolsServer) -> None:
    """Test that discovery over one session examines every machine once: a rescan returns no machine
    already tracked, only the one without a state model (it may gain one), and no type browse."""
    async with Client(machine_tools_server.url) as client:
        found = Discovery(client, await client.get_namespace_array())
        first = {m.id: m.profile for m in await found.find()}
        assert first == {"mill-item": "opc40001", "lathe-basic": "machinetool", "mill-channels": "machinetool",
                         "edge-bander": "woodworking", "cmm-1": None}
        types = found.search.types
        again = await found.find()
        assert [m.id for m in again] == ["cmm-1"] and again[0].profile is None
        assert found.search.types is types  # the type tree is browsed once per session
