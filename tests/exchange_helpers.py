"""Offers as a plant's feed publishes them (valid against docs/capacity-feed.schema.json), for
the exchange's tests: built here so each test states only what it varies."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures._ports import free_port, port_open, wait_for
from tests.fixtures._proc import COLLECTOR, collector_env

PREFIX = "capacity"
HOUR = dt.timedelta(hours=1)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def offer(plant: str, machine: str, now: dt.datetime, *, state: str = "idle", kind: str = "mill",
          capabilities: dict[str, Any] | None = None, share: float | None = 0.5,
          shares: list[float | None] | None = None, updated: dt.datetime | None = None,
          threshold: float = 0.5, heard: dt.datetime | bool | None = True,
          silence: tuple[str, ...] | None = ("status_topic",)) -> dict[str, Any]:
    """``heard``: evidence.last_heard (True: now); ``silence``: evidence.silence_detected_by, None:
    no evidence at all (a feed from before it)."""
    start = now.replace(minute=0, second=0, microsecond=0)
    idle = state == "idle"
    since = iso(now - HOUR)
    last_heard = iso(now) if heard is True else iso(heard) if isinstance(heard, dt.datetime) else None
    evidence = {} if silence is None else {"evidence": {"last_heard": last_heard,
                                                        "silence_detected_by": list(silence)}}
    return {
        **evidence,
        "machine": machine, "name": machine.title(), "plant": plant, "line": "line-1", "kind": kind,
        "nameplate": {}, "capabilities": capabilities if capabilities is not None else {"process": "milling"},
        "state": state, "since": since, "free_now": idle, "idle_since": since if idle else None,
        "free_hours": {"last_24h": 3.0, "last_7d": 20.0},
        "forecast": {"timezone": "UTC", "threshold": threshold, "start": start.isoformat(),
                     "start_hour_of_week": start.weekday() * 24 + start.hour,
                     "idle_share": shares if shares is not None else [share] * 168, "windows": []},
        "updated": iso(updated or now),
    }


def payload(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def status(plant: str, online: bool, now: dt.datetime) -> bytes:
    return json.dumps({"plant": plant, "online": online, "updated": iso(now)}).encode()


# -- a running exchange (the CLI, as a subprocess) ---------------------------------------------------

class RunningExchange:
    """``collector exchange`` started from this checkout; ``get`` reads its HTTP API."""

    def __init__(self, broker_port: int, tmp: Path, prefix: str = PREFIX, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"exchange-{self.port}.log"
        self.args = [*COLLECTOR, "exchange", "--broker", f"127.0.0.1:{broker_port}", "--prefix", prefix,
                     "--listen", f"127.0.0.1:{self.port}", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> RunningExchange:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, env=collector_env(), stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for(lambda: port_open(self.port), 20, f"the exchange on port {self.port}")
            if ready:
                wait_for(lambda: httpx.get(f"{self.base}/healthz").status_code == 200, 20, "the exchange subscribed")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"the exchange did not start: {self.log.read_text()}") from None
        return self

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.base}{path}", timeout=10)
        response.raise_for_status()
        return response.json() if response.headers["content-type"].startswith("application/json") else response.text

    def status(self, path: str) -> int:
        return httpx.get(f"{self.base}{path}", timeout=10).status_code

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc = None


@contextmanager
def exchanges(broker_port: int, tmp: Path, n: int = 1, prefix: str = PREFIX,
              *extra: str) -> Iterator[list[RunningExchange]]:
    running: list[RunningExchange] = []
    try:
        for _ in range(n):
            running.append(RunningExchange(broker_port, tmp, prefix, *extra).start())
        yield running
    finally:
        for ex in running:
            ex.stop()


def comparable(offers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What two exchanges must agree on (not when each received an offer, nor the age when asked)."""
    return [(o["plant"], o["machine"], o["state"], o["free_now"], o["exchange"]["plant_online"],
             json.dumps(o["capabilities"], sort_keys=True), o["forecast"]["idle_share"]) for o in offers]
