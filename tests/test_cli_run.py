"""The running collector: graceful stop, the status HTTP server, and the demo."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import threading
import zlib
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from collector.configfile import load_config
from collector.core.model import State
from collector.demo import render
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.fixtures._ports import until, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env

# Each test runs the collector as a process (with its HTTP server): the slow tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


def test_sigterm_stops_gracefully_and_writes_machines_offline(tmp_path: Path) -> None:
    """Test that SIGTERM ends `collector run` with status 0 after writing every machine offline."""
    env = collector_env(COLLECTOR_HTTP__PORT="0", COLLECTOR_DATA_DIR=str(tmp_path))
    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(EXAMPLE), "--print"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    wait_for(lambda: sum("machine_state," in ln for ln in lines) >= 12, 30, "first state changes")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    reader.join(10)
    stopped = {ln.split("machine=")[1].split(",")[0] for ln in lines if 'reason="collector stopped"' in ln}
    offline_before = {ln.split("machine=")[1].split(",")[0] for ln in lines
                      if 'state="offline"' in ln and "collector stopped" not in ln}
    assert len(stopped | offline_before) == 12  # every machine ends offline
    assert "received SIGTERM: stopping" in proc.stderr.read()


async def test_status_http_serves_machines_metrics_and_readiness() -> None:
    """Test that /api/v1/machines, /metrics, /healthz and /readyz answer from the live engine."""
    loaded = load_config(EXAMPLE)
    loaded.config.http.port = 0
    engine = Engine(loaded, NullSink())
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http) as port:
        runner = asyncio.create_task(engine.run(stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await until(lambda: engine.stats.state_changes >= 12, 20, "a state change of every machine")
            machines = (await client.get("/api/v1/machines")).json()
            assert len(machines) == 12 and machines[0]["machine"] == "laser-01"
            assert {m["state"] for m in machines} <= {s.value for s in State}
            metrics = (await client.get("/metrics")).text
            assert 'collector_machine_state{machine="lathe-01",state="busy"}' in metrics
            assert 'collector_source_up{source="sim"} 1' in metrics
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/nope")).status_code == 404
        stop.set()
        await runner


def test_demo_board_renders_every_machine() -> None:
    """Test that the demo board shows every machine with its state and the idle-now line."""
    loaded = load_config(EXAMPLE)
    engine = Engine(loaded, NullSink())
    console = Console(record=True, width=160)
    console.print(render(engine.snapshot(), engine.clock(), "plant demo"))
    text = console.export_text()
    for m in loaded.machines:
        assert m.info.id in text
    assert "idle now (capacity to share)" in text and "offline 12" in text


def test_demo_command_runs_the_simulated_plant(tmp_path: Path) -> None:
    """Test that `collector demo --no-board` runs the embedded plant and logs real state changes."""
    proc = subprocess.run([*COLLECTOR, "demo", "--no-board", "--for", "4", "--speed", "50"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=collector_env())
    assert proc.returncode == 0, proc.stderr
    assert "-> busy" in proc.stderr and "demo stopped:" in proc.stdout


def test_a_clean_stop_leaves_state_the_next_start_resumes(tmp_path: Path) -> None:
    """Test that `collector run` commits every tracker's state to the outbox file, and the next start
    resumes all twelve machines from it (InfluxDB unreachable: the points wait in the outbox)."""
    outbox = tmp_path / "outbox.sqlite"
    env = collector_env(COLLECTOR_HTTP__PORT="0", COLLECTOR_DATA_DIR=str(tmp_path), INFLUX_URL="http://127.0.0.1:9",
                        COLLECTOR_OUTBOX__PATH=str(outbox), COLLECTOR_OUTBOX__STOP_DEADLINE="0.1")
    for attempt in range(2):
        proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(EXAMPLE), "--for", "3"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert outbox.exists()
        assert ("resuming 12 machine(s) from the state last committed" in err) == (attempt == 1), err


def _outbox_lines(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [line for (payload,) in db.execute("SELECT payload FROM outbox ORDER BY id") if payload
                for line in zlib.decompress(payload).decode().split("\n")]
    finally:
        db.close()


def test_after_kill_9_the_dead_time_of_a_source_that_does_not_redeliver_is_offline(tmp_path: Path) -> None:
    """Test that after SIGKILL, machines of a source that keeps nothing for us (here the simulator; OPC UA
    alike) resume from their last committed state and are offline from that commit to the restart,
    with a reason that says so; nothing of the first run is written twice."""
    outbox = tmp_path / "outbox.sqlite"
    env = collector_env(COLLECTOR_HTTP__PORT="0", COLLECTOR_DATA_DIR=str(tmp_path), INFLUX_URL="http://127.0.0.1:9",
                        COLLECTOR_OUTBOX__PATH=str(outbox), COLLECTOR_OUTBOX__STOP_DEADLINE="0.1")
    first = subprocess.Popen([*COLLECTOR, "run", "-c", str(EXAMPLE)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: sum(1 for line in _outbox_lines(outbox) if "state=" in line) >= 12, 30, "first states")
    finally:
        first.kill()
        first.wait(10)
    before = _outbox_lines(outbox)
    assert not any("collector stopped" in line for line in before), "a kill leaves no clean-stop points"
    second = subprocess.run([*COLLECTOR, "run", "-c", str(EXAMPLE), "--for", "2"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "resuming 12 machine(s) from the state last committed" in second.stderr
    after = _outbox_lines(outbox)
    assert after[:len(before)] == before
    dead = [line for line in after[len(before):] if 'reason="collector was not running"' in line]
    # every machine whose last state before the kill was not offline: offline from the last commit, once
    last: dict[str, str] = {}
    for line in before:
        if line.startswith("machine_state,"):
            last[_tag(line, "machine")] = line.split(' state="')[1].split('"')[0]
    was_on = {m for m, state in last.items() if state != "offline"}
    assert was_on, "the simulated plant had machines running"
    assert sorted(_tag(line, "machine") for line in dead) == sorted(was_on)


def _tag(line: str, key: str) -> str:
    return line.split(f",{key}=")[1].split(",")[0].split(" ")[0]
