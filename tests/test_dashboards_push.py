"""`dashboards push` against a stand-in Grafana on a free port: no Grafana server can run here,
so the stand-in answers the way Grafana's HTTP API documentation says (health, data sources,
folders, dashboards/db, public dashboards) and records every request for the checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.cli import main
from collector.configfile import load_config_text
from dashboards.boards import build_boards
from dashboards.config import DashboardSettings
from dashboards.push import Pusher, TooOld, Unauthorized, Unreachable, datasource_body, push
from tests.fixtures._http import Request, Response, http_server, json_response
from tests.fixtures._ports import free_port

TOKEN = "glsa_test_token"
CONFIG = """
site: {plant: p1}
sources: [{id: sim, type: simulate}]
machines:
  - {id: m1, line: L1, kind: lathe, public: true, source: sim, profile: opc40001}
  - {id: m2, line: L1, kind: lathe, source: sim, profile: opc40001}
influx: {url: "http://influx:8086", api: v2, org: acme, bucket: availability, token: "influx-secret"}
"""


@dataclass
class Call:
    """A request as the fake saw it: lower-case header names, the JSON body parsed."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's documented answers, with state so that repeated pushes can be checked."""

    version: str = "10.4.2"
    public_api: bool = True
    requests: list[Call] = field(default_factory=list)
    datasources: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Any] = field(default_factory=dict)
    dashboards: dict[str, Any] = field(default_factory=dict)
    public: dict[str, Any] = field(default_factory=dict)
    url: str = ""

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def handle(self, req: Call) -> tuple[int, Any]:
        self.requests.append(req)
        if req.path == "/api/health":
            return 200, {"commit": "abc", "database": "ok", "version": self.version}
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"message": "invalid API key"}
        m = re.fullmatch(r"/api/datasources/uid/([\w.-]+)", req.path)
        if m and req.method == "GET":
            ds = self.datasources.get(m[1])
            return (200, ds) if ds else (404, {"message": "Data source not found"})
        if m and req.method == "PUT":
            self.datasources[m[1]] = req.body
            return 200, {"message": "Datasource updated", "id": 1, "name": req.body["name"], "datasource": req.body}
        if req.path == "/api/datasources" and req.method == "POST":
            self.datasources[req.body["uid"]] = req.body
            return 200, {"message": "Datasource added", "id": 1, "name": req.body["name"], "datasource": req.body}
        m = re.fullmatch(r"/api/folders/([\w.-]+)", req.path)
        if m and req.method == "GET":
            folder = self.folders.get(m[1])
            return (200, folder) if folder else (404, {"message": "folder not found", "status": "not-found"})
        if req.path == "/api/folders" and req.method == "POST":
            self.folders[req.body["uid"]] = {"id": 1, **req.body}
            return 200, self.folders[req.body["uid"]]
        if req.path == "/api/dashboards/db" and req.method == "POST":
            dash = req.body["dashboard"]
            version = self.dashboards.get(dash["uid"], {}).get("version", 0) + 1
            self.dashboards[dash["uid"]] = {"body": req.body, "version": version}
            return 200, {"id": 1, "uid": dash["uid"], "url": f"/d/{dash['uid']}/slug", "status": "success",
                         "version": version, "slug": "slug"}
        m = re.fullmatch(r"/api/dashboards/uid/([\w.-]+)/public-dashboards/(?:([\w-]+))?", req.path)
        if m and not self.public_api:
            return 404, {"message": "Not found"}
        if m and req.method == "GET":
            pd = self.public.get(m[1])
            if not pd:
                return 404, {"statusCode": 404, "messageId": "publicdashboards.notFound",
                             "message": "Public dashboard not found"}
            return 200, pd
        if m and req.method == "POST":
            if m[1] in self.public:
                return 400, {"statusCode": 400, "messageId": "publicdashboards.dashboardIsPublic",
                             "message": "Dashboard is already public"}
            n = len(self.public) + 1
            self.public[m[1]] = {"uid": f"pub-{n}", "dashboardUid": m[1], "accessToken": f"{n:032x}",
                                 "isEnabled": req.body.get("isEnabled", False),
                                 "timeSelectionEnabled": False, "annotationsEnabled": False, "share": "public"}
            return 200, self.public[m[1]]
        if m and req.method == "PATCH":
            self.public[m[1]].update(req.body)
            return 200, self.public[m[1]]
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()

    def serve(req: Request) -> Response:
        headers = {k.lower(): v for k, v in req.headers.items()}
        body = json.loads(req.body) if req.body else None
        return json_response(*fake.handle(Call(req.method, req.path, headers, body)))

    with http_server(serve) as url:
        fake.url = url
        yield fake


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(CONFIG)
    return path


def run_push(grafana: FakeGrafana, share: bool = True, token: str = TOKEN) -> Any:
    config = load_config_text(CONFIG).config
    return push(Pusher(grafana.url, token, timeout=5), build_boards(config), config.dashboards, config.influx,
                share=share)


def test_first_push_creates_everything_and_shares(grafana: FakeGrafana) -> None:
    """Test the documented request sequence and bodies of a first push with --share."""
    result = run_push(grafana)
    assert grafana.calls() == [
        ("GET", "/api/health"),
        ("GET", "/api/datasources/uid/machine-availability-influxdb"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/machine-availability"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
        ("GET", "/api/dashboards/uid/capacity-p1/public-dashboards/"),
        ("POST", "/api/dashboards/uid/capacity-p1/public-dashboards/"),
    ]
    for req in grafana.requests[1:]:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        if req.method != "GET":
            assert req.headers["content-type"].startswith("application/json")
    ds = grafana.requests[2].body
    assert ds["type"] == "influxdb" and ds["access"] == "proxy" and ds["url"] == "http://influx:8086"
    assert ds["jsonData"] == {"version": "InfluxQL", "httpMode": "POST", "dbName": "availability",
                              "httpHeaderName1": "Authorization"}
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}
    assert grafana.requests[4].body == {"uid": "machine-availability", "title": "Machine availability"}
    saved = [r.body for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert {b["dashboard"]["uid"] for b in saved} == {"machine-fleet", "machine-detail", "capacity-p1"}
    assert all(b["folderUid"] == "machine-availability" and b["overwrite"] is True for b in saved)
    assert all("id" not in b["dashboard"] for b in saved)  # matched by uid
    assert grafana.requests[-1].body == {"isEnabled": True, "timeSelectionEnabled": False,
                                         "annotationsEnabled": False, "share": "public"}
    token = grafana.public["capacity-p1"]["accessToken"]
    assert result.public == {"capacity-p1": f"{grafana.url}/public-dashboards/{token}"}
    assert result.dashboards["machine-fleet"] == f"{grafana.url}/d/machine-fleet/slug"
    assert (result.grafana_version, result.datasource, result.folder) == ("10.4.2", "created", "created")


def test_second_push_is_idempotent(grafana: FakeGrafana) -> None:
    """Test that pushing again updates in place: PUT data source, no new folder, same public URL."""
    first = run_push(grafana)
    start = len(grafana.requests)
    second = run_push(grafana)
    calls = grafana.calls()[start:]
    assert ("PUT", "/api/datasources/uid/machine-availability-influxdb") in calls
    assert ("POST", "/api/datasources") not in calls and ("POST", "/api/folders") not in calls
    assert ("POST", "/api/dashboards/uid/capacity-p1/public-dashboards/") not in calls
    assert second.public == first.public and (second.datasource, second.folder) == ("updated", "exists")
    assert len(grafana.public) == 1 and grafana.dashboards["machine-fleet"]["version"] == 2


def test_provisioned_datasource_is_left_alone(grafana: FakeGrafana) -> None:
    """Test that a data source Grafana marks readOnly (provisioned from a file) is not updated."""
    grafana.datasources["machine-availability-influxdb"] = {"uid": "machine-availability-influxdb", "readOnly": True}
    result = run_push(grafana)
    assert result.datasource == "provisioned"
    assert not [c for c in grafana.calls() if c[1].startswith("/api/datasources") and c[0] != "GET"]


def test_disabled_public_dashboard_is_enabled(grafana: FakeGrafana) -> None:
    """Test that a public dashboard switched off in Grafana is switched on again with PATCH."""
    first = run_push(grafana)
    grafana.public["capacity-p1"]["isEnabled"] = False
    again = run_push(grafana)
    assert grafana.requests[-1].method == "PATCH"
    assert grafana.requests[-1].path == "/api/dashboards/uid/capacity-p1/public-dashboards/pub-1"
    assert grafana.requests[-1].body == {"isEnabled": True}
    assert again.public == first.public


def test_push_without_share_makes_nothing_public(grafana: FakeGrafana) -> None:
    """Test that without --share no public-dashboards endpoint is called."""
    result = run_push(grafana, share=False)
    assert not [c for c in grafana.calls() if "public-dashboards" in c[1]] and result.public == {}


def test_bad_token_is_a_clear_error(grafana: FakeGrafana) -> None:
    """Test that a 401 becomes Unauthorized naming GRAFANA_TOKEN, and nothing is written."""
    with pytest.raises(Unauthorized, match=r"rejected the token.*GRAFANA_TOKEN"):
        run_push(grafana, token="wrong")
    assert not grafana.datasources and not grafana.dashboards


def test_old_grafana_refuses_share_before_writing(grafana: FakeGrafana) -> None:
    """Test that --share against Grafana 9 fails with TooOld before any write."""
    grafana.version = "9.5.3"
    with pytest.raises(TooOld, match=r"Grafana 9\.5\.3 .*needs Grafana 10"):
        run_push(grafana)
    assert grafana.calls() == [("GET", "/api/health")]


def test_hidden_version_still_shares(grafana: FakeGrafana) -> None:
    """Test that a Grafana hiding its version in /api/health is not refused: the endpoint decides."""
    grafana.version = ""
    assert list(run_push(grafana).public) == ["capacity-p1"]


def test_public_dashboards_endpoint_missing(grafana: FakeGrafana) -> None:
    """Test that a 404 from the public-dashboards endpoint (feature off) is TooOld with the reason."""
    grafana.public_api = False
    with pytest.raises(TooOld, match="404 to POST /api/dashboards/uid/capacity-p1/public-dashboards/"):
        run_push(grafana)


def test_unreachable_url() -> None:
    """Test that a URL nobody listens on gives Unreachable naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=re.escape(f"cannot reach Grafana at {url}")):
        push(Pusher(url, TOKEN, timeout=2), [], DashboardSettings(), None, share=False)


def test_datasource_body_v1_keeps_password_secret() -> None:
    """Test the 1.x data source: user in the body, the password only in secureJsonData."""
    text = CONFIG.replace('api: v2, org: acme, bucket: availability, token: "influx-secret"',
                          "api: v1, database: plantdb, username: grafana, password: pw")
    config = load_config_text(text).config
    assert config.influx is not None
    body = datasource_body(config.dashboards, config.influx)
    assert body["user"] == "grafana" and body["jsonData"]["dbName"] == "plantdb"
    assert body["secureJsonData"] == {"password": "pw"}
    assert "pw" not in json.dumps({k: v for k, v in body.items() if k != "secureJsonData"})


def test_cli_push_prints_urls(grafana: FakeGrafana, config_file: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Test `collector dashboards push --share`: exit 0 and the public URL printed."""
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    code = main(["dashboards", "push", "-c", str(config_file), "--grafana-url", grafana.url, "--share"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"public capacity-p1: {grafana.url}/public-dashboards/" in out


def test_cli_push_errors(grafana: FakeGrafana, config_file: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Test the CLI exit codes: 2 without a token, 1 with a rejected token or an unreachable URL."""
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert main(["dashboards", "push", "-c", str(config_file), "--grafana-url", grafana.url]) == 2
    assert "GRAFANA_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    assert main(["dashboards", "push", "-c", str(config_file), "--grafana-url", grafana.url]) == 1
    assert "rejected the token" in capsys.readouterr().err
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["dashboards", "push", "-c", str(config_file), "--grafana-url", url, "--timeout", "2"]) == 1
    assert "cannot reach Grafana" in capsys.readouterr().err


def test_cli_build_and_check(tmp_path: Path, config_file: Path) -> None:
    """Test `dashboards build --out` then `check` (0), and check after an edit (1)."""
    out = tmp_path / "json"
    assert main(["dashboards", "build", "-c", str(config_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["capacity-p1.json", "machine-detail.json", "machine-fleet.json"]
    assert main(["dashboards", "check", "-c", str(config_file), "--out", str(out)]) == 0
    (out / "machine-fleet.json").write_text("{}")
    assert main(["dashboards", "check", "-c", str(config_file), "--out", str(out)]) == 1
