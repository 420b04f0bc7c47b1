"""Logs: `--log-format json` gives one JSON object per line; secrets from the config never reach
the log (a run with known secrets, its log grepped); httpx's per-request lines stay out at INFO."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.configfile import load_config_text
from collector.logs import _SECRETS, MASK, mask_secrets, secrets_of, setup_logging
from tests.fixtures._ports import free_port, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env
from tests.fixtures.influxdb import InfluxD

INFLUX_PASSWORD = "pw-Influx-7f3a9c"
MQTT_PASSWORD = "pw-Mqtt-51d2e8"
OPCUA_PASSWORD = "pw-Opcua-c0ffee"


def secret_config(tmp: Path, influx_url: str, level: str) -> Path:
    path = tmp / "c.yaml"
    path.write_text(f"""
site: {{plant: p}}
sources:
  - {{id: sim, type: simulate, seed: 1, publish_every: 100ms, speed: 50}}
  # Nobody listens on these ports: connection errors are logged, again and again, with their sources.
  - {{id: mq, type: mqtt, host: 127.0.0.1, port: {free_port()}, username: u, password: "${{MQTT_PASSWORD}}",
     subscriptions: [{{topic: "f/{{machine}}"}}]}}
  - {{id: ua, type: opcua, endpoint: "opc.tcp://127.0.0.1:{free_port()}", username: u, password: "{OPCUA_PASSWORD}"}}
profiles:
  p:
    signals: {{execution: execution}}
    rules: [{{state: busy, when: "execution == 'ACTIVE'"}}, {{state: idle}}]
machines:
  - {{id: m1, source: sim, profile: p}}
  - {{id: m2, source: mq, profile: p}}
  - {{id: m3, source: ua, profile: p, signals: {{execution: "ns=2;s=x"}}}}
tracker: {{interval: 1s}}
influx: {{url: "{influx_url}", api: v1, database: db, create_database: true, username: admin,
          password: "${{file:{tmp / 'influx_password'}}}"}}
http: {{port: 0}}
data_dir: {tmp / 'data'}
""")
    (tmp / "influx_password").write_text(INFLUX_PASSWORD + "\n")
    return path


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_known_secrets_never_reach_the_json_log(influxd: InfluxD, tmp_path: Path, level: str) -> None:
    """Test that a run writing to InfluxDB v1 (password in the query string) and failing to reach
    MQTT and OPC UA servers (passwords in their settings) logs none of the three passwords."""
    cfg = secret_config(tmp_path, influxd.url, level)
    env = collector_env(MQTT_PASSWORD=MQTT_PASSWORD)
    proc = subprocess.Popen([*COLLECTOR, "--log-format", "json", "--log-level", level, "run", "-c", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: influxd.rows("SELECT count(state) FROM machine_state", "db") != [], 30, "points in InfluxDB")
        wait_for(lambda: sum("unreachable" in ln for ln in lines) >= 2, 30, "both failing sources logged")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        reader.join(10)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    text = "\n".join(lines)
    for secret in (INFLUX_PASSWORD, MQTT_PASSWORD, OPCUA_PASSWORD):
        assert secret not in text
    requests = [r for r in records if r["logger"] == "httpx"]
    if level == "INFO":
        assert requests == []  # one line per InfluxDB write would bury the journal
    else:
        assert any("/write?" in r["message"] and f"p={MASK}" in r["message"] for r in requests)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    _SECRETS.secrets = []


def test_mask_catches_a_secret_in_any_log_line(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    """Test that the last line of defence masks secrets in messages, arguments and exception texts."""
    loaded = load_config_text(f"""
site: {{plant: p}}
sources:
  - {{id: ua, type: opcua, endpoint: "opc.tcp://h:4840", username: u, password: "{OPCUA_PASSWORD}"}}
influx: {{url: "http://x", token: "{INFLUX_PASSWORD}"}}
""")
    assert sorted(secrets_of(loaded.config)) == sorted([OPCUA_PASSWORD, INFLUX_PASSWORD])
    setup_logging("INFO", "text")
    mask_secrets(secrets_of(loaded.config))
    log = logging.getLogger("collector.test")
    log.warning("connecting with %s", OPCUA_PASSWORD)
    try:
        raise ValueError(f"bad token {INFLUX_PASSWORD}")
    except ValueError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert OPCUA_PASSWORD not in err and INFLUX_PASSWORD not in err
    assert f"connecting with {MASK}" in err and f"bad token {MASK}" in err
