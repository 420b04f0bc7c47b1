"""The plant that ``collector simulate`` publishes: the machines of a config's ``simulate``
source, driven by the very behaviour of ``type: simulate`` (adapters/simulate: same seed, same
work cycles, setups, alarms and switch-offs), with every simulated quantity in each message so
that any mapping a plant engineer writes finds its signal."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from adapters.base import AdapterContext, BoundMachine
from adapters.simulate.adapter import SimulateAdapter
from adapters.simulate.config import SimulateSource
from collector.configfile import LoadedConfig
from collector.core.badinput import BadInput
from collector.core.model import MachineInfo, Sample

# Every quantity the simulated machines have (see adapters/simulate/adapter.py).
QUANTITIES = ("execution", "spindle_rpm", "alarm", "mode", "packml_state", "item_state", "operation_mode")


@dataclass(frozen=True, slots=True)
class Plant:
    name: str
    source: SimulateSource
    machines: tuple[MachineInfo, ...]


def plant_from_config(loaded: LoadedConfig, *, seed: int | None = None, speed: float | None = None,
                      publish_every: float | None = None) -> Plant:
    """The machines of the config's first ``simulate`` source; options override its settings."""
    sources = [s for s in loaded.config.sources if isinstance(s, SimulateSource)]
    if not sources:
        raise ValueError(f"{loaded.path}: no `type: simulate` source to publish")
    source = sources[0]
    updates: dict[str, object] = {}
    if seed is not None:
        updates["seed"] = seed
    if speed is not None:
        updates["speed"] = speed
    if publish_every is not None:
        updates["publish_every"] = publish_every
    source = source.model_copy(update=updates)
    machines = tuple(m.info for m in loaded.machines if m.source == source.id)
    return Plant(loaded.config.site.plant, source, machines)


async def samples(plant: Plant) -> AsyncIterator[Sample]:
    """Every machine's quantities, as the simulated plant publishes them, until cancelled. A
    switched-off machine is silent, as with ``type: simulate``."""
    bound = [BoundMachine(info, {q: q for q in QUANTITIES}) for info in plant.machines]
    context = AdapterContext(Path(tempfile.gettempdir()), BadInput())
    async with SimulateAdapter(plant.source, bound, context) as adapter:
        async for batch in adapter:
            for event in batch.events:
                if isinstance(event, Sample):
                    yield event
