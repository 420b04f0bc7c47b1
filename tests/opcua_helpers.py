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
from collector.badinput import BadInput
from collector.model import Event, MachineInfo, Reading

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
            async for event in self.adapter:
                self.events.append(event)
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
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}; adapter error: {self.error!r}; "
                                     f"last events: {self.events[-5:]}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def context(tmp_path: Path) -> AdapterContext:
    return AdapterContext(tmp_path / "data", BadInput())
