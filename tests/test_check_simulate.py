"""`collector simulate` publishes the demo plant for real (MQTT JSON, Sparkplug B, OPC UA), and
`collector check` reads it with the real adapters: every machine with its state, and the
problem named (with a non-zero exit) when a topic or node id is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from collector.check import EXIT_NO_DATA, EXIT_OK, Checker
from collector.configfile import load_config, load_config_text
from collector.core.model import Sample, State
from collector.simulate import plant_from_config, simulate
from collector.simulate.opcua import OpcUaPlant
from tests.fixtures._ports import free_port, until, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.opcua import OpcUaTestServer, Security, make_certificate, plain_cnc
from tests.opcua_helpers import CNC

# Starts real services (an OPC UA server, mosquitto, influxd or the collector): the slow tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
MACHINES = {"lathe-01", "lathe-02", "lathe-03", "lathe-04", "mill-01", "mill-02", "mill-03", "mill-04",
            "press-01", "press-02", "laser-01", "laser-02"}


def expected_cnc_state(values: dict[str, Any]) -> State:
    """The example's `cnc` rules, written out by hand: the oracle for what check reports."""
    if values.get("alarm"):
        return State.DOWN
    if values.get("mode") == "SETUP":
        return State.SETUP
    if values.get("execution") == "ACTIVE" or (values.get("spindle_rpm") or 0) > 50:
        return State.BUSY
    return State.IDLE


@asynccontextmanager
async def simulator(**where: Any) -> AsyncIterator[None]:
    """The example plant, time-lapsed, published while the block runs."""
    plant = plant_from_config(load_config(CONFIG / "example.yaml"), speed=20, publish_every=0.2)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(simulate(plant, stop, ready=ready, **where))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # start-up failed: raise it here
    try:
        yield
    finally:
        stop.set()
        assert await task > 0


async def run_check(path: Path, text_edit: Callable[[str], str] | None = None, *, duration: float = 30.0,
                    settle: Callable[[Checker], bool] | None = None) -> tuple[int, str, Checker]:
    """Check a config; stop as soon as ``settle`` holds (default: every configured machine sent data)."""
    text = path.read_text()  # noqa: ASYNC240 (a small file, before anything runs)
    loaded = load_config_text(text_edit(text) if text_edit else text, str(path), base_dir=path.parent)
    out = io.StringIO()
    checker = Checker(loaded, out)
    stop = asyncio.Event()
    done = settle or (lambda c: all(m.messages > 0 for m in c.machines.values() if m.configured))

    async def watch() -> None:
        with contextlib.suppress(TimeoutError):  # then check's own duration ends it
            await until(lambda: done(checker), duration, "check to see every machine")
            stop.set()

    watcher = asyncio.create_task(watch())
    code = await checker.run(duration, stop)
    watcher.cancel()
    return code, out.getvalue(), checker


def summary_states(output: str) -> dict[str, str]:
    body = output.split("summary after", 1)[1].split("problems", 1)[0].splitlines()[2:]
    return {line.split()[0]: line.split()[3] for line in body if line.strip()}


async def test_check_reads_simulated_mqtt_json_plant(mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """Test that check lists every machine of the MQTT JSON plant with the state its values call for."""
    monkeypatch.setenv("MQTT_PORT", str(mosquitto.port))
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    async with simulator(mqtt=(mosquitto.host, mosquitto.port)):
        code, output, checker = await run_check(CONFIG / "simulate-mqtt.yaml")
    assert code == EXIT_OK, output
    states = summary_states(output)
    assert set(states) == MACHINES
    for mid, m in checker.machines.items():
        assert m.state is not None and states[mid] == m.state.value
        if m.machine.profile == "cnc":
            assert m.state is expected_cnc_state(m.values), (mid, m.values)
    assert "OK: all 12 configured machine(s) sent data" in output
    assert re.search(r"\] lathe-01 +execution='(ACTIVE|READY|STOPPED)' spindle_rpm=[0-9.]+ alarm=(True|False)", output)
    assert re.search(r"\] lathe-01 +-> (BUSY|IDLE|SETUP|DOWN): ", output)
    assert not (tmp_path / "data").exists()  # nothing written


async def test_check_names_a_wrong_topic_and_fails(mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a subscription to a topic nobody publishes gives exit 1 and shows the topics that are there."""
    monkeypatch.setenv("MQTT_PORT", str(mosquitto.port))
    async with simulator(mqtt=(mosquitto.host, mosquitto.port)):
        code, output, _ = await run_check(CONFIG / "simulate-mqtt.yaml",
                                          lambda t: t.replace("{machine}/status", "{machine}/state"), duration=3)
    assert code == EXIT_NO_DATA
    assert "FAILED: 12 of 12 configured machine(s) sent no data" in output
    assert "machine lathe-01: no data from source mqtt" in output
    assert "topics on the broker that no subscription matches: factory/demo-plant/" in output
    assert "the subscriptions are: factory/{plant}/{line}/{machine}/state" in output
    assert set(summary_states(output).values()) == {"NO"}  # "NO DATA"


async def test_check_reports_missing_payload_path(mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a JSON path with no value in the payload is named with its topic and signal."""
    monkeypatch.setenv("MQTT_PORT", str(mosquitto.port))
    async with simulator(mqtt=(mosquitto.host, mosquitto.port)):
        code, output, _ = await run_check(CONFIG / "simulate-mqtt.yaml",
                                          lambda t: t.replace("alarm: alarm,", "alarm: 'alarms[0]',"))
    assert code == EXIT_OK  # the machines still send data
    assert "missing_path: factory/demo-plant/" in output and "no value for signal 'alarm'" in output


async def test_check_reads_simulated_sparkplug_plant(mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that check reads the Sparkplug B edge node: every device is a machine with a state."""
    monkeypatch.setenv("MQTT_PORT", str(mosquitto.port))
    async with simulator(mqtt=(mosquitto.host, mosquitto.port), json_payloads=False, sparkplug=True):
        code, output, checker = await run_check(CONFIG / "simulate-sparkplug.yaml")
    assert code == EXIT_OK, output
    assert set(summary_states(output)) == MACHINES
    for mid in ("lathe-01", "press-01", "laser-02"):
        m = checker.machines[mid]
        assert m.state is expected_cnc_state(m.values), (mid, m.values)


async def test_check_reads_simulated_opcua_plant(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test that check reads every machine's plain tags from the simulator's OPC UA server."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPCUA_ENDPOINT", endpoint)
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    async with simulator(opcua=endpoint):
        code, output, checker = await run_check(CONFIG / "simulate-opcua.yaml")
    assert code == EXIT_OK, output
    assert set(summary_states(output)) == MACHINES
    for m in checker.machines.values():
        if m.machine.profile == "cnc":
            assert m.state is expected_cnc_state(m.values), (m.machine.info.id, m.values)


async def test_check_finds_opc40001_machines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test that discovery finds all twelve OPC 40001 machines of the simulator, each with a state."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPCUA_ENDPOINT", endpoint)
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    async with simulator(opcua=endpoint):
        code, output, checker = await run_check(
            CONFIG / "simulate-opc40001.yaml",
            settle=lambda c: len(c.machines) == 12 and all(m.messages for m in c.machines.values()))
    assert code == EXIT_OK, output
    assert set(checker.machines) == MACHINES
    assert "found machine lathe-01 on source machinery (profile opc40001)" in output
    assert {m.state for m in checker.machines.values()} <= {State.BUSY, State.IDLE, State.SETUP, State.DOWN,
                                                            State.OFFLINE}


async def test_check_names_a_wrong_node_id_and_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test that a node id the server does not have is named with machine and signal, and check exits 1."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPCUA_ENDPOINT", endpoint)
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    async with simulator(opcua=endpoint):
        code, output, _ = await run_check(CONFIG / "simulate-opcua.yaml",
                                          lambda t: t.replace("s={id}.SpindleSpeed", "s={id}.Spindle"), duration=4)
    assert code == EXIT_NO_DATA
    assert "node address(es) not found" in output
    assert "machine lathe-01 signal spindle_rpm: " in output and "s=lathe-01.Spindle" in output
    assert "FAILED: 12 of 12 configured machine(s) sent no data" in output


def test_simulate_and_check_commands(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Test the two commands as an engineer runs them: exit 0 on the right config, 1 on a wrong topic."""
    env = collector_env(MQTT_PORT=str(mosquitto.port), COLLECTOR_DATA=str(tmp_path / "data"))
    sim = subprocess.Popen([*COLLECTOR, "simulate", "--mqtt", f"{mosquitto.host}:{mosquitto.port}", "--speed", "20",
                            "--publish-every", "200ms"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_for(lambda: "publishing 12 machine(s)" in (tmp_path / "sim.log").read_text()
                 if (tmp_path / "sim.log").exists() else _drain(sim, tmp_path / "sim.log"), 20, "simulator up")
        ok = subprocess.run([*COLLECTOR, "check", "-c", str(CONFIG / "simulate-mqtt.yaml"), "--for", "3s"],
                            env=env, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert set(summary_states(ok.stdout)) == MACHINES
        wrong = tmp_path / "wrong.yaml"
        wrong.write_text((CONFIG / "simulate-mqtt.yaml").read_text().replace("/status", "/status2"))
        bad = subprocess.run([*COLLECTOR, "check", "-c", str(wrong), "--for", "2s"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode == 1 and "no subscription matches" in bad.stdout
    finally:
        sim.terminate()
        assert sim.wait(20) == 0


def _drain(proc: subprocess.Popen[str], log: Path) -> bool:
    """Copy the simulator's stderr lines to a file until it says it publishes (a thread-free wait)."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    with log.open("a") as f:
        f.write(line)
    return "publishing 12 machine(s)" in line


async def test_check_names_a_refused_server_certificate(opcua_server: OpcUaTestServer, tmp_path: Path) -> None:
    """Test that an untrusted server certificate is named (with where it was saved to trust it) and check exits 1."""
    cert, key = make_certificate(tmp_path / "server-pki", "server", "urn:test:server", server=True)
    policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    await opcua_server.start([CNC], plain_cnc(CNC, ["CNC01"]), Security(cert=cert, key=key, policies=policies))
    config = tmp_path / "secure.yaml"
    config.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: cell, type: opcua, endpoint: "{opcua_server.url}", security_policy: Basic256Sha256}}
profiles:
  cnc:
    signals: {{execution: "nsu={CNC};s={{id}}.Execution"}}
    rules: [{{state: busy, when: "execution == 'ACTIVE'"}}, {{state: idle}}]
machines:
  - {{id: CNC01, source: cell, profile: cnc}}
data_dir: {tmp_path / "data"}
""")
    code, output, _ = await run_check(config, duration=3)
    assert code == EXIT_NO_DATA
    assert f"PROBLEM source cell (opcua): server certificate of {opcua_server.url} is not trusted" in output
    rejected = list((tmp_path / "data" / "sources" / "cell" / "pki" / "rejected").glob("*.der"))
    assert len(rejected) == 1 and str(rejected[0]) in output  # the admin moves it to pki/trusted/


async def test_switched_off_machine_shows_over_opcua(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test that a machine switched off in the simulator turns its tags BadNoCommunication (check sees it
    offline with that reason) and its OPC 40001 item state NotAvailable."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPCUA_ENDPOINT", endpoint)
    monkeypatch.setenv("COLLECTOR_DATA", str(tmp_path / "data"))
    plant = plant_from_config(load_config(CONFIG / "example.yaml"))
    server = OpcUaPlant(plant, endpoint)
    await server.start()
    try:
        await server.publish(Sample("lathe-01", {"execution": "ACTIVE", "spindle_rpm": 1200.0, "alarm": False,
                                                 "mode": "AUTO", "item_state": 5006, "operation_mode": 5026},
                                    time.time_ns()))
        loaded = load_config(CONFIG / "simulate-opcua.yaml")
        out = io.StringIO()
        checker = Checker(loaded, out)
        stop = asyncio.Event()
        task = asyncio.create_task(checker.run(30, stop))
        lathe = checker.machines["lathe-01"]
        await until(lambda: lathe.state is State.BUSY, 20, "lathe-01 busy")
        await server.switched_off("lathe-01", time.time_ns())
        await until(lambda: lathe.state is State.OFFLINE, 20, "lathe-01 offline")
        assert "BadNoCommunication" in lathe.reason
        assert "lathe-01       execution: BadNoCommunication" in out.getvalue()
        assert "lathe-01       -> OFFLINE: bad quality: " in out.getvalue()
        assert server.server is not None
        item = server.server.get_node(ua.NodeId("Machinery.lathe-01.MachineryItemState.CurrentState.Id",
                                                server.ns["urn:collector:simulate"]))
        assert (await item.read_value()).Identifier == 5005  # NotAvailable
        stop.set()
        assert await task == EXIT_OK  # the other machines' tags have their initial values: data too
    finally:
        await server.stop()


async def test_check_fails_when_discovery_finds_nothing(tmp_path: Path) -> None:
    """Test that a config that only discovers machines fails when no server answers (no machine at all)."""
    config = tmp_path / "discover.yaml"
    config.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: hall, type: opcua, endpoint: "opc.tcp://127.0.0.1:{free_port()}", discover: machinery, timeout: 1s}}
data_dir: {tmp_path / "data"}
""")
    code, output, checker = await run_check(config, duration=2, settle=lambda c: False)
    assert code == EXIT_NO_DATA and checker.machines == {}
    assert "PROBLEM source hall (opcua): cannot connect to opc.tcp://127.0.0.1:" in output
    assert output.rstrip().endswith("FAILED: no machine sent data")
