"""Reload: machines added and removed take effect in a running collector, unchanged machines keep
their tracker (state, since-time, durations), and a broken config is refused and changes nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from collector.configfile import load_config
from collector.core.model import Output, State, StateChange
from collector.engine import Engine
from collector.reload import Reloader, diff
from collector.sinks import NullSink
from tests.fixtures._ports import free_port, until, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env


def plant(path: Path, machines: Sequence[str], *, profile: str = "cnc", http_port: int = 0,
          broken: bool = False) -> Path:
    """A simulated plant whose machines hold each phase for minutes (speed 0.01): nothing changes
    state by itself while a test runs, so what changes is the reload's doing."""
    rows = "\n".join(f"  - {{id: {m}, line: l1, source: sim, profile: {'nope' if broken else profile}}}"
                     for m in machines)
    path.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: sim, type: simulate, seed: 3, publish_every: 100ms, speed: 0.01}}
profiles:
  cnc:
    signals: {{execution: execution, spindle_rpm: spindle_rpm, alarm: alarm, mode: mode}}
    rules:
      - {{state: down, when: "alarm"}}
      - {{state: busy, when: "execution == 'ACTIVE'"}}
      - {{state: idle}}
  cnc2:
    extends: cnc
    rules:
      - {{state: busy, when: "execution == 'ACTIVE'", reason: "cutting"}}
      - {{state: idle}}
machines:
{rows}
http: {{port: {http_port}}}
data_dir: {path.parent / "data"}
""")
    return path


async def test_reload_adds_and_removes_machines_and_keeps_the_others(tmp_path: Path) -> None:
    """Test that a reload drops one machine (written offline), starts another, and leaves a third untouched."""
    cfg = plant(tmp_path / "c.yaml", ["keep", "gone"])
    outputs: list[Output] = []
    engine = Engine(load_config(cfg), NullSink(), on_output=lambda out: outputs.extend(out))
    stop = asyncio.Event()
    runner = asyncio.create_task(engine.run(stop))
    await until(lambda: all(t.state is not State.OFFLINE for t in engine.trackers.values()), 20, "both machines seen")
    kept = engine.trackers["keep"]
    before = kept.status(engine.clock())

    plant(cfg, ["keep", "new"])
    taken, lines = await Reloader(engine, cfg).reload()
    assert taken, lines
    assert "machines added: new" in lines and "machines removed: gone" in lines
    assert set(engine.trackers) == {"keep", "new"}
    assert engine.trackers["keep"] is kept  # the same tracker: state, since and durations carry on
    after = kept.status(engine.clock())
    assert (after.state, after.since_ns, after.reason) == (before.state, before.since_ns, before.reason)
    assert after.totals_ns[after.state] >= before.totals_ns[before.state]
    gone = [o for o in outputs if isinstance(o, StateChange) and o.machine.id == "gone"]
    assert gone[-1].state is State.OFFLINE and gone[-1].reason == "removed from the config"
    await until(lambda: engine.trackers["new"].state is not State.OFFLINE, 20, "the new machine's first state")

    text = cfg.read_text()
    cfg.write_text(text + "tracker: {interval: 5s, debounce: 1s}\n")  # interval: start-up only; debounce: now
    taken, lines = await Reloader(engine, cfg).reload()
    assert taken and lines[-1] == "changed, but read at start-up only (restart to apply): tracker.interval"
    assert engine.config.tracker.interval == 60.0 and engine.config.tracker.debounce == 1.0
    assert {t.interval_ns for t in engine.trackers.values()} == {60 * 10**9}  # one interval length for all
    assert engine.trackers["keep"].debounce_ns == 10**9
    cfg.write_text(text)

    running = dict(engine.trackers)
    plant(cfg, ["keep", "new", "third"], broken=True)
    taken, errors = await Reloader(engine, cfg).reload()
    assert not taken and any("machines[0].profile: unknown profile 'nope'" in e for e in errors)
    assert engine.trackers == running  # the very same trackers, nothing added
    stop.set()
    await runner


async def test_changed_machine_carries_its_state_over(tmp_path: Path) -> None:
    """Test that a machine whose profile changed keeps its state and since-time, with the new rules after."""
    cfg = plant(tmp_path / "c.yaml", ["m1"])
    engine = Engine(load_config(cfg), NullSink())
    stop = asyncio.Event()
    runner = asyncio.create_task(engine.run(stop))
    await until(lambda: engine.trackers["m1"].state is not State.OFFLINE, 20, "a first state")
    before = engine.trackers["m1"].status(engine.clock())
    plant(cfg, ["m1"], profile="cnc2")
    changes = diff(engine.config, list(engine.machines.values()), load_config(cfg))
    assert changes["machines_changed"] == ["m1"] and changes["sources_restarted"] == ["sim"]
    assert (await Reloader(engine, cfg).reload())[0]
    after = engine.trackers["m1"].status(engine.clock())
    assert (after.state, after.since_ns) == (before.state, before.since_ns)
    # the next readings are judged by the new profile's rules
    assert engine.machines["m1"].profile == "cnc2"
    assert [r.reason for r in engine.trackers["m1"].rules.rules] == ["cutting", None]
    stop.set()
    await runner


@pytest.mark.integration  # starts the collector or an outside tool
def test_sighup_and_reload_command(tmp_path: Path) -> None:
    """Test `collector reload` against a running `collector run`: over HTTP, with SIGHUP, and refused when broken."""
    port = free_port()
    cfg = plant(tmp_path / "c.yaml", ["a", "b"], http_port=port)
    env = collector_env()
    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(cfg), "--print"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    threads = [threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)  # type: ignore[misc]
               for s, d in ((proc.stdout, out), (proc.stderr, err))]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: (tmp_path / "data" / "collector.pid").exists(), 20, "the pid file")
        assert int((tmp_path / "data" / "collector.pid").read_text()) == proc.pid
        wait_for(lambda: _machines(port) == {"a", "b"}, 20, "both machines served")

        plant(cfg, ["a", "c"], http_port=port)
        done = subprocess.run([*COLLECTOR, "reload", "-c", str(cfg)], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "machines added: c" in done.stdout and "machines removed: b" in done.stdout
        assert _machines(port) == {"a", "c"}
        wait_for(lambda: any("machine=b" in ln and "removed from the config" in ln for ln in out), 10, "b offline")

        plant(cfg, ["a"], http_port=port)
        sig = subprocess.run([*COLLECTOR, "reload", "-c", str(cfg), "--signal"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert sig.returncode == 0 and f"pid {proc.pid}" in sig.stdout
        wait_for(lambda: _machines(port) == {"a"}, 20, "c removed after SIGHUP")

        plant(cfg, ["a", "d"], http_port=port, broken=True)
        refused = subprocess.run([*COLLECTOR, "reload", "-c", str(cfg)], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 2 and "unknown profile 'nope'" in refused.stderr
        proc.send_signal(signal.SIGHUP)  # the running collector refuses it too
        wait_for(lambda: any("reload refused, the running config stays" in ln for ln in err), 20, "refusal logged")
        assert _machines(port) == {"a"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not (tmp_path / "data" / "collector.pid").exists()


def _machines(port: int) -> set[str]:
    reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/machines", timeout=5)
    return {m["machine"] for m in json.loads(reply.text)}
