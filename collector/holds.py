"""Holding a redelivering source's machines: evidence, not the wall clock, while it catches up.

A source that keeps a backlog for us (a persistent MQTT session, an MTConnect agent's buffer)
delivers after a restart or a lost connection what the machines did meanwhile. Until it has,
its machines' time moves only as far as their own readings; rolled forward by the wall clock
they would be made stale or offline for a time the backlog still describes.

- After a restart, every redelivering source is held while its adapter says it is catching up.
- A redelivering source that lost its connection is held until it is back, for ``max_s`` at
  most; past that its machines are offline from the moment the connection was lost.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from adapters.base import Adapter
from collector.core.model import Connectivity


class Holds:
    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.since: dict[str, float] = {}  # held sources: when the hold began (monotonic s)
        # Held sources that lost their connection: the offline event, applied if the hold runs
        # out before they are back.
        self.lost: dict[str, Connectivity] = {}

    def hold(self, source: str) -> None:
        """Hold a source from now (a start that resumed from the checkpoints)."""
        self.since[source] = time.monotonic()

    def lose(self, source: str, lost: Connectivity) -> None:
        """A held source's connection is lost: hold it (if not already) and keep ``lost`` for later."""
        self.since.setdefault(source, time.monotonic())
        self.lost.setdefault(source, lost)

    def back(self, source: str) -> None:
        """The source is connected again: its loss is not applied."""
        self.lost.pop(source, None)

    def drop(self, source: str) -> None:
        """The source is gone or reopened (a reload)."""
        self.since.pop(source, None)
        self.lost.pop(source, None)

    def held(self, adapters: Mapping[str, Adapter]) -> set[str]:
        """The sources held now: open and catching up, or closed and within ``max_s``."""
        held: set[str] = set()
        for source, since in list(self.since.items()):
            adapter = adapters.get(source)
            if adapter is not None:
                if adapter.catching_up():
                    held.add(source)
                    continue
            elif time.monotonic() - since < self.max_s:
                held.add(source)
                continue
            del self.since[source]
        return held

    def expired(self, held: set[str]) -> list[Connectivity]:
        """The losses to apply now: those of sources no longer held."""
        return [self.lost.pop(source) for source in [s for s in self.lost if s not in held]]

    def shift(self, delta_ns: int) -> None:
        """The collector's clock stepped: the kept losses are on its new line."""
        self.lost = {sid: dataclasses.replace(c, ts_ns=c.ts_ns + delta_ns) for sid, c in self.lost.items()}


__all__ = ["Holds"]
