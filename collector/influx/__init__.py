"""Writing to InfluxDB-compatible outputs: the durable outbox and the v1/v2/VictoriaMetrics
writers behind it.

``make_sink(config)`` is the one entry point the engine uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.config import Config
    from collector.influx.sink import OutboxSink


def make_sink(config: Config) -> OutboxSink:
    """The outbox in front of the configured outputs (``outputs:``, or ``influx:`` as one)."""
    from collector.influx.sink import OutboxSink

    outputs = config.output_list()
    if not outputs:
        raise ValueError("no `influx:` or `outputs:` section in the config")
    return OutboxSink(outputs, config.outbox, public=public_machines(config))


def public_machines(config: Config) -> list[str]:
    """The machines the config marks ``public: true``: the only ones an output filtered on
    ``public`` sends."""
    return [m.id for m in config.machines if m.public]
