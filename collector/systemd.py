"""systemd ``Type=notify``: READY=1 once the collector is serving, WATCHDOG=1 while its event
loop runs (a loop that hangs stops the pings and systemd restarts the service), STOPPING=1 on
the way out. Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing."""

from __future__ import annotations

import asyncio
import logging
import os

import sdnotify

log = logging.getLogger(__name__)


class Systemd:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None

    def notify(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Half the unit's ``WatchdogSec`` (systemd's advice), or None when the watchdog is off
        or meant for another process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not self.enabled or not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(int(usec) / 2_000_000, 0.05)
        except ValueError:
            return None

    async def watchdog(self) -> None:
        interval = self.watchdog_interval()
        if interval is None:
            return
        log.info("systemd watchdog: pinging every %.1fs", interval)
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
