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
    from collector.influx.config import OutputSettings
    from collector.sinks import Sink

log = logging.getLogger("collector")

EPILOG = """\
examples:
  collector demo                          simulated plant + live board, no services needed
  collector demo --plants 3               three simulated plants and the exchange (needs mosquitto installed)
  collector init > plant.yaml             a commented starter config to edit
  collector validate -c config.yaml       check a config; exit status 2 if invalid
  collector run -c config.yaml            collect and write to InfluxDB (through the outbox)
  collector run -c config.yaml --print    write line protocol to stdout instead
  collector schema > collector.schema.json   JSON Schema for editor autocompletion
  collector simulate --mqtt 127.0.0.1:1883 --sparkplug --opcua opc.tcp://0.0.0.0:4840
                                          publish the demo plant for real (MQTT JSON, Sparkplug B, OPC UA)
  collector check -c config.yaml --for 30s
                                          read every source, show signals, states and problems; write nothing
  collector reload -c config.yaml         make a running collector take the edited config

Environment variables COLLECTOR_<SECTION>__<FIELD> override the file
(e.g. COLLECTOR_INFLUX__TOKEN); the YAML may use ${VAR}, ${VAR:-default}, ${file:/path}.
Config reference: docs/CONFIG.md.
"""


def _default_example() -> Path:
    from collector.examples import EXAMPLE

    return EXAMPLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Machine availability collector: OPC UA / MQTT signals -> canonical machine "
                    "states (busy, idle, setup, down, offline) -> InfluxDB.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (default: INFO); logs go to stderr")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text (default), or one JSON object per line for log shippers")
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

    init = sub.add_parser("init", help="print a commented starter config",
                          description="Print a starter config generated from this collector's models: a simulated "
                                      "plant that runs as it is, then every source type and section commented out "
                                      "with its description and default. `collector init > plant.yaml`.")
    init.set_defaults(func=cmd_init)

    demo = sub.add_parser("demo", help="run a simulated plant and show a live board",
                          description="Start a simulated plant (a dozen machines with work cycles, setups, alarms "
                                      "and switch-offs, following a week of shifts) and the collector on it, and show "
                                      "a live board of every machine's state, since when, why, availability and idle "
                                      "hours. The plant's last weeks are simulated first (--history-weeks), so the "
                                      "capacity page (/capacity) shows free hours, usual free windows and its heatmap "
                                      "at once, marked as simulated. No outside service is needed. Ctrl-C stops.")
    demo.add_argument("-c", "--config", type=Path, default=None,
                      help="config to run (default: the example plant shipped with the package, config/example.yaml)")
    demo.add_argument("--speed", type=float, default=None,
                      help="time-lapse factor of the simulated behaviour (e.g. 20: cycles twenty times faster)")
    demo.add_argument("--for", type=float, dest="duration", metavar="SECONDS", help="stop after SECONDS")
    demo.add_argument("--no-board", action="store_true",
                      help="print state changes as log lines instead of the live board")
    demo.add_argument("--history-weeks", type=float, default=None, metavar="WEEKS",
                      help="simulate this many weeks of the plant's past first, in virtual time, through the same "
                           "roll-ups and capacity profile as live data, so free hours, usual free windows and the "
                           "heatmap show at once; marked `simulated` (default: 2, about 4 s; 1 a plant with "
                           "--plants; 0: start empty)")
    demo.add_argument("--plants", type=int, default=None, metavar="N",
                      help="the platform side: N simulated plants (the demo plant under N names and seeds), each "
                           "publishing its capacity offers to a mosquitto the demo starts (must be installed), and "
                           "the exchange (`collector exchange`) on it, its page at http://127.0.0.1:9280/")
    demo.set_defaults(func=cmd_demo)

    _register_ops(sub)

    from dashboards.cli import register

    register(sub)
    from collector.exchange.command import register as register_exchange

    register_exchange(sub)
    return parser


def _duration(text: str) -> float:
    from collector.core.durations import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _register_ops(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    simulate = sub.add_parser(
        "simulate", help="publish the simulated plant to an MQTT broker and/or as an OPC UA server",
        description="The demo plant published for real, with the same seeded behaviour as `type: simulate`: "
                    "every machine's quantities (execution, spindle_rpm, alarm, mode, packml_state, item_state, "
                    "operation_mode) as MQTT JSON on factory/<plant>/<line>/<machine>/status, as a Sparkplug B "
                    "edge node (group <plant>, device <machine>), and as an OPC UA server with plain tags "
                    "(nsu=urn:collector:simulate;s=<machine>.Execution ...) and OPC 40001 machines. "
                    "config/simulate-*.yaml read it. Ctrl-C stops.")
    simulate.add_argument("-c", "--config", type=Path, default=None,
                          help="the plant: the machines of its `simulate` source (default: config/example.yaml)")
    simulate.add_argument("--mqtt", type=_host_port, metavar="HOST:PORT", help="publish to this MQTT broker")
    simulate.add_argument("--sparkplug", action="store_true", help="also publish as a Sparkplug B edge node")
    simulate.add_argument("--no-json", action="store_true", help="no JSON messages (e.g. Sparkplug B only)")
    simulate.add_argument("--topic", default=None,
                          help="JSON topic template (default: factory/{plant}/{line}/{machine}/status)")
    simulate.add_argument("--opcua", metavar="ENDPOINT", help="serve OPC UA here, e.g. opc.tcp://0.0.0.0:4840")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    simulate.add_argument("--speed", type=float, default=None, help="time-lapse factor (default: the config's)")
    simulate.add_argument("--publish-every", type=_duration, default=None, metavar="DURATION",
                          help="how often each machine publishes (default: the config's)")
    simulate.add_argument("--for", type=_duration, dest="duration", metavar="DURATION", help="stop after DURATION")
    simulate.set_defaults(func=cmd_simulate)

    check = sub.add_parser(
        "check", help="read every source for a while: signals, states, problems; writes nothing",
        description="Connect to every source with the real adapters and print, per machine, the signals as they "
                    "arrive, the state the rules give and why, and every problem found (node not found, "
                    "certificate refused, payload path missing, topic matched by no subscription, no data from "
                    "a machine). Nothing is written. Exit status 0 when every configured machine sent data, "
                    "1 when one did not, 2 when the config is invalid.")
    check.add_argument("-c", "--config", type=Path, required=True, help="the YAML config file")
    check.add_argument("--for", type=_duration, dest="duration", default=15.0, metavar="DURATION",
                       help="how long to listen (default: 15s)")
    check.set_defaults(func=cmd_check)

    reload = sub.add_parser(
        "reload", help="make a running collector take its edited config",
        description="Validate the config, then ask the collector running it to reload: over its HTTP server "
                    "(POST /api/v1/reload, which answers with what changed or why it refused) when `http` is "
                    "enabled, else with SIGHUP to the pid in <data_dir>/collector.pid. An invalid config is "
                    "refused here and by the collector, which keeps running the old one.")
    reload.add_argument("-c", "--config", type=Path, required=True, help="the YAML config file")
    reload.add_argument("--signal", action="store_true", help="use the pid file and SIGHUP even if HTTP is on")
    reload.set_defaults(func=cmd_reload)


def main(argv: list[str] | None = None) -> int:
    from collector.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    code: int = args.func(args)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    config = loaded.config
    from collector.logs import mask_secrets, secrets_of

    mask_secrets(secrets_of(config))
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
    outputs = config.output_list()
    if not outputs:
        print("influx: not configured (use `collector run --print`)")
    for output in outputs:
        print(f"output {output.name}: {output.url} (api {output.api}){_selection_text(output)}")
    return 0


def _selection_text(output: OutputSettings) -> str:
    rule, parts = output.machines, []
    if rule.public:
        parts.append("public machines")
    if rule.ids:
        parts.append("ids " + ", ".join(rule.ids))
    if rule.tags:
        parts.append("tags " + ", ".join(f"{k}={v}" for k, v in rule.tags.items()))
    if output.drop_fields:
        parts.append("without " + ", ".join(output.drop_fields))
    return f"; {'; '.join(parts)}" if parts else ""


def cmd_schema(args: argparse.Namespace) -> int:
    from collector.config import Config

    print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from collector.starter import starter_config

    sys.stdout.write(starter_config())
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
    from collector.logs import mask_secrets, secrets_of

    mask_secrets(secrets_of(loaded.config))
    from collector.sinks import PrintSink

    sink: Sink
    if args.print_lines:
        sink = PrintSink()
    elif not loaded.config.output_list():
        print(f"{args.config}: no `influx:` or `outputs:` section; add one or use --print", file=sys.stderr)
        return 2
    else:
        from collector.influx import make_sink

        sink = make_sink(loaded.config)
    return asyncio.run(_run(loaded, sink, args.duration))


async def _run(loaded: LoadedConfig, sink: Sink, duration: float | None) -> int:
    from collector.capacity.feed import run_feed
    from collector.capacity.service import Capacity
    from collector.engine import Engine
    from collector.http import serve_status
    from collector.reload import Reloader, pid_file
    from collector.systemd import Systemd

    stop = asyncio.Event()
    _install_stop(stop, duration)
    # The capacity feed learns each public machine's hour-of-week profile from the roll-ups.
    capacity = Capacity(loaded.config.capacity, loaded.config.data_dir / "capacity.sqlite")
    engine = Engine(loaded, sink, on_output=capacity.on_output)
    capacity.bind(engine)
    reloader = Reloader(engine, loaded.path)
    reloader.install()
    systemd = Systemd()
    # What exists now (modules, config, trackers) lives as long as the process: keep it out of
    # the garbage collector's full scans, which would walk it again and again (about 4% of the
    # CPU time of an MQTT backlog drain, bench/mqtt_ingest.py).
    gc.freeze()
    try:
        with pid_file(loaded.config.data_dir):
            async with serve_status(engine, loaded.config.http, reload=reloader.reload, capacity=capacity), \
                    run_feed(capacity, loaded.config):
                runner = asyncio.create_task(engine.run(stop), name="engine")
                watchdog = asyncio.create_task(systemd.watchdog(), name="systemd-watchdog")
                await asyncio.sleep(0)  # the engine has opened its sink and started its sources
                if not runner.done():  # `systemctl status` shows why nothing is written while the clock syncs
                    systemd.ready(engine.sync.reason or
                                  f"{len(engine.trackers)} machine(s), {len(loaded.config.sources)} source(s)")
                try:
                    await runner
                finally:
                    systemd.stopping()
                    watchdog.cancel()
    finally:
        capacity.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo

    if not args.no_board and args.plants is None:  # log lines would tear the live board; warnings still show
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))

    path = args.config or _default_example()
    loaded = load_or_report(path)
    if loaded is None:
        return 2
    if args.plants is not None:
        from collector.demo import with_shifts
        from collector.simulate.platform import run_platform

        if args.plants < 1:
            print("collector demo: --plants must be 1 or more", file=sys.stderr)
            return 2
        weeks = 1.0 if args.history_weeks is None else args.history_weeks
        return asyncio.run(run_platform(with_shifts(loaded), args.plants, history_weeks=weeks,
                                        install_stop=_install_stop, duration=args.duration))
    weeks = 2.0 if args.history_weeks is None else args.history_weeks
    return asyncio.run(run_demo(loaded, speed=args.speed, duration=args.duration, board=not args.no_board,
                                install_stop=_install_stop, history_weeks=weeks))


def cmd_simulate(args: argparse.Namespace) -> int:
    from collector.simulate import DEFAULT_TOPIC, plant_from_config, simulate

    if args.mqtt is None and args.opcua is None:
        print("collector simulate: say where to publish: --mqtt HOST:PORT and/or --opcua ENDPOINT", file=sys.stderr)
        return 2
    # asyncua's server logs its whole address space build at INFO and warns that policy None is insecure.
    logging.getLogger("asyncua").setLevel(max(logging.ERROR, logging.getLogger().level))
    loaded = load_or_report(args.config or _default_example())
    if loaded is None:
        return 2
    try:
        plant = plant_from_config(loaded, seed=args.seed, speed=args.speed, publish_every=args.publish_every)
    except ValueError as exc:
        print(f"collector simulate: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        stop = asyncio.Event()
        _install_stop(stop, args.duration)
        await simulate(plant, stop, mqtt=args.mqtt, json_payloads=not args.no_json, sparkplug=args.sparkplug,
                       topic=args.topic or DEFAULT_TOPIC, opcua=args.opcua)
        return 0

    try:
        return asyncio.run(go())
    except (ConnectionError, OSError) as exc:
        print(f"collector simulate: {exc}", file=sys.stderr)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    from collector.check import check
    from collector.logs import mask_secrets, secrets_of

    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    mask_secrets(secrets_of(loaded.config))

    async def go() -> int:
        stop = asyncio.Event()
        _install_stop(stop, None)
        return await check(loaded, args.duration, sys.stdout, stop)

    return asyncio.run(go())


def cmd_reload(args: argparse.Namespace) -> int:
    from collector.reload import signal_running

    loaded = load_or_report(args.config)
    if loaded is None:
        print("not reloaded: the running collector keeps its config", file=sys.stderr)
        return 2
    http = loaded.config.http
    if http.enabled and http.port and not args.signal:
        import httpx

        host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
        try:
            # /api/* takes a bearer token when `http.token` is set (collector.http.authorized).
            auth = {"Authorization": f"Bearer {http.token.get_secret_value()}"} if http.token else {}
            reply = httpx.post(f"http://{host}:{http.port}/api/v1/reload", headers=auth, timeout=30)
        except httpx.HTTPError as exc:
            print(f"cannot reach the collector at {host}:{http.port}: {exc}; try --signal", file=sys.stderr)
            return 1
        body = reply.json()
        for line in body.get("changes") or body.get("errors") or [body.get("error", reply.text)]:
            print(line)
        return 0 if reply.status_code == 200 else 1
    try:
        pid = signal_running(loaded.config.data_dir)
    except (ProcessLookupError, PermissionError) as exc:
        print(f"cannot signal the collector: {exc}", file=sys.stderr)
        return 1
    print(f"sent SIGHUP to the collector (pid {pid}); its log says what changed")
    return 0
