"""Logging set-up for every command: plain text or one JSON object per line (``--log-format
json``, for log shippers), HTTP libraries' per-request lines kept out of the journal, a
protocol library's repeated lines logged once a minute, and secrets from the config masked in
every line as a last line of defence (the code never logs them on purpose; this catches a
library or an exception text that would)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "********"
# httpx logs every request at INFO ("HTTP Request: POST .../write 204"): one line per InfluxDB
# write buries what matters in a gateway's journal.
# asyncua logs every publish response and session step at INFO: per-message chatter, not events.
QUIET = ("httpx", "httpcore", "asyncua")
MIN_SECRET = 4
# asyncua logs one lost session from several places (the server's fault, the publish loop's
# traceback, a close that finds the connection gone): 200 machine tools starting and restarting
# together gave 13,000 lines (bench/opcua_fleet.py). The collector says what matters once per source (lost,
# reconnecting); each of asyncua's messages goes to the log once a minute, with a count of the
# ones held back.
REPEATS_FROM = ("asyncua",)
REPEAT_EVERY_S = 60.0
SEEN_MAX = 1000
HANDLER_NAME = "collector"  # shorter values would mask ordinary words


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "name": "logger", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_SECRETS)
    handler.addFilter(_REPEATS)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call only: a host's own handlers stay
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


class _SecretFilter(logging.Filter):
    """Replaces known secret values in a record's message, arguments and exception text."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self._mask(text) != text:
                record.exc_text = self._mask(text)
                record.exc_info = None
        return True

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


_SECRETS = _SecretFilter()


class RepeatFilter(logging.Filter):
    """Passes a record of the ``loggers`` (and their children) only if the same logger did not
    pass the same message (its template, before arguments) within ``every_s``; the next one
    that passes says how many were held back. Debug records always pass (asked for)."""

    def __init__(self, loggers: tuple[str, ...], every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.loggers = loggers
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, template) -> (passed at, held since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not any(
                record.name == n or record.name.startswith(n + ".") for n in self.loggers):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        if len(self._seen) > SEEN_MAX:  # messages formatted before logging are all different: forget the old
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every_s}
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} [{seen[1]} more like this in the last {self.every_s:g}s not logged]"
        return True


_REPEATS = RepeatFilter(REPEATS_FROM, REPEAT_EVERY_S)


def mask_secrets(values: Iterable[str]) -> None:
    """Mask these values in every log line from now on (longest first, so a secret that contains
    another is masked whole)."""
    found = {v for v in values if len(v) >= MIN_SECRET}
    _SECRETS.secrets = sorted(set(_SECRETS.secrets) | found, key=len, reverse=True)


def secrets_of(model: Any) -> list[str]:
    """Every ``SecretStr`` value in a config model, however deep."""
    out: list[str] = []
    if isinstance(model, SecretStr):
        out.append(model.get_secret_value())
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            out += secrets_of(getattr(model, name))
    elif isinstance(model, list | tuple):
        for item in model:
            out += secrets_of(item)
    elif isinstance(model, dict):
        for item in model.values():
            out += secrets_of(item)
    return out
