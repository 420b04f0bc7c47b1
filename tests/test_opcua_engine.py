"""The OPC UA source through the whole collector: engine, rules, tracker, real asyncua servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from asyncua import Server, ua

from collector.configfile import load_config_text
from collector.core.model import NS_PER_S, Output, State, StateChange
from collector.engine import Engine
from collector.sinks import NullSink
from tests.fixtures._ports import until
from tests.fixtures.opcua import (
    DI,
    MACHINERY,
    OpcUaTestServer,
    add_machinery_machine,
    machinery_types,
    plain_cnc,
    set_machinery_state,
)
from tests.opcua_helpers import CNC, DECOY, VENDOR

CONFIG = """
site: {{plant: test}}
data_dir: {data_dir}
http: {{enabled: false}}
sources:
  - {{id: cell, type: opcua, endpoint: "{url}", keepalive: 0.5, publishing_interval: 0.05, timeout: 3,
     rescan_interval: 0.5{extra}}}
profiles:
  lathe:
    signals:
      execution: "nsu={cnc};s={{node}}.Execution"
      spindle_rpm: "nsu={cnc};s={{node}}.SpindleSpeed"
      alarm: "/Objects/nsu={cnc};Machines/nsu={cnc};{{node}}/nsu={cnc};Alarm"
    rules:
      - {{state: down, when: "alarm", reason: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE' or spindle_rpm > 50"}}
      - {{state: idle}}
machines:
{machines}
"""


class Run:
    """An engine running in a task, its outputs collected."""

    def __init__(self, text: str) -> None:
        self.engine = Engine(load_config_text(text), NullSink(), backoff_initial_s=0.1, backoff_cap_s=0.3, tick_s=0.05)
        self.changes: list[StateChange] = []
        self.engine.on_output = self._collect
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.engine.run(self.stop))

    def _collect(self, out: Sequence[Output]) -> None:
        self.changes += [o for o in out if isinstance(o, StateChange)]

    def of(self, machine: str) -> list[StateChange]:
        return [c for c in self.changes if c.machine.id == machine]

    def state(self, machine: str) -> State | None:
        changes = self.of(machine)
        return changes[-1].state if changes else None

    async def wait(self, condition: Callable[[], bool], within: float = 15.0, what: str = "condition") -> None:
        def done() -> bool:
            if self.task.done():
                self.task.result()  # the engine failed: raise its error, not a time-out
            return condition()
        await until(done, within, what, explain=lambda: f"changes: {self.changes[-6:]}")

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


def config(srv: OpcUaTestServer, tmp_path: Path, machines: str, extra: str = "") -> str:
    return CONFIG.format(data_dir=tmp_path / "data", url=srv.url, extra=extra, cnc=CNC, machines=machines)


async def test_plain_tags_drive_busy_idle_down_with_exact_durations(opcua_server: OpcUaTestServer,
                                                                    tmp_path: Path) -> None:
    """Test that String/Double/Boolean tags drive idle, busy, down, idle, busy; durations exact to the ns."""
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]))
    run = Run(config(opcua_server, tmp_path, "  - {id: cnc-01, source: cell, profile: lathe, vars: {node: CNC01}}"))
    await run.wait(lambda: run.state("cnc-01") is State.IDLE, what="idle at start")
    # a whole second at least a second ahead: the engine rolls time up to the wall clock as it
    # ticks, so a reading that arrives after its own timestamp has passed is (rightly) clamped
    t0 = (time.time_ns() // NS_PER_S + 2) * NS_PER_S

    def at(offset_s: float) -> dt.datetime:
        ns = t0 + int(offset_s * NS_PER_S)
        return dt.datetime.fromtimestamp(ns // NS_PER_S, dt.UTC) + dt.timedelta(microseconds=ns % NS_PER_S // 1000)

    node = opcua_server.node
    await opcua_server.write(node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String, source_ts=at(0))
    await opcua_server.write(node(CNC, "CNC01.Alarm"), True, ua.VariantType.Boolean, source_ts=at(2.5))
    await opcua_server.write(node(CNC, "CNC01.Alarm"), False, ua.VariantType.Boolean, source_ts=at(3.25))
    await opcua_server.write(node(CNC, "CNC01.Execution"), "READY", ua.VariantType.String, source_ts=at(3.25))
    await opcua_server.write(node(CNC, "CNC01.SpindleSpeed"), 1200.0, ua.VariantType.Double, source_ts=at(4.0))
    await run.wait(lambda: len(run.of("cnc-01")) >= 5, what="four more changes")
    await run.finish()
    changes = run.of("cnc-01")
    assert [c.state for c in changes[:5]] == [State.IDLE, State.BUSY, State.DOWN, State.IDLE, State.BUSY]
    assert [c.ts_ns - t0 for c in changes[1:5]] == [0, 2_500_000_000, 3_250_000_000, 4_000_000_000]
    assert [c.previous_ns for c in changes[2:5]] == [2_500_000_000, 750_000_000, 750_000_000]
    assert changes[2].reason == "alarm"


async def test_server_restart_with_reordered_namespaces(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that a restart with reordered namespaces takes machines offline and back, read from the right nodes."""
    await opcua_server.start([CNC, DECOY], plain_cnc(CNC, ["CNC01", "CNC02"], decoy=DECOY))
    machines = ("  - {id: cnc-01, source: cell, profile: lathe, vars: {node: CNC01}}\n"
                "  - {id: cnc-02, source: cell, profile: lathe, vars: {node: CNC02}}")
    run = Run(config(opcua_server, tmp_path, machines))
    await run.wait(lambda: run.state("cnc-01") is State.IDLE and run.state("cnc-02") is State.IDLE, what="idle")
    await opcua_server.write(opcua_server.node(CNC, "CNC01.Execution"), "ACTIVE", ua.VariantType.String)
    await run.wait(lambda: run.state("cnc-01") is State.BUSY, what="cnc-01 busy")

    stopped = time.monotonic()
    await opcua_server.stop()
    await run.wait(lambda: run.state("cnc-01") is State.OFFLINE and run.state("cnc-02") is State.OFFLINE,
                   what="both offline")
    # within a few keep-alive periods (slack for a loaded CI machine; the session timeout is far longer)
    assert time.monotonic() - stopped < 3 * 0.5 + 3.0
    assert "unreachable" in run.of("cnc-01")[-1].reason

    await opcua_server.start([DECOY, CNC], plain_cnc(CNC, ["CNC01", "CNC02"], decoy=DECOY))
    assert opcua_server.ns == {DECOY: 2, CNC: 3}  # the indices moved
    await opcua_server.write(opcua_server.node(CNC, "CNC02.SpindleSpeed"), 900.0, ua.VariantType.Double)
    await run.wait(lambda: run.state("cnc-01") is State.IDLE and run.state("cnc-02") is State.BUSY,
                   what="back with the restarted server's values")
    snapshot = run.engine.snapshot()
    assert snapshot["cnc-01"].values["execution"] == "READY"  # not the decoy namespace's "DECOY"
    assert snapshot["cnc-02"].values["spindle_rpm"] == 900.0
    await opcua_server.write(opcua_server.node(CNC, "CNC01.Alarm"), True, ua.VariantType.Boolean)
    await run.wait(lambda: run.state("cnc-01") is State.DOWN, what="browse-path alarm after the restart")
    await run.finish()


async def test_discovered_machines_tracked_with_the_opc40001_profile(opcua_server: OpcUaTestServer,
                                                                     tmp_path: Path) -> None:
    """Test that discovered machines are tracked with the opc40001 rules, with no machine config."""
    async def build(server: Server, ns: dict[str, int]) -> None:
        await machinery_types(server, ns)
        await add_machinery_machine(server, ns, VENDOR, "Mill1", item=5006, mode=5026, locale="de")

    await opcua_server.start([VENDOR, DI, MACHINERY], build)
    run = Run(config(opcua_server, tmp_path, "  []", extra=", discover: machinery"))
    await run.wait(lambda: run.state("Mill1") is State.BUSY, what="Mill1 busy (Executing)")
    await set_machinery_state(opcua_server, VENDOR, "Mill1", mode=5027, locale="de")
    await run.wait(lambda: run.state("Mill1") is State.SETUP, what="Mill1 setup")
    assert opcua_server.server is not None
    await add_machinery_machine(opcua_server.server, opcua_server.ns, VENDOR, "Saw4", item=5004, mode=5026)
    await run.wait(lambda: run.state("Saw4") is State.DOWN, what="Saw4 (added later) down: out of service")
    await run.finish()
