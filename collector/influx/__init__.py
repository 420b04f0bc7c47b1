"""Writing to InfluxDB: the durable outbox and the v1/v2 writers behind it.

``make_sink(config)`` is the one entry point the engine uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.config import Config
    from collector.sinks import Sink


def make_sink(config: Config) -> Sink:
    """The outbox in front of the configured InfluxDB writer."""
    raise NotImplementedError("the InfluxDB outbox is not built yet; use `collector run --print`")
