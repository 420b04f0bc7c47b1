"""Pacing for retry loops.

- ``Backoff``: capped exponential backoff with jitter, for every retry loop (source reconnects,
  InfluxDB writes): the n-th delay is drawn from [c/2, c] with c = min(cap, initial * 2**n), so
  retries from many gateways spread out instead of arriving together.
- ``Opening``: the sources of one collector open (connect, browse, subscribe) a few at a time.
  After a plant-wide power cut every source fails and retries at once; 200 OPC UA sessions
  opened together on one event loop each take so long that they time out and start over.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 0.5
    cap_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2 ** self.attempt)
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Opening:
    """At most ``at_once`` opens at the same time; the others wait their turn (first come,
    first served). An open still running after ``patience_s`` stops counting: a switched-off
    machine holds its connect until the time-out and must not hold up the machines that answer.

        async with opening.slot():
            await adapter.__aenter__()
    """

    def __init__(self, at_once: int, patience_s: float) -> None:
        if at_once < 1:
            raise ValueError("at_once must be at least 1")
        self.at_once = at_once
        self.patience_s = patience_s
        self._free = asyncio.Semaphore(at_once)
        self.waiting = 0  # opens waiting for a slot
        self.running = 0  # opens holding a slot

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.running -= 1
                self._free.release()

        timer = asyncio.get_running_loop().call_later(self.patience_s, release)
        try:
            yield
        finally:
            timer.cancel()
            release()
