"""``collector dashboards build|check|push``; the lead's CLI calls ``register(subparsers)``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from collector.config import Config
from dashboards.build import JSON_DIR, SOURCE_CONFIG, stale_files, write

log = logging.getLogger(__name__)

TOKEN_ENV = "GRAFANA_TOKEN"
URL_ENV = "GRAFANA_URL"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "dashboards", help="Grafana boards: generate the JSON, check it, push it to a Grafana",
        description="Grafana dashboards as code. See dashboards/README.md.")
    sub = parser.add_subparsers(dest="dashboards_command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="generate the dashboard JSON from a config")
    _config_arg(build)
    build.add_argument("--out", type=Path, default=JSON_DIR, help=f"output folder (default: {JSON_DIR})")
    build.set_defaults(func=cmd_build)

    check = sub.add_parser("check", help="exit 1 if the JSON in --out is not what build would write")
    _config_arg(check)
    check.add_argument("--out", type=Path, default=JSON_DIR, help=f"folder to check (default: {JSON_DIR})")
    check.set_defaults(func=cmd_check)

    platform = sub.add_parser(
        "platform", help="write the platform's board (free capacity across plants, from VictoriaMetrics)",
        description="The board of a platform that gathers the plants' public history (their `victoriametrics` "
                    "platform outputs); it depends on no plant's config. See docs/EXCHANGE.md.")
    platform.add_argument("--out", type=Path, default=None, help="output folder (default: dashboards/json-platform)")
    platform.add_argument("--check", action="store_true", help="exit 1 if the file in --out is not what this writes")
    platform.set_defaults(func=cmd_platform)

    push = sub.add_parser(
        "push", help="create or update the data source, folder and boards in a Grafana",
        description=f"Idempotent. The API token comes from ${TOKEN_ENV} (a service account token; "
                    "Editor role, Admin to create the data source).")
    _config_arg(push)
    push.add_argument("--grafana-url", default=os.environ.get(URL_ENV),
                      help=f"Grafana base URL, e.g. https://grafana.example.com (default: ${URL_ENV})")
    push.add_argument("--share", action="store_true",
                      help="make the capacity boards public (Grafana 10+) and print their URLs")
    push.add_argument("--no-datasource", action="store_true",
                      help="leave the data source alone (e.g. it is provisioned from a file)")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: 10)")
    push.set_defaults(func=cmd_push)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=SOURCE_CONFIG,
                        help=f"the collector config the boards are generated from (default: {SOURCE_CONFIG})")


def _load(path: Path) -> Config | None:
    from collector.configfile import load_or_report

    loaded = load_or_report(path)
    return None if loaded is None else loaded.config


def cmd_build(args: argparse.Namespace) -> int:
    from dashboards.boards import build_boards

    config = _load(args.config)
    if config is None:
        return 2
    for path in write(build_boards(config), args.out):
        print(path)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dashboards.boards import build_boards

    config = _load(args.config)
    if config is None:
        return 2
    stale = stale_files(build_boards(config), args.out)
    for name in stale:
        print(f"stale: {args.out / name}", file=sys.stderr)
    if stale:
        print(f"run: collector dashboards build -c {args.config} --out {args.out}", file=sys.stderr)
    return 1 if stale else 0


def cmd_platform(args: argparse.Namespace) -> int:
    try:  # built with grafana-foundation-sdk, a test extra: the committed JSON needs nothing
        from dashboards import platform
    except ImportError as exc:
        print(f"{exc}: `pip install 'grafana-foundation-sdk==1769699379!11.6.0'` (or use the committed "
              "dashboards/json-platform/platform-capacity.json)", file=sys.stderr)
        return 2

    out = args.out or platform.JSON_DIR
    if args.check:
        path = out / f"{platform.UID}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != platform.render():
            print(f"stale: {path}; run: collector dashboards platform --out {out}", file=sys.stderr)
            return 1
        return 0
    print(platform.write(out))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from dashboards.boards import build_boards
    from dashboards.push import Pusher, PushError, push

    if not args.grafana_url:
        print(f"no Grafana URL: pass --grafana-url or set ${URL_ENV}", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"no API token: set ${TOKEN_ENV} to a Grafana service account token", file=sys.stderr)
        return 2
    config = _load(args.config)
    if config is None:
        return 2
    boards = build_boards(config)
    # the plant's InfluxDB: `influx`, or the first InfluxDB of `outputs` (a VictoriaMetrics output
    # is no InfluxQL/Flux data source)
    influx = None if args.no_datasource else next(
        (o for o in config.output_list() if o.api != "victoriametrics"), None)
    try:
        result = push(Pusher(args.grafana_url, token, args.timeout), boards, config.dashboards, influx,
                      share=args.share)
    except PushError as exc:
        print(f"push failed: {exc}", file=sys.stderr)
        return 1
    print(f"Grafana {result.grafana_version}: data source {result.datasource}, folder {result.folder}")
    for uid, url in result.dashboards.items():
        print(f"  {uid}: {url}")
    for uid, url in result.public.items():
        print(f"  public {uid}: {url}")
    return 0
