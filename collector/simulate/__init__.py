"""``collector simulate``: the demo plant published for real, for trying a config (and the
compose stack, and the tests) without plant equipment.

    plant = plant_from_config(load_config("config/example.yaml"))
    await simulate(plant, stop, mqtt=("127.0.0.1", 1883), sparkplug=True, opcua="opc.tcp://0.0.0.0:4840")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from collector.simulate.mqtt import DEFAULT_TOPIC, MqttPublisher
from collector.simulate.opcua import OpcUaPlant
from collector.simulate.plant import Plant, plant_from_config, samples

log = logging.getLogger(__name__)

SILENT_AFTER = 3  # publish periods without a sample: the machine was switched off


async def simulate(plant: Plant, stop: asyncio.Event, *, mqtt: tuple[str, int] | None = None,
                   json_payloads: bool = True, sparkplug: bool = False, topic: str = DEFAULT_TOPIC,
                   opcua: str | None = None, ready: asyncio.Event | None = None) -> int:
    """Publish until ``stop`` is set; returns how many samples were published."""
    publisher = None if mqtt is None else MqttPublisher(plant, *mqtt, topic=topic, json_payloads=json_payloads,
                                                        sparkplug=sparkplug)
    server = None if opcua is None else OpcUaPlant(plant, opcua)
    published = 0
    last_seen: dict[str, float] = {}  # machine -> monotonic time of its last sample
    off: set[str] = set()

    async def pump() -> None:
        nonlocal published
        async for sample in samples(plant):
            last_seen[sample.machine] = time.monotonic()
            off.discard(sample.machine)
            if publisher is not None:
                publisher.publish(sample)
            if server is not None:
                await server.publish(sample)
            published += 1

    async def silence() -> None:
        """Switched-off machines stop publishing; the OPC UA server says so (see its module)."""
        every = plant.source.publish_every
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for machine, seen in list(last_seen.items()):
                if machine not in off and now - seen > SILENT_AFTER * every:
                    off.add(machine)
                    if server is not None:
                        await server.switched_off(machine, time.time_ns())

    try:
        if server is not None:
            await server.start()
        if publisher is not None:
            await publisher.start()
        if ready is not None:
            ready.set()
        runner = asyncio.create_task(pump(), name="simulate")
        watcher = asyncio.create_task(silence(), name="simulate:silence")
        stopper = asyncio.create_task(stop.wait(), name="simulate:stop")
        await asyncio.wait([runner, watcher, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in (runner, watcher, stopper):
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
