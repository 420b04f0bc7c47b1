"""``collector demo --plants N``: the platform side in one process. N simulated plants (the demo
plant under N names, each with its own seed, so its own week and cycles), each a collector with
its simulated history and its capacity feed; a mosquitto started for the demo in a temp dir as
the platform's broker; and ``collector exchange``'s index, subscriber and page on it.

Everything is the real code: each plant is an ``Engine`` with a ``Capacity`` and the MQTT
``Feed`` publishing retained offers; the exchange subscribes to them through the broker like a
platform's would. Only the broker is an outside program (Debian's ``mosquitto``): without it the
demo says so and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from adapters.simulate.config import SimulateSource
from collector.capacity.feed import run_feed
from collector.capacity.service import Capacity
from collector.configfile import LoadedConfig
from collector.core.model import now_ns
from collector.engine import Engine
from collector.http import serve_status
from collector.sinks import NullSink

log = logging.getLogger(__name__)
MOSQUITTO = ("mosquitto", "/usr/sbin/mosquitto")
EXCHANGE_PORT = 9280


def find_mosquitto() -> str | None:
    for name in MOSQUITTO:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _mosquitto(binary: str, workdir: Path) -> Iterator[int]:
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"user {pwd.getpwuid(os.geteuid()).pw_name}\nlistener {port} 127.0.0.1\n"
                    "allow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on port {port}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def plant(loaded: LoadedConfig, n: int, broker_port: int) -> LoadedConfig:
    """The demo plant as plant ``n`` (1-based): its own name and seed, its feed on the broker, its
    status server on a free port."""
    name = f"{loaded.config.site.plant}-{n}"
    config = loaded.config.model_copy(deep=True)
    config.site = config.site.model_copy(update={"plant": name, "name": f"Demo plant {n} (simulated)"})
    config.sources = [s.model_copy(update={"seed": (s.seed or 0) + 1000 * n}) if isinstance(s, SimulateSource) else s
                      for s in config.sources]
    feed = config.capacity.feed.model_copy(update={"enabled": True, "host": "127.0.0.1", "port": broker_port,
                                                   "broker": None, "period": 10.0})
    config.capacity = config.capacity.model_copy(update={"feed": feed})
    config.http = config.http.model_copy(update={"port": 0})
    machines = [dataclasses.replace(m, bound=dataclasses.replace(m.bound, info=dataclasses.replace(m.info, plant=name)))
                for m in loaded.machines]
    return dataclasses.replace(loaded, config=config, machines=machines)


async def run_platform(loaded: LoadedConfig, plants: int, *, history_weeks: float,
                       install_stop: Callable[[asyncio.Event, float | None], None], duration: float | None) -> int:
    binary = find_mosquitto()
    if binary is None:
        print("collector demo --plants needs an MQTT broker for the plants' offers: mosquitto is not installed "
              "(Debian: apt-get install mosquitto; it is looked up on PATH and in /usr/sbin)", flush=True)
        return 2
    from collector.exchange.app import Exchange, build_app
    from collector.exchange.index import Index
    from collector.exchange.subscriber import BrokerSettings, Subscriber
    from collector.httpserver import serve as serve_http
    from collector.simulate.history import simulate_history

    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="collector-demo-") as tmp, _mosquitto(binary, Path(tmp)) as port:
        print(f"platform broker: mosquitto on mqtt://127.0.0.1:{port} (a temp dir, removed at the end)", flush=True)
        sites = [plant(loaded, n, port) for n in range(1, plants + 1)]
        async with contextlib.AsyncExitStack() as stack:
            prefix = sites[0].config.capacity.feed.topic_prefix
            exchange = Exchange(Index(prefix))
            subscriber = Subscriber(exchange, BrokerSettings("127.0.0.1", port, prefix), asyncio.get_running_loop())
            subscriber.start()
            stack.callback(subscriber.stop)
            try:
                http_port = await stack.enter_async_context(serve_http(build_app(exchange), "127.0.0.1",
                                                                       EXCHANGE_PORT))
            except OSError:
                http_port = await stack.enter_async_context(serve_http(build_app(exchange), "127.0.0.1", 0))
            runners = []
            for site in sites:
                capacity = Capacity(site.config.capacity, None)
                stack.callback(capacity.close)
                if history_weeks > 0:
                    stats = simulate_history(site, capacity, end_ns=now_ns(), weeks=history_weeks)
                    print(f"{site.config.site.plant}: {history_weeks:g} week(s) of simulated history in "
                          f"{stats.seconds:.1f} s", flush=True)
                engine = Engine(site, NullSink(), on_output=capacity.on_output)
                capacity.bind(engine)
                status_port = await stack.enter_async_context(serve_status(engine, site.config.http, capacity=capacity))
                await stack.enter_async_context(run_feed(capacity, site.config))
                print(f"{site.config.site.plant}: capacity page http://127.0.0.1:{status_port}/capacity", flush=True)
                runners.append(asyncio.create_task(engine.run(stop), name=f"plant-{site.config.site.plant}"))
            print(f"exchange (every plant's public machines): http://127.0.0.1:{http_port}/  "
                  f"· API http://127.0.0.1:{http_port}/api/v1/offers  · Ctrl-C stops", flush=True)
            install_stop(stop, duration)
            await asyncio.gather(*runners)
    print(f"demo stopped: {plants} plants", flush=True)
    return 0
