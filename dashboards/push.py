"""Push the boards to a running Grafana over its HTTP API (grafana-client), idempotently:
create or update the data source, the folder and the dashboards; with ``share``, make the
capacity boards public and return their URLs.

Endpoints (Grafana HTTP API docs): ``GET /api/health``; ``GET|POST /api/datasources``,
``PUT /api/datasources/uid/:uid``; ``GET /api/folders/:uid``, ``POST /api/folders``;
``POST /api/dashboards/db``; ``GET|POST /api/dashboards/uid/:uid/public-dashboards/`` and
``PATCH /api/dashboards/uid/:uid/public-dashboards/:publicUid`` (Grafana 10+; grafana-client has
no method for these, so they go through its HTTP client).

Errors::

    PushError                 anything that stops the push; the message says what to do
     ├── Unreachable          no answer from the URL (DNS, refused, timeout, TLS)
     ├── Unauthorized         401/403: the token is wrong or lacks the role
     └── TooOld               Grafana has no public dashboards API (before 10.0, or disabled)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from collector.core.errors import CollectorError
from collector.influx.config import InfluxSettings
from dashboards.boards import Board
from dashboards.config import DashboardSettings

log = logging.getLogger(__name__)

JSON = dict[str, Any]
T = TypeVar("T")
PUBLIC_DASHBOARDS_SINCE = 10


class PushError(CollectorError):
    """The push cannot go on."""


class Unreachable(PushError):
    pass


class Unauthorized(PushError):
    pass


class TooOld(PushError):
    pass


@dataclass
class PushResult:
    grafana_version: str = ""
    datasource: str = "skipped"  # created | updated | provisioned (left alone) | skipped
    folder: str = "exists"       # created | exists
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> URL
    public: dict[str, str] = field(default_factory=dict)      # uid -> public URL


class Pusher:
    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api = GrafanaApi.from_url(self.url, credential=token, timeout=timeout)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one API call; turn transport and auth failures into clear errors."""
        try:
            return fn(*args, **kwargs)
        except GrafanaUnauthorizedError as exc:
            raise Unauthorized(f"Grafana at {self.url} rejected the token (401) while trying to {what}: "
                               "set GRAFANA_TOKEN to a valid service account token") from exc
        except GrafanaClientError as exc:
            if exc.status_code == 403:
                raise Unauthorized(f"the token may not {what} (403 {_message(exc)}): give its service account "
                                   "the Editor role (Admin to create data sources)") from exc
            raise
        except GrafanaException as exc:
            if exc.status_code == 0:  # grafana-client's code for timeouts and transport errors
                raise Unreachable(f"cannot reach Grafana at {self.url}: {exc}") from exc
            raise
        except niquests.exceptions.RequestException as exc:
            raise Unreachable(f"cannot reach Grafana at {self.url}: {exc}") from exc

    # -- steps -------------------------------------------------------------------------------

    def version(self) -> str:
        health: JSON = self._call("read /api/health", self.api.client.GET, "/health")
        return str(health.get("version", ""))

    def datasource(self, settings: DashboardSettings, influx: InfluxSettings) -> str:
        body = datasource_body(settings, influx)
        uid = settings.datasource_uid
        existing = self._get("read the data source", f"/datasources/uid/{uid}")
        if existing is not None and existing.get("readOnly"):
            return "provisioned"  # from a provisioning file: Grafana refuses API updates (403)
        if existing is not None:
            self._call("update the data source", self.api.client.PUT, f"/datasources/uid/{uid}", json=body)
            return "updated"
        self._call("create the data source", self.api.client.POST, "/datasources", json=body)
        return "created"

    def folder(self, settings: DashboardSettings) -> str:
        if self._get("read the folder", f"/folders/{settings.folder_uid}") is not None:
            return "exists"
        self._call("create the folder", self.api.client.POST, "/folders",
                   json={"uid": settings.folder_uid, "title": settings.folder_title})
        return "created"

    def dashboard(self, board: Board, folder_uid: str) -> str:
        body = {"dashboard": board.json, "folderUid": folder_uid, "overwrite": True,
                "message": "collector dashboards push"}
        reply: JSON = self._call(f"save dashboard {board.uid}", self.api.client.POST, "/dashboards/db", json=body)
        return self.url + str(reply.get("url", f"/d/{board.uid}"))

    def require_public_dashboards(self, version: str) -> None:
        """Refuse early when /api/health names a version without the API (it may hide the
        version; then the 404 of the endpoint itself tells)."""
        if version and _major(version) < PUBLIC_DASHBOARDS_SINCE:
            raise TooOld(f"Grafana {version} at {self.url} has no public dashboards API: "
                         f"--share needs Grafana {PUBLIC_DASHBOARDS_SINCE} or later")

    def share(self, board: Board, version: str) -> str:
        self.require_public_dashboards(version)
        path = f"/dashboards/uid/{board.uid}/public-dashboards/"
        try:
            current: JSON | None = self._call(f"read the public dashboard of {board.uid}", self.api.client.GET, path)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            current = None
        if current and current.get("accessToken"):
            if not current.get("isEnabled"):
                self._call(f"enable the public dashboard of {board.uid}", self.api.client.PATCH,
                           f"{path}{current['uid']}", json={"isEnabled": True})
            return f"{self.url}/public-dashboards/{current['accessToken']}"
        body = {"isEnabled": True, "timeSelectionEnabled": False, "annotationsEnabled": False, "share": "public"}
        try:
            created: JSON = self._call(f"make {board.uid} public", self.api.client.POST, path, json=body)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                raise TooOld(f"Grafana {version or '(version hidden)'} at {self.url} answered 404 to POST /api{path}: "
                             "public dashboards are disabled or unsupported there "
                             "(Grafana 10+, feature `publicDashboards`)") from exc
            raise
        return f"{self.url}/public-dashboards/{created['accessToken']}"

    def _get(self, what: str, path: str) -> JSON | None:
        """The object at ``path``, None if Grafana answers 404."""
        try:
            found: JSON = self._call(what, self.api.client.GET, path)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise
        return found


def _message(exc: GrafanaException) -> str:
    response = exc.response
    return str(response.get("message", "")) if isinstance(response, dict) else str(response or "")


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return PUBLIC_DASHBOARDS_SINCE  # unparsable: let the endpoint answer for itself


def datasource_body(settings: DashboardSettings, influx: InfluxSettings) -> JSON:
    """The InfluxQL data source for the collector's InfluxDB: user/password for the v1 API, an
    ``Authorization: Token`` header for v2/v3 (whose InfluxQL database is the bucket's DBRP name)."""
    json_data: JSON = {"version": "InfluxQL", "httpMode": "POST",
                       "dbName": influx.database if influx.api == "v1" else influx.bucket}
    secure: JSON = {}
    body: JSON = {"uid": settings.datasource_uid, "name": settings.datasource_name, "type": "influxdb",
                  "access": "proxy", "url": influx.url, "isDefault": False}
    if influx.api == "v1":
        if influx.username:
            body["user"] = influx.username
        if influx.password is not None:
            secure["password"] = influx.password.get_secret_value()
    elif influx.token is not None:
        json_data["httpHeaderName1"] = "Authorization"
        secure["httpHeaderValue1"] = f"Token {influx.token.get_secret_value()}"
    body["jsonData"] = json_data
    body["secureJsonData"] = secure
    return body


def push(pusher: Pusher, boards: list[Board], settings: DashboardSettings, influx: InfluxSettings | None,
         *, share: bool) -> PushResult:
    result = PushResult(grafana_version=pusher.version())
    log.info("Grafana %s at %s", result.grafana_version, pusher.url)
    if share:
        pusher.require_public_dashboards(result.grafana_version)  # before anything is written
    if influx is not None:
        result.datasource = pusher.datasource(settings, influx)
        log.info("data source %s %s", settings.datasource_uid, result.datasource)
    else:
        log.warning("config has no influx section: data source %s left as it is", settings.datasource_uid)
    result.folder = pusher.folder(settings)
    for board in boards:
        result.dashboards[board.uid] = pusher.dashboard(board, settings.folder_uid)
        log.info("dashboard %s saved", board.uid)
    if share:
        for board in boards:
            if board.shared:
                result.public[board.uid] = pusher.share(board, result.grafana_version)
                log.info("dashboard %s public", board.uid)
    return result
