"""Capped exponential backoff with jitter, for every retry loop (source reconnects, InfluxDB
writes): the n-th delay is drawn from [c/2, c] with c = min(cap, initial * 2**n), so retries
from many gateways spread out instead of arriving together."""

from __future__ import annotations

import random
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
