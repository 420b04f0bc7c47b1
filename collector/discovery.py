"""What a source's discovery (a ``MachineFound``) means to the engine: a machine to start
tracking, or the identification of one it tracks already.

- A new machine is tracked as if it had been configured, with its profile's rules compiled once
  and shared by every machine discovered with it, and within its source's ``max_machines``
  [robust]: a source that announces machines without end (a bug, a hostile publisher) cannot
  grow the collector without bound.
- For a configured (or already found) machine the config wins; what the source says it is (its
  nameplate, its kind) fills what the config left empty, so a public machine's capacity record
  carries its Identification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from collector.config import Config
from collector.core.model import MachineFound
from collector.machines import ResolvedMachine, resolve_found
from collector.rules import RuleSet


def identified(machine: ResolvedMachine, found: MachineFound) -> ResolvedMachine | None:
    """``machine`` with the gaps of its identification filled from ``found``; None: nothing to fill."""
    info = machine.info
    nameplate = info.nameplate or tuple(sorted(found.nameplate.items()))
    kind = info.kind or found.kind
    if (nameplate, kind) == (info.nameplate, info.kind):
        return None
    info = dataclasses.replace(info, nameplate=nameplate, kind=kind)
    return dataclasses.replace(machine, bound=dataclasses.replace(machine.bound, info=info))


def admitted(config: Config, found: MachineFound, rules: dict[str, RuleSet], tracked: int, limit: int,
             report: Callable[[str, str], None]) -> ResolvedMachine | None:
    """The machine ``found`` describes, resolved to be tracked, or None (reported as bad input
    through ``report(kind, detail)``): its source has ``limit`` machines already (``tracked``),
    or its description does not resolve (an unknown profile, a bad signal)."""
    if tracked >= limit:  # [robust]
        report("too_many_machines", f"{found.machine!r} not tracked: the source has max_machines machines")
        return None
    try:
        return resolve_found(config, found, rules)  # [robust] rules shared per profile
    except ValueError as exc:
        report("discovered_machine", f"{found.machine}: {exc}")
        return None


__all__ = ["admitted", "identified"]
