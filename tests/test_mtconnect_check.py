"""`collector check` against an MTConnect source: the devices the agent describes, their signals and
states, over HTTP (the test agent) and over MQTT (cppagent's sink topics through mosquitto)."""

from __future__ import annotations

import asyncio
import contextlib
import io

import yaml

from collector.check import EXIT_OK, Checker
from collector.configfile import load_config_text
from tests.fixtures._mqtt import Publisher
from tests.fixtures._ports import until
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.mtconnect_agent import MtConnectAgent, vmc

T = 1_800_000_000_000_000_000


async def check(source: dict[str, object], settle: str) -> tuple[int, str, Checker]:
    text = yaml.safe_dump({"site": {"plant": "p"}, "sources": [{"id": "agent", "type": "mtconnect", **source}],
                           "machines": []})
    out = io.StringIO()
    checker = Checker(load_config_text(text), out)
    stop = asyncio.Event()

    async def watch() -> None:
        with contextlib.suppress(TimeoutError):
            await until(lambda: any(m.state is not None and m.state.value == settle for m in checker.machines.values()),
                        10, "a machine in the state")
            stop.set()

    watcher = asyncio.create_task(watch())
    code = await checker.run(15, stop)
    watcher.cancel()
    return code, out.getvalue(), checker


def agent_with_two_devices() -> MtConnectAgent:
    agent = MtConnectAgent([vmc(), vmc("Lathe-2", "lathe-uuid-2")])
    agent.script([("vmc_avail", "AVAILABLE", T), ("vmc_exec", "ACTIVE", T + 1),
                  ("lat_avail", "AVAILABLE", T), ("lat_exec", "READY", T + 1), ("lat_fmode", "SETUP", T + 2)])
    return agent


async def test_check_lists_the_agents_devices_and_their_states_over_http() -> None:
    """Test that check finds both devices of the agent (machines by uuid, profile mtconnect) and shows
    each one's state as the profile gives it: busy for ACTIVE, setup for FunctionalMode SETUP."""
    agent = agent_with_two_devices()
    with agent.serving() as url:
        code, output, checker = await check({"url": url, "interval": 0.1}, "setup")
    assert code == EXIT_OK, output
    assert "found machine mtc-vmc-01 on source agent (profile mtconnect)" in output
    assert checker.machines["mtc-vmc-01"].state is not None and checker.machines["mtc-vmc-01"].state.value == "busy"
    assert checker.machines["lathe-uuid-2"].reason == "setup"
    assert "mtc-vmc-01" in output.split("summary after", 1)[1] and "(discovered)" in output


async def test_check_reads_the_mqtt_sink_topics(mosquitto: Mosquitto) -> None:
    """Test that check reads the retained Probe and Current documents of cppagent's MQTT sink."""
    agent = agent_with_two_devices()
    pub = Publisher(mosquitto)
    try:
        obs, nxt = agent.current()
        for device in agent.devices:
            pub.publish(f"MTConnect/Probe/{device.uuid}", agent.probe_json(device), retain=True)
            pub.publish(f"MTConnect/Current/{device.uuid}", agent.streams_json(device, obs, nxt), retain=True)
        code, output, checker = await check(
            {"transport": "mqtt", "mqtt": {"host": mosquitto.host, "port": mosquitto.port}}, "setup")
    finally:
        pub.close()
    assert code == EXIT_OK, output
    assert {m for m, c in checker.machines.items() if c.state is not None} == {"mtc-vmc-01", "lathe-uuid-2"}
    assert checker.machines["lathe-uuid-2"].reason == "setup"
