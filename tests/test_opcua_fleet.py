"""A fleet of OPC UA servers, one machine each, all restarting at once (a power cut in the hall):
the engine opens the sessions a few at a time and every machine is back in its state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from asyncua import Server
from asyncua.server.binary_server_asyncio import BinaryServer

from collector.configfile import load_config_text
from collector.core.backoff import Opening
from collector.core.model import Output, State, StateChange
from collector.engine import Engine
from collector.sinks import NullSink
from tests.fixtures._ports import free_port, until
from tests.fixtures.opcua import (
    DI,
    MACHINERY,
    Build,
    OpcUaTestServer,
    add_machinery_machine,
    machinery_types,
    set_machinery_state,
)
from tests.opcua_helpers import VENDOR

SERVERS = 8
AT_ONCE = 2
EXECUTING, NOT_EXECUTING = 5006, 5007


class CountingOpening(Opening):
    """An ``Opening`` that remembers the most opens that ever ran at the same time."""

    most = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with super().slot():
            self.most = max(self.most, self.running)
            yield


def _endpoint(srv: OpcUaTestServer) -> BinaryServer:
    assert srv.server is not None and srv.server.bserver is not None
    return srv.server.bserver


async def _listen_again(srv: OpcUaTestServer) -> None:
    """The server's endpoint back on its port. (A new asyncua server would take seconds each to
    build its address space; the collector sees the same either way: connections refused, then
    a server without its sessions.) A client socket may hold the port for a moment."""
    for _ in range(100):
        try:
            await _endpoint(srv).start()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"port {srv.port} stayed in use")


def machine(name: str, item: int) -> Build:
    async def build(server: Server, ns: dict[str, int]) -> None:
        await machinery_types(server, ns)
        await add_machinery_machine(server, ns, VENDOR, name, item=item)
    return build


async def test_all_servers_restarting_at_once_are_reopened_in_turn(tmp_path: Path) -> None:
    servers = [OpcUaTestServer(port=free_port()) for _ in range(SERVERS)]
    names = [f"M{i:02d}" for i in range(SERVERS)]
    item = {name: EXECUTING for name in names}
    try:
        await asyncio.gather(*(srv.start([MACHINERY, DI, VENDOR], machine(name, item[name]))
                               for srv, name in zip(servers, names, strict=True)))
        sources = "\n".join(
            f'  - {{id: s{i:02d}, type: opcua, endpoint: "{srv.url}", discover: machinery, keepalive: 0.5, '
            f"publishing_interval: 0.05, timeout: 3}}" for i, srv in enumerate(servers))
        text = (f"site: {{plant: test}}\ndata_dir: {tmp_path / 'data'}\nhttp: {{enabled: false}}\n"
                f"sources:\n{sources}\n")
        engine = Engine(load_config_text(text), NullSink(), backoff_initial_s=0.1, backoff_cap_s=0.5, tick_s=0.05)
        opening = engine._opening = CountingOpening(AT_ONCE, patience_s=30)
        changes: list[StateChange] = []

        def collect(out: Sequence[Output]) -> None:
            changes.extend(o for o in out if isinstance(o, StateChange))

        def state(name: str) -> State | None:
            mine = [c for c in changes if c.machine.id == name]
            return mine[-1].state if mine else None

        engine.on_output = collect
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))

        def every(wanted: dict[str, State]) -> bool:
            if task.done():
                task.result()
            return all(state(n) == s for n, s in wanted.items())

        await until(lambda: every(dict.fromkeys(names, State.BUSY)), 60, "every machine busy",
                    explain=lambda: f"{[(n, state(n)) for n in names]}")
        assert opening.most == AT_ONCE  # the limit, reached: every source opened at the same time

        # Every server stops at once (its sessions and connections end); while they are down half
        # of the machines stop executing.
        storm_ns = time.time_ns()
        await asyncio.gather(*(_endpoint(srv).stop() for srv in servers))
        await until(lambda: every(dict.fromkeys(names, State.OFFLINE)), 30, "every machine offline")
        for srv, name in list(zip(servers, names, strict=True))[::2]:
            item[name] = NOT_EXECUTING
            await set_machinery_state(srv, VENDOR, name, item=NOT_EXECUTING)
        opening.most = 0
        await asyncio.gather(*(_listen_again(srv) for srv in servers))
        back = {n: State.IDLE if item[n] == NOT_EXECUTING else State.BUSY for n in names}
        await until(lambda: every(back), 60, "every machine back in its state",
                    explain=lambda: f"{[(n, state(n)) for n in names]}")
        assert opening.most <= AT_ONCE

        for name in names:
            mine = [c for c in changes if c.machine.id == name]
            # busy -> offline at the loss -> its state now (busy again counts as a change after offline)
            assert [c.state for c in mine] == [State.BUSY, State.OFFLINE, back[name]], (name, mine)
            assert mine[1].ts_ns >= storm_ns
            assert mine[2].ts_ns > mine[1].ts_ns
        stop.set()
        await asyncio.wait_for(task, 30)
        assert all(engine.stats.reconnects[f"s{i:02d}"] >= 1 for i in range(SERVERS))
    finally:
        await asyncio.gather(*(srv.stop() for srv in servers), return_exceptions=True)
