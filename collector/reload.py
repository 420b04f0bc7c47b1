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

The pid file ``<data_dir>/collector.pid`` lets ``collector reload`` find the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from collector.config import Config
from collector.configfile import ConfigError, LoadedConfig, load_config
from collector.logs import mask_secrets, secrets_of
from collector.machines import ResolvedMachine
from collector.sinks import Filtered

if TYPE_CHECKING:
    from collector.engine import Engine

log = logging.getLogger(__name__)

PID_FILE = "collector.pid"
# Settings a running collector cannot switch: read once at start-up. A reload keeps the running
# values (so every tracker keeps one interval length) and says a restart is needed.
RESTART_ONLY = ("influx", "outputs", "outbox", "http", "data_dir", "shard", "tracker.interval")
KINDS = ("machines_added", "machines_removed", "machines_changed", "sources_added", "sources_removed",
         "sources_restarted", "needs_restart")


def _definition(m: ResolvedMachine) -> tuple[object, ...]:
    """What makes a machine the same machine: compiled rules compare by their text."""
    rules = tuple((r.state, r.when, r.reason) for r in m.rules.rules)
    return (m.source, m.profile, m.bound, rules, m.debounce_s, m.stale_after_s)


def diff(old: Config, running: Sequence[ResolvedMachine], new: LoadedConfig) -> dict[str, list[str]]:
    """What switching from ``old`` (with the machines the engine runs, discovered ones included)
    to ``new`` changes, by kind (``KINDS``)."""
    configured = {m.id for m in old.machines}
    before = {m.info.id: m for m in running}
    after = {m.info.id: m for m in new.machines}
    old_sources = {s.id: s for s in old.sources}
    new_sources = {s.id: s for s in new.config.sources}
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for mid, m in before.items():
        if mid not in after and (mid in configured or m.source not in new_sources):
            out["machines_removed"].append(mid)  # a discovered machine stays while its source does
    for mid, m in after.items():
        if mid not in before:
            out["machines_added"].append(mid)
        elif _definition(before[mid]) != _definition(m):
            out["machines_changed"].append(mid)
    out["sources_removed"] = [s for s in old_sources if s not in new_sources]
    out["sources_added"] = [s for s in new_sources if s not in old_sources]
    touched = {before[mid].source for mid in out["machines_removed"] + out["machines_changed"]}
    touched |= {after[mid].source for mid in out["machines_added"] + out["machines_changed"]}
    out["sources_restarted"] = [s for s in new_sources if s in old_sources
                                and (old_sources[s] != new_sources[s] or s in touched)]
    out["needs_restart"] = [path for path in RESTART_ONLY if _get(old, path) != _get(new.config, path)]
    return out


def _get(config: Config, path: str) -> object:
    value: object = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def keep_running_settings(running: Config, new: Config) -> list[str]:
    """Put the running values of the start-up-only settings into ``new``; returns the changed ones."""
    changed = []
    for path in RESTART_ONLY:
        if _get(running, path) != _get(new, path):
            changed.append(path)
            *parents, last = path.split(".")
            target: object = new
            for part in parents:
                target = getattr(target, part)
            setattr(target, last, _get(running, path))
    return changed


def describe(changes: dict[str, list[str]]) -> list[str]:
    lines = [f"{kind.replace('_', ' ')}: {', '.join(ids)}" for kind, ids in changes.items()
             if ids and kind != "needs_restart"]
    if changes.get("needs_restart"):
        lines.append(f"changed, but read at start-up only (restart to apply): {', '.join(changes['needs_restart'])}")
    return lines or ["no change"]


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
