"""Shared bits of the OPC UA tests: source configs, bound machines, and a reader that collects
the adapter's events in the background so tests can wait on conditions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.base import AdapterContext, BoundMachine
from adapters.opcua.adapter import OpcUaAdapter
from adapters.opcua.config import OpcUaSource
from collector.core.badinput import BadInput
from collector.core.model import Event, MachineInfo, Reading
from tests.fixtures._ports import until

CNC = "urn:test:cnc"
DECOY = "urn:test:decoy"
VENDOR = "urn:test:vendor"


def source(url: str, **kw: Any) -> OpcUaSource:
    """A source with short periods so that tests run fast."""
    base: dict[str, Any] = {"id": "cell", "type": "opcua", "endpoint": url, "keepalive": 0.5,
                            "publishing_interval": 0.05, "timeout": 3, "rescan_interval": 0.5}
    base.update(kw)
    return OpcUaSource(**base)


def bound(machine: str, **signals: str) -> BoundMachine:
    return BoundMachine(MachineInfo(id=machine, plant="test"), dict(signals))


def cnc_signals(machine: str, form: str = "nsu") -> dict[str, str]:
    if form == "nsu":
        return {s: f"nsu={CNC};s={machine}.{n}" for s, n in
                (("execution", "Execution"), ("spindle_rpm", "SpindleSpeed"), ("alarm", "Alarm"))}
    return {s: f"/Objects/nsu={CNC};Machines/nsu={CNC};{machine}/nsu={CNC};{n}" for s, n in
            (("execution", "Execution"), ("spindle_rpm", "SpindleSpeed"), ("alarm", "Alarm"))}


class Reader:
    """Runs ``async for`` over an open adapter in a task and keeps every event (or the error)."""

    def __init__(self, adapter: OpcUaAdapter) -> None:
        self.adapter = adapter
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self.adapter:
                self.events.extend(batch.events)
        except Exception as exc:
            self.error = exc

    def readings(self, machine: str | None = None, signal: str | None = None) -> list[Reading]:
        return [e for e in self.events if isinstance(e, Reading) and (machine is None or e.machine == machine)
                and (signal is None or e.signal == signal)]

    def last(self, machine: str, signal: str) -> Reading | None:
        found = self.readings(machine, signal)
        return found[-1] if found else None

    async def wait(self, condition: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
        """Wait until ``condition`` holds; fail with ``what`` (and any adapter error) after ``within`` s."""
        await until(condition, within, what,
                    explain=lambda: f"adapter error: {self.error!r}; last events: {self.events[-5:]}")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def context(tmp_path: Path) -> AdapterContext:
    return AdapterContext(tmp_path / "data", BadInput())


class FreezableProxy:
    """A TCP proxy in front of a server that can go silent without closing anything: what a
    pulled cable or a hung server looks like to a client (no FIN, no RST, just nothing)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.frozen:  # frozen: swallow everything, close nothing
                writer.write(data)
                await writer.drain()

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
