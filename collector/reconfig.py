"""What switching a running collector to a new config changes (collector/reload.py drives the
switch, ``Engine.apply`` makes it): machines added, removed or changed, sources added, removed
or to reopen, and the settings read once at start-up that keep their running values until the
next restart.

Below the engine: it knows configs and resolved machines, not the engine or its trackers.
"""

from __future__ import annotations

from collections.abc import Sequence

from collector.config import Config
from collector.configfile import LoadedConfig
from collector.machines import ResolvedMachine

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


__all__ = ["KINDS", "RESTART_ONLY", "describe", "diff", "keep_running_settings"]
