"""``collector simulate``: the demo plant published for real, for trying a config (and the
compose stack, and the tests) without plant equipment.

    plant = plant_from_config(load_config("config/example.yaml"))
    await simulate(plant, stop, mqtt=("127.0.0.1", 1883), sparkplug=True, opcua="opc.tcp://0.0.0.0:4840")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from collector.simulate.mqtt import DEFAULT_TOPIC, MqttPublisher
from collector.simulate.opcua import OpcUaPlant
from collector.simulate.plant import Plant, plant_from_config, samples

log = logging.getLogger(__name__)


async def simulate(plant: Plant, stop: asyncio.Event, *, mqtt: tuple[str, int] | None = None,
                   json_payloads: bool = True, sparkplug: bool = False, topic: str = DEFAULT_TOPIC,
                   opcua: str | None = None, ready: asyncio.Event | None = None) -> int:
    """Publish until ``stop`` is set; returns how many samples were published."""
    publisher = None if mqtt is None else MqttPublisher(plant, *mqtt, topic=topic, json_payloads=json_payloads,
                                                        sparkplug=sparkplug)
    server = None if opcua is None else OpcUaPlant(plant, opcua)
    published = 0

    async def pump() -> None:
        nonlocal published
        async for sample in samples(plant):
            if publisher is not None:
                publisher.publish(sample)
            if server is not None:
                await server.publish(sample)
            published += 1

    try:
        if server is not None:
            await server.start()
        if publisher is not None:
            await publisher.start()
        if ready is not None:
            ready.set()
        runner = asyncio.create_task(pump(), name="simulate")
        stopper = asyncio.create_task(stop.wait(), name="simulate:stop")
        await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in (runner, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        if publisher is not None:
            publisher.close()
        if server is not None:
            await server.stop()
    log.info("simulate: stopped after %d sample(s)", published)
    return published


__all__ = ["DEFAULT_TOPIC", "Plant", "plant_from_config", "simulate"]
