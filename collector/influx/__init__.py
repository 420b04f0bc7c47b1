"""Writing to InfluxDB: the durable outbox and the v1/v2 writers behind it.

``make_sink(config)`` is the one entry point the engine uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.config import Config
    from collector.influx.sink import OutboxSink


def make_sink(config: Config) -> OutboxSink:
    """The outbox in front of the configured InfluxDB writer."""
    from collector.influx.sink import OutboxSink

    if config.influx is None:
        raise ValueError("no `influx:` section in the config")
    return OutboxSink(config.influx, config.outbox)
