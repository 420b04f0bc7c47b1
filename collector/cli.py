"""The ``collector`` command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from collector import __version__
from collector.configfile import load_or_report

if TYPE_CHECKING:
    from collector.configfile import LoadedConfig
    from collector.sinks import Sink

log = logging.getLogger("collector")

EPILOG = """\
examples:
  collector demo                          simulated plant + live board, no services needed
  collector validate -c config.yaml       check a config; exit status 2 if invalid
  collector run -c config.yaml            collect and write to InfluxDB (through the outbox)
  collector run -c config.yaml --print    write line protocol to stdout instead
  collector schema > collector.schema.json   JSON Schema for editor autocompletion

Environment variables COLLECTOR_<SECTION>__<FIELD> override the file
(e.g. COLLECTOR_INFLUX__TOKEN); the YAML may use ${VAR}, ${VAR:-default}, ${file:/path}.
Config reference: docs/CONFIG.md.
"""


def _default_example() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Machine availability collector: OPC UA / MQTT signals -> canonical machine "
                    "states (busy, idle, setup, down, offline) -> InfluxDB.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (default: INFO); logs go to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="collect machine states and write them",
                         description="Read the sources, track every machine's state, write machine_state and "
                                     "machine_availability points to InfluxDB through the on-disk outbox. "
                                     "Stops gracefully on SIGINT/SIGTERM (machines are written offline).")
    run.add_argument("-c", "--config", type=Path, required=True, help="the YAML config file")
    run.add_argument("--print", action="store_true", dest="print_lines",
                     help="write line protocol to stdout instead of InfluxDB (for debugging)")
    run.add_argument("--for", type=float, dest="duration", metavar="SECONDS",
                     help="stop by itself after SECONDS (default: run until stopped)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a config file and summarise it",
                              description="Check a config: prints its sources and machines (with the profile "
                                          "and signals of each), or every error with file:line:column and "
                                          "field path. Exit status 0 if valid, 2 if not.")
    validate.add_argument("-c", "--config", type=Path, required=True, help="the YAML config file")
    validate.set_defaults(func=cmd_validate)

    schema = sub.add_parser("schema", help="print the config's JSON Schema",
                            description="Print the JSON Schema of the config file, for editors (e.g. the YAML "
                                        "language server: `# yaml-language-server: $schema=collector.schema.json`).")
    schema.set_defaults(func=cmd_schema)

    reference = sub.add_parser("config-reference", help="print the config reference (Markdown)",
                               description="Print the config reference generated from the models (docs/CONFIG.md).")
    reference.set_defaults(func=cmd_reference)

    demo = sub.add_parser("demo", help="run a simulated plant and show a live board",
                          description="Start a simulated plant (a dozen machines with work cycles, setups, alarms "
                                      "and switch-offs) and the collector on it, and show a live board of every "
                                      "machine's state, since when, why, availability and idle hours. No outside "
                                      "service is needed. Ctrl-C stops.")
    demo.add_argument("-c", "--config", type=Path, default=None,
                      help="config to run (default: config/example.yaml, the simulated plant)")
    demo.add_argument("--speed", type=float, default=None,
                      help="time-lapse factor of the simulated behaviour (e.g. 20: cycles twenty times faster)")
    demo.add_argument("--for", type=float, dest="duration", metavar="SECONDS", help="stop after SECONDS")
    demo.add_argument("--no-board", action="store_true",
                      help="print state changes as log lines instead of the live board")
    demo.set_defaults(func=cmd_demo)

    from dashboards.cli import register

    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    config = loaded.config
    print(f"{args.config}: valid")
    print(f"site: plant {config.site.plant}")
    print(f"sources ({len(config.sources)}):")
    for source in config.sources:
        count = sum(1 for m in loaded.machines if m.source == source.id)
        print(f"  {source.id:<16} {source.type:<10} {count} machine(s)")
    print(f"machines ({len(loaded.machines)}):")
    for m in loaded.machines:
        signals = ", ".join(m.bound.signals) or "-"
        print(f"  {m.info.id:<16} source={m.source:<12} profile={m.profile:<12} signals: {signals}")
    if config.influx is None:
        print("influx: not configured (use `collector run --print`)")
    else:
        print(f"influx: {config.influx.url} (api {config.influx.api})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from collector.config import Config

    print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from collector.reference import config_reference

    print(config_reference(), end="")
    return 0


def _install_stop(stop: asyncio.Event, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    if duration is not None:
        loop.call_later(duration, stop.set)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        raise SystemExit(130)
    log.info("received %s: stopping (machines are written offline, the outbox is flushed)", sig.name)
    stop.set()


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    from collector.sinks import PrintSink

    sink: Sink
    if args.print_lines:
        sink = PrintSink()
    elif loaded.config.influx is None:
        print(f"{args.config}: no `influx:` section; add one or use --print", file=sys.stderr)
        return 2
    else:
        from collector.influx import make_sink

        sink = make_sink(loaded.config)
    return asyncio.run(_run(loaded, sink, args.duration))


async def _run(loaded: LoadedConfig, sink: Sink, duration: float | None) -> int:
    from collector.engine import Engine
    from collector.http import serve_status

    stop = asyncio.Event()
    _install_stop(stop, duration)
    engine = Engine(loaded, sink)
    # What exists now (modules, config, trackers) lives as long as the process: keep it out of
    # the garbage collector's full scans, which would walk it again and again (about 4% of the
    # CPU time of an MQTT backlog drain, bench/mqtt_ingest.py).
    gc.freeze()
    async with serve_status(engine, loaded.config.http):
        await engine.run(stop)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo

    if not args.no_board:  # log lines would tear the live board; warnings still show
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))

    path = args.config or _default_example()
    loaded = load_or_report(path)
    if loaded is None:
        return 2
    return asyncio.run(run_demo(loaded, speed=args.speed, duration=args.duration, board=not args.no_board,
                                install_stop=_install_stop))
