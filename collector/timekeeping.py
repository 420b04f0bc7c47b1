"""Starting on a synchronized clock (``clock.require_sync``), and what the engine does when the
collector's clock steps (docs/DESIGN.md, "The collector's clock").

A gateway without a real-time clock boots at a guess (the build date, the last shutdown) and
steps when NTP first syncs. Waiting for the kernel's synchronized flag before any source is
read means nothing is written dated at the guess: an MQTT broker keeps a persistent session's
messages meanwhile, and OPC UA machines are read from their current values once we start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from collector.config import ClockSettings
from collector.core.clock import SyncProbe

log = logging.getLogger(__name__)

POLL_S = 1.0


class SyncWait:
    """Whether the collector waits for the clock, and why nothing is written meanwhile.

    ``reason`` is set while waiting (``/readyz`` answers 503 with it); ``unsynced_start`` once
    the wait ran out and the collector started anyway."""

    def __init__(self, settings: ClockSettings, probe: SyncProbe, environ: Mapping[str, str]) -> None:
        self.required = settings.sync_required(environ)
        self.timeout_s = settings.sync_timeout
        self.probe = probe
        self.reason: str | None = None
        self.unsynced_start = False

    def synchronized(self) -> bool | None:
        return self.probe.synchronized()

    async def wait(self, stop: asyncio.Event) -> bool:
        """Until the clock is synchronized or the wait runs out (True: go on), or ``stop`` is set
        (False: nothing was started, nothing is written)."""
        if not self.required or self.probe.synchronized() is not False:
            return True
        self.reason = (f"waiting for the system clock to be synchronized (NTP), up to {self.timeout_s:g}s: "
                       "no source is read and nothing is written meanwhile (clock.require_sync)")
        log.warning("%s", self.reason)
        deadline = time.monotonic() + self.timeout_s
        try:
            while self.probe.synchronized() is False:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.unsynced_start = True
                    log.warning("the system clock is still not synchronized after %gs: starting anyway; the times "
                                "written are the unsynchronized clock's until it syncs (then a step: see "
                                "collector_clock_steps_total)", self.timeout_s)
                    return True
                try:
                    async with asyncio.timeout(min(POLL_S, left)):
                        await stop.wait()
                    return False
                except TimeoutError:
                    pass
            log.info("the system clock is synchronized: starting")
            return True
        finally:
            self.reason = None

    def status(self) -> str | None:
        """A warning for ``/readyz`` while running on a clock that never synchronized."""
        if self.unsynced_start and self.probe.synchronized() is False:
            return "started without a synchronized clock (clock.sync_timeout ran out): times may be wrong"
        return None
