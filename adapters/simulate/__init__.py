"""The ``simulate`` source type."""

from adapters.base import AdapterFactory, AdapterSpec
from adapters.simulate.config import SimulateSource


def _load() -> AdapterFactory:
    from adapters.simulate.adapter import SimulateAdapter

    return SimulateAdapter


SPEC = AdapterSpec(type="simulate", config=SimulateSource, load=_load)
