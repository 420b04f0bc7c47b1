"""Resolving machines: a machine entry plus its profile chain -> what its source reads (signal
addresses) and how its state is decided (rules, debounce, staleness)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.base import BoundMachine
from collector.capacity_settings import Capability
from collector.config import Config, Machine, Profile, Rule
from collector.core.errors import CollectorError
from collector.core.model import MachineFound, MachineInfo
from collector.profiles import BUILTIN
from collector.rules import CompiledRule, RuleError, RuleSet, compile_rule


class ResolveError(CollectorError, ValueError):
    """A machine cannot be resolved; ``path`` is the dotted config path of the culprit."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class ResolvedMachine:
    source: str
    profile: str
    bound: BoundMachine
    rules: RuleSet
    debounce_s: float
    stale_after_s: float | None
    # What the machine offers (profile chain, then the machine's own keys): the capacity feed's.
    capabilities: dict[str, Capability] = field(default_factory=dict)

    @property
    def info(self) -> MachineInfo:
        return self.bound.info


def _chain(config: Config, name: str) -> list[tuple[str, Profile | None]]:
    """The profile and its ancestors, most specific first; a built-in ends the chain."""
    chain: list[tuple[str, Profile | None]] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise ResolveError(f"profiles.{current}.extends", f"profile cycle: {' -> '.join([*seen, current])}")
        seen.add(current)
        if current in config.profiles:
            profile = config.profiles[current]
            chain.append((current, profile))
            current = profile.extends
        elif current in BUILTIN:
            chain.append((current, None))
            current = None
        else:
            raise ResolveError(f"profiles.{name}", f"unknown profile {current!r}")
    return chain


def compile_rules(config: Config, profile: str) -> RuleSet:
    for name, prof in _chain(config, profile):
        if prof is None:
            return RuleSet([compile_rule(r.state, r.when, r.reason) for r in BUILTIN[name]])
        if prof.rules is not None:
            return RuleSet([_compile(name, i, r) for i, r in enumerate(prof.rules)])
    raise ResolveError(f"profiles.{profile}.rules", f"profile {profile!r} has no rules and extends none that has")


def _compile(profile: str, index: int, rule: Rule) -> CompiledRule:
    try:
        return compile_rule(rule.state, rule.when, rule.reason)
    except RuleError as exc:
        raise ResolveError(f"profiles.{profile}.rules.{index}.when", str(exc)) from exc


def _expand(template: str, values: Mapping[str, str], path: str) -> str:
    try:
        return string.Formatter().vformat(template, (), values)
    except (KeyError, IndexError) as exc:
        raise ResolveError(path, f"template {template!r} needs {exc} but the machine has no such "
                                 f"var (known: {', '.join(sorted(values))})") from exc
    except ValueError as exc:
        raise ResolveError(path, f"bad template {template!r}: {exc}") from exc


def resolve_machine(config: Config, machine: Machine, index: int,
                    rules: dict[str, RuleSet] | None = None) -> ResolvedMachine:
    """``rules``: compiled rule sets by profile, shared by the machines of a profile (a RuleSet
    keeps no per-machine state; compiling it per machine cost ~10 KB each, 50 MB at 5,000)."""
    chain = _chain(config, machine.profile)
    info = MachineInfo(id=machine.id, plant=machine.plant or config.site.plant, line=machine.line,
                       cell=machine.cell, name=machine.name or machine.id, kind=machine.kind,
                       public=machine.public, nameplate=tuple(sorted(machine.nameplate.items())))
    values = {"id": machine.id, "name": info.name, "line": machine.line, "cell": machine.cell,
              "plant": info.plant, **machine.vars}
    signals: dict[str, str] = {}
    debounce, stale = machine.debounce, machine.stale_after
    for name, prof in reversed(chain):  # ancestors first, so children override
        if prof is None:
            continue
        for signal, template in prof.signals.items():
            signals[signal] = _expand(template, values, f"machines.{index}.profile ({name}.signals.{signal})")
    capabilities: dict[str, Capability] = {}
    for _, prof in reversed(chain):
        if prof is not None:
            capabilities.update(prof.capabilities)
    capabilities.update(machine.capabilities)
    for _, prof in chain:  # most specific setting wins
        if prof is not None:
            debounce = prof.debounce if debounce is None else debounce
            stale = prof.stale_after if stale is None else stale
    for signal, template in machine.signals.items():
        signals[signal] = _expand(template, values, f"machines.{index}.signals.{signal}")
    return ResolvedMachine(
        source=machine.source, profile=machine.profile, bound=BoundMachine(info, signals),
        rules=_shared_rules(config, machine.profile, rules),
        debounce_s=config.tracker.debounce if debounce is None else debounce,
        stale_after_s=config.tracker.stale_after if stale is None else stale, capabilities=capabilities)


def _shared_rules(config: Config, profile: str, cache: dict[str, RuleSet] | None) -> RuleSet:
    if cache is None:
        return compile_rules(config, profile)
    rules = cache.get(profile)
    if rules is None:
        rules = cache[profile] = compile_rules(config, profile)
    return rules


def resolve_all(config: Config) -> list[ResolvedMachine]:
    rules: dict[str, RuleSet] = {}
    return [resolve_machine(config, m, i, rules) for i, m in enumerate(config.machines)]


def resolve_found(config: Config, found: MachineFound, rules: dict[str, RuleSet] | None = None) -> ResolvedMachine:
    """A machine an adapter discovered, tracked as if it had been configured."""
    machine = Machine(id=found.machine, name=found.name, plant=found.plant or None, line=found.line, cell=found.cell,
                      source=found.source, profile=found.profile, signals=found.signals, kind=found.kind,
                      nameplate=found.nameplate)
    return resolve_machine(config, machine, -1, rules)
