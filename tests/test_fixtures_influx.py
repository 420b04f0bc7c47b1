"""Each service fixture proves itself by writing and reading back something real."""

from __future__ import annotations

import urllib.request

from tests.fixtures.influxdb import InfluxD, VictoriaMetrics


def test_influxd_writes_and_reads_back(influxd: InfluxD) -> None:
    """Test that the influxd fixture accepts a v1 write and returns it through InfluxQL."""
    influxd.query("CREATE DATABASE probe")
    influxd.write('probe,machine=m1 value=42.5,state="busy" 1700000000000000000', db="probe")
    rows = influxd.rows("SELECT value, state FROM probe", db="probe")
    assert rows == [{"time": 1700000000000000000, "value": 42.5, "state": "busy"}]


def test_victoria_metrics_accepts_v2_write(victoria_metrics: VictoriaMetrics) -> None:
    """Test that victoria-metrics takes InfluxDB's /api/v2/write and keeps numeric fields."""
    req = urllib.request.Request(
        f"{victoria_metrics.url}/api/v2/write?org=o&bucket=b&precision=ns",
        data=b'probe,machine=m1 value=42.5,state="busy" 1700000000000000000', method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    series = victoria_metrics.export('{__name__="probe_value"}')
    assert [(s["metric"]["machine"], s["values"], s["timestamps"]) for s in series] == [
        ("m1", [42.5], [1700000000000])]
