"""The operators' HTTP API: `/api/v1/machines` filters and `/api/v1/machines/{id}`; and the small
things a new user trips over (outbox under data_dir, output that ends its last line)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from collector.configfile import load_config, load_config_text
from collector.core.model import State
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink
from tests.fixtures._ports import until
from tests.fixtures._proc import COLLECTOR, collector_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


async def test_machine_filters_and_single_machine() -> None:
    """Test that state/line filters select exactly the machines the snapshot says, and {id} gets one."""
    loaded = load_config(EXAMPLE)
    loaded.config.http.port = 0
    engine = Engine(loaded, NullSink())
    stop = asyncio.Event()
    async with serve_status(engine, loaded.config.http) as port:
        runner = asyncio.create_task(engine.run(stop))
        await until(lambda: all(t.state is not State.OFFLINE for t in engine.trackers.values()), 20, "every state")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            turning = (await client.get("/api/v1/machines", params={"line": "turning"})).json()
            assert {m["machine"] for m in turning} == {"lathe-01", "lathe-02", "lathe-03", "lathe-04"}
            for state in ("busy", "idle"):
                for _ in range(20):  # bracketed by two equal unfiltered answers: no change in between
                    before = await states(client)
                    picked = (await client.get(f"/api/v1/machines?state={state}&line=turning&line=milling")).json()
                    if before == await states(client):
                        break
                expected = {mid for mid, (st, line) in before.items() if st == state and line in ("turning", "milling")}
                assert {m["machine"] for m in picked} == expected
            one = await client.get("/api/v1/machines/press-01")
            assert one.status_code == 200 and one.json()["machine"] == "press-01" and one.json()["cell"] == "cell-a"
            missing = await client.get("/api/v1/machines/nope%22x")
            assert missing.status_code == 404 and "nope\\\"x" in missing.text
            bad = await client.get("/api/v1/machines?colour=red")
            assert bad.status_code == 400 and "colour" in bad.json()["error"]
            assert (await client.post("/api/v1/reload")).status_code == 404  # no reload hook here
        stop.set()
        await runner


def test_outbox_lives_under_data_dir_unless_set() -> None:
    """Test that setting data_dir alone moves the outbox with it; an explicit path still wins."""
    base = Path("/etc/collector")
    moved = load_config_text("site: {plant: p}\nsources: []\ndata_dir: /var/lib/c\n", base_dir=base)
    assert moved.config.outbox.path == Path("/var/lib/c/outbox.sqlite")
    default = load_config_text("site: {plant: p}\nsources: []\n", base_dir=base)
    assert default.config.outbox.path == base / "data" / "outbox.sqlite"
    explicit = load_config_text("site: {plant: p}\nsources: []\noutbox: {path: o.sqlite}\n", base_dir=base)
    assert explicit.config.outbox.path == base / "o.sqlite"


@pytest.mark.integration  # runs the collector as a process
def test_validate_and_demo_end_their_last_line() -> None:
    """Test that `validate` and the demo's board (piped, not a terminal) end with a newline."""
    env = collector_env()
    validate = subprocess.run([*COLLECTOR, "validate", "-c", str(EXAMPLE)], env=env, capture_output=True, text=True,
                              timeout=60)
    assert validate.returncode == 0 and validate.stdout.endswith("\n")
    demo = subprocess.run([*COLLECTOR, "demo", "--speed", "50", "--for", "1"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert demo.returncode == 0
    assert "Ctrl-C stops\ndemo stopped:" in demo.stdout and demo.stdout.endswith("\n")


async def states(client: httpx.AsyncClient) -> dict[str, tuple[str, str]]:
    return {m["machine"]: (m["state"], m["line"]) for m in (await client.get("/api/v1/machines")).json()}


def test_machine_records_are_the_model_s() -> None:
    """Test that /api/v1/machines answers with records valid against the MachineStatus model's own
    JSON Schema (checked with jsonschema, software we did not write), with the fields docs/HTTP.md lists."""
    import jsonschema

    from collector.http import machines_json
    from collector.records import MachineStatus

    engine = Engine(load_config(EXAMPLE), NullSink())
    validator = jsonschema.Draft202012Validator(MachineStatus.model_json_schema())
    records = machines_json(engine)
    assert records and all(validator.is_valid(r) for r in records)
    assert list(records[0]) == ["machine", "plant", "line", "cell", "state", "since", "reason", "seconds",
                                "utilization", "availability", "idle_hours"]
    assert records[0]["state"] == "offline" and records[0]["utilization"] is None
    assert not validator.is_valid({**records[0], "state": "sleeping"})
