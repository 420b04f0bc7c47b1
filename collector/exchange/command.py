"""``collector exchange``: subscribe to every plant's offers on the platform's broker and serve
them (the Starlette app on the collector's HTTP server, uvicorn with its limits set)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.exchange.app import Exchange
    from collector.exchange.subscriber import BrokerSettings

log = logging.getLogger(__name__)
PASSWORD_ENV = "EXCHANGE_MQTT_PASSWORD"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _duration(text: str) -> float:
    from collector.core.durations import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ex = sub.add_parser(
        "exchange", help="platform side: gather every plant's capacity offers from a broker and serve them",
        description="Subscribe to <prefix>/+/+ on the platform's MQTT broker (every plant's retained capacity "
                    "offers and feed status), check each offer against the published JSON Schema, and serve the "
                    "offers API (/api/v1/offers), the demand search (/api/v1/search), the cross-plant page (/), "
                    "/metrics and /healthz. Keeps no state: a restart rebuilds everything from the retained "
                    "offers. See docs/EXCHANGE.md.")
    ex.add_argument("--broker", type=_host_port, required=True, metavar="HOST:PORT", help="the platform's broker")
    ex.add_argument("--prefix", default="capacity", help="the feeds' topic prefix (default: capacity)")
    ex.add_argument("--username", default=None, help="MQTT user (read-only on the broker: see deploy/mosquitto)")
    ex.add_argument("--password-file", type=Path, default=None,
                    help=f"file holding the MQTT password (or set ${PASSWORD_ENV})")
    ex.add_argument("--ca-file", default=None, help="TLS: the broker's CA (PEM); turns TLS on")
    ex.add_argument("--cert-file", default=None, help="TLS: client certificate (PEM), if the broker wants one")
    ex.add_argument("--key-file", default=None, help="TLS: the client certificate's key (PEM)")
    ex.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], default="5", help="MQTT version (default: 5)")
    ex.add_argument("--listen", type=_host_port, default=("127.0.0.1", 9280), metavar="HOST:PORT",
                    help="serve HTTP here (default: 127.0.0.1:9280)")
    ex.add_argument("--stale-after", type=_duration, default=600.0, metavar="DURATION",
                    help="an offer made longer ago than this is never free now (default: 10m; the feed "
                         "republishes every 2m by default)")
    ex.add_argument("--history-url", default=None, metavar="URL",
                    help="an InfluxDB 1.x /query URL (with db=) holding the plants' public roll-ups; linked in each "
                         "machine's Asset Administration Shell (default: none)")
    ex.set_defaults(func=cmd_exchange)


def cmd_exchange(args: argparse.Namespace) -> int:
    from collector.exchange.subscriber import BrokerSettings

    password = os.environ.get(PASSWORD_ENV)
    if args.password_file is not None:
        password = args.password_file.read_text(encoding="utf-8").strip()
    settings = BrokerSettings(host=args.broker[0], port=args.broker[1], prefix=args.prefix.strip("/"),
                              username=args.username, password=password, ca_file=args.ca_file,
                              cert_file=args.cert_file, key_file=args.key_file, protocol=args.mqtt_protocol)
    asyncio.run(serve(settings, args.listen, args.stale_after, args.history_url))
    return 0


async def serve(settings: BrokerSettings, listen: tuple[str, int], stale_after_s: float,
                history_url: str | None = None) -> None:
    """Until SIGINT or SIGTERM: the subscriber feeding the index, and the app on the collector's own
    HTTP server (collector/httpserver.py: the same limits on connections, request heads, bodies and
    the time to send a request as the collector's)."""
    import signal

    from collector.exchange.app import Exchange, build_app
    from collector.exchange.index import Index
    from collector.exchange.subscriber import Subscriber
    from collector.httpserver import serve as serve_http

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exchange = Exchange(Index(settings.prefix), stale_after_s, history_url=history_url)
    subscriber = Subscriber(exchange, settings, loop)
    subscriber.start()
    freezer = asyncio.create_task(freeze_settled(exchange), name="gc-freeze")
    try:
        async with serve_http(build_app(exchange), listen[0], listen[1]) as port:
            log.info("exchange on http://%s:%d/ (offers from mqtt://%s:%d/%s/+/+)", listen[0], port, settings.host,
                     settings.port, settings.prefix)
            await stop.wait()
    finally:
        freezer.cancel()
        await asyncio.to_thread(subscriber.stop)


FREEZE_AFTER = 1000  # messages since the last freeze


async def freeze_settled(exchange: Exchange) -> None:
    """Once the retained offers are in (the number of offers has not changed for a second after at
    least FREEZE_AFTER messages), move what exists into the garbage collector's permanent
    generation: the index of 20,000 offers is some 300,000 objects that a full collection would
    walk again and again, a pause in whichever request it falls (bench/exchange.py: searches'
    99th percentile). Updates after it are new objects and collected as usual. The order of the
    offers is sorted then too, not in the first search after the flood."""
    import gc

    frozen_at, size = 0, -1
    while True:
        await asyncio.sleep(1.0)
        index = exchange.index
        if len(index.offers) == size and index.messages - frozen_at >= FREEZE_AFTER:
            index.columns.settle()  # the listing's order, sorted now rather than in the next request
            gc.collect()
            gc.freeze()
            frozen_at = index.messages
            log.debug("exchange: %d offers moved out of the collector's scans", size)
        size = len(index.offers)
