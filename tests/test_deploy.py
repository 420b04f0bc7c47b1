"""The deployment files: deploy/compose.yaml (services, ports, volumes, mounts, and that the parts
agree with each other and with the repository) and the systemd unit (keys, `systemd-analyze
verify`, and the notify protocol the unit relies on, spoken by a real `collector run`)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.mqtt.config import MqttSource
from adapters.mqtt.topics import TopicTemplate
from collector.cli import build_parser
from collector.configfile import load_config
from collector.simulate import DEFAULT_TOPIC
from collector.systemd import Systemd
from tests.fixtures._proc import COLLECTOR, collector_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "machine-collector.service"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's `${VAR:-default}` with an empty environment (what `docker compose up` sees on a fresh box)."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE.read_text()))
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a named volume, or a host path resolved against deploy/)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        out[target] = source if not source.startswith(".") else str((DEPLOY / source).resolve())
    return out


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    """Test the services, their images, published ports and named volumes."""
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "grafana", "collector", "simulator"}
    assert services["influxdb"]["image"] == "influxdb:2.7"
    ports = {name: {p.split(":")[0] for p in s.get("ports", [])} for name, s in services.items()}
    assert ports == {"mosquitto": {"1883"}, "influxdb": {"8086"}, "grafana": {"3000"}, "collector": {"9180"},
                     "simulator": {"4840"}}
    named = {src for s in services.values() for src in mounts(s).values() if not src.startswith("/")}
    assert named == set(compose["volumes"])
    for service in services.values():  # every bind mount points at a file or folder of the repository
        for source in mounts(service).values():
            if source.startswith("/"):
                assert Path(source).exists(), source


def test_influxdb_is_set_up_with_a_dbrp_mapping(compose: dict[str, Any]) -> None:
    """Test the init variables and the init script that maps the InfluxQL database onto the bucket."""
    influx = compose["services"]["influxdb"]
    env = influx["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{key}"]
    init = Path(mounts(influx)["/docker-entrypoint-initdb.d"])
    script = (init / "dbrp.sh").read_text()
    assert os.access(init / "dbrp.sh", os.X_OK)
    command = " ".join(script.split("\\\n"))
    assert re.search(r"influx v1 dbrp create .*--bucket-id \"\$\{DOCKER_INFLUXDB_INIT_BUCKET_ID\}\"", command)
    assert "--db \"${INFLUXQL_DB" in command and "--rp autogen" in command and "--default" in command
    # Grafana's data source queries the database the mapping creates, with the token InfluxDB was set up with
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["INFLUX_DB"] == env["INFLUXQL_DB"]
    assert grafana["INFLUX_TOKEN"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert subprocess.run(["bash", "-n", str(init / "dbrp.sh")]).returncode == 0


def test_grafana_mounts_the_provisioning_files(compose: dict[str, Any]) -> None:
    """Test that the provisioning files and boards are mounted where they say they are read from."""
    grafana = compose["services"]["grafana"]
    m = mounts(grafana)
    datasources = Path(m["/etc/grafana/provisioning/datasources"])
    assert datasources == ROOT / "dashboards" / "provisioning" / "datasources"
    providers = Path(m["/etc/grafana/provisioning/dashboards"])
    provider = yaml.safe_load((providers / "availability.yaml").read_text())["providers"][0]
    boards = Path(m[provider["options"]["path"]])
    assert sorted(p.name for p in boards.glob("*.json"))  # the generated boards
    text = (datasources / "influxdb.yaml").read_text()
    settings = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    wanted = set(re.findall(r"\$\{(\w+)\}", "\n".join(settings)))
    assert wanted <= set(grafana["environment"])
    assert grafana["environment"]["INFLUX_URL"] == "http://influxdb:8086"
    assert grafana["depends_on"]["influxdb"]["condition"] == "service_healthy"


def test_collector_and_simulator_fit_together(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that the collector's mounted config, with the compose environment, reads what the simulator publishes."""
    services = compose["services"]
    collector, simulator = services["collector"], services["simulator"]
    parser = build_parser()
    run = parser.parse_args(collector["command"])
    sim = parser.parse_args(simulator["command"])
    assert run.command == "run" and str(run.config) in mounts(collector)
    assert sim.command == "simulate" and sim.mqtt == ("mosquitto", 1883) and sim.opcua
    assert simulator["image"] == collector["image"]
    for key, value in collector["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("COLLECTOR_DATA_DIR", "/var/lib/collector")  # the Dockerfile's
    config_file = Path(mounts(collector)[str(run.config)])
    loaded = load_config(config_file)
    source = loaded.config.sources[0]
    assert isinstance(source, MqttSource) and (source.host, source.port) == sim.mqtt
    topic = DEFAULT_TOPIC.format(plant=loaded.config.site.plant, line="turning", cell="", machine="lathe-01")
    assert TopicTemplate(source.subscriptions[0].topic).match(topic.split("/")) is not None
    influx = loaded.config.influx
    assert influx is not None and influx.url == "http://influxdb:8086"
    assert influx.token is not None
    assert influx.token.get_secret_value() == services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert influx.bucket == services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert mounts(collector)["/var/lib/collector"] == "collector-data"
    assert loaded.config.data_dir == Path("/var/lib/collector")
    assert loaded.config.outbox.path == Path("/var/lib/collector/outbox.sqlite")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
@pytest.mark.integration  # starts the collector or an outside tool
def test_compose_file_validates_with_docker_compose() -> None:
    """Test the file with Debian's docker-compose `config` (the Compose file schema, interpolation, anchors)."""
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "INFLUX_TOKEN": "t"})
    assert done.returncode == 0, done.stderr


# -- systemd ---------------------------------------------------------------------------------------

def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_keys() -> None:
    """Test restart on failure, Type=notify with a watchdog, a dynamic user writing only the data dir."""
    service = unit()["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"].rstrip("s")) > 0
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["DynamicUser"] == "yes" and service["ProtectSystem"] == "strict"
    data_dir = "/var/lib/" + service["StateDirectory"]
    assert service["ReadWritePaths"] == data_dir
    assert service["Environment"] == f"COLLECTOR_DATA_DIR={data_dir}"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(service["ExecStart"])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.log_format == "json"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.integration  # starts the collector or an outside tool
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Test the unit with `systemd-analyze verify` (ExecStart pointed at this checkout's collector)."""
    collector = shutil.which("collector", path=str(Path(sys.executable).parent)) or "/usr/bin/true"
    good = tmp_path / "machine-collector.service"
    good.write_text(UNIT.read_text().replace("/opt/machine-collector/bin/collector", collector))
    done = subprocess.run(["systemd-analyze", "verify", str(good)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    bad = tmp_path / "bad.service"  # the check can fail: it warns about what it does not understand
    bad.write_text(good.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    warned = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'WatchdogSecs'" in warned.stderr


@pytest.mark.integration  # starts the collector or an outside tool
def test_run_speaks_the_notify_protocol(tmp_path: Path) -> None:
    """Test that `collector run` under Type=notify sends READY=1, WATCHDOG=1 at half WatchdogSec, STOPPING=1."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(20)
    # Under systemd the collector waits for a synchronized clock (clock.require_sync); whether this
    # machine's is synchronized is not this test's business.
    env = collector_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000", COLLECTOR_HTTP__PORT="0",
                        COLLECTOR_DATA_DIR=str(tmp_path / "data"), COLLECTOR_CLOCK__REQUIRE_SYNC="false")
    proc = subprocess.Popen([*COLLECTOR, "run", "-c", str(ROOT / "config" / "example.yaml"), "--print"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    messages: list[tuple[float, str]] = []  # (when, what)
    try:
        while sum("WATCHDOG=1" in m for _, m in messages) < 4:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
    finally:
        proc.send_signal(signal.SIGTERM)  # once: a second one while it stops would cut the stop short
    try:
        while "STOPPING=1" not in messages[-1][1]:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
    finally:
        assert proc.wait(30) == 0
        sock.close()
    texts = [m for _, m in messages]
    assert texts[0].startswith("WATCHDOG=1") or texts[0].startswith("READY=1")
    assert any(m.startswith("READY=1\nSTATUS=12 machine(s), 1 source(s)") for m in texts)
    assert texts[-1] == "STOPPING=1"


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test the ping interval systemd asks for (half WatchdogSec), and none when meant for another process."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert Systemd().watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Systemd().watchdog_interval() is None
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.delenv("WATCHDOG_PID")
    assert Systemd().watchdog_interval() is None  # not under systemd: no pings, no errors
