"""Reloading the config of a running collector: on SIGHUP, on ``POST /api/v1/reload``, or
from ``collector reload`` (which does one of the two).

The new file is loaded and validated exactly as at start-up; an invalid one is refused with its
errors logged (and returned to the HTTP caller) and the running config stays. A valid one is
handed to ``Engine.apply``: machines added or removed take effect, unchanged machines keep
their state, since-time and durations, and only the sources whose settings or machines changed
are reopened. Settings read once at start-up (``influx``, ``outputs``, ``outbox``, ``http``,
``data_dir``, ``shard``, ``tracker.interval``) keep their running values until the next restart;
the reload says so. Which machines are public is not one of them: an output filtered on
``public`` follows the new config at once, for the points already stored too.

What a new config changes is worked out below the engine (collector/reconfig.py), so the
engine and this module, which drives it, do not import each other.

The pid file ``<data_dir>/collector.pid`` lets ``collector reload`` find the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from collector.configfile import ConfigError, load_config
from collector.logs import mask_secrets, secrets_of
from collector.reconfig import describe, diff, keep_running_settings
from collector.sinks import Filtered

if TYPE_CHECKING:
    from collector.engine import Engine

log = logging.getLogger(__name__)

PID_FILE = "collector.pid"


class Reloader:
    """Reloads ``path`` into ``engine``, one reload at a time."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[tuple[bool, list[str]]]] = set()

    async def reload(self) -> tuple[bool, list[str]]:
        """(taken, lines): what changed, or the errors that refused the new config."""
        async with self._lock:
            try:
                new = load_config(self.path)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                log.error("reload refused, the running config stays: %s has %d error(s):\n  %s",
                          self.path, len(problems), "\n  ".join(problems))
                return False, problems
            mask_secrets(secrets_of(new.config))
            restart = keep_running_settings(self.engine.config, new.config)
            changes = await self.engine.apply(new)
            if isinstance(self.engine.sink, Filtered):  # outputs filtered on `public` follow the new config at once
                from collector.influx import public_machines

                self.engine.sink.set_public(public_machines(new.config))
            changes["needs_restart"] = restart
            lines = describe(changes)
            log.info("reloaded %s: %s", self.path, "; ".join(lines))
            return True, lines

    def on_sighup(self) -> None:
        log.info("received SIGHUP: reloading %s", self.path)
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def install(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_sighup)


@contextlib.contextmanager
def pid_file(data_dir: Path) -> Iterator[Path]:
    """``<data_dir>/collector.pid`` while the block runs."""
    path = data_dir / PID_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


def signal_running(data_dir: Path) -> int:
    """SIGHUP to the collector whose pid file is in ``data_dir``; returns its pid."""
    path = data_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        raise ProcessLookupError(f"no pid file {path}: is the collector running with this config?") from None
    except ValueError:
        raise ProcessLookupError(f"{path} does not hold a pid") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ProcessLookupError(f"no process {pid} (stale pid file {path})") from None
    return pid


__all__ = ["PID_FILE", "Reloader", "describe", "diff", "keep_running_settings", "pid_file", "signal_running"]
