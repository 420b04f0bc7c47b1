"""Logging set-up for every command: plain text or one JSON object per line (``--log-format
json``, for log shippers), HTTP libraries' per-request lines kept out of the journal, and
secrets from the config masked in every line as a last line of defence (the code never logs
them on purpose; this catches a library or an exception text that would)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "********"
# httpx logs every request at INFO ("HTTP Request: POST .../write 204"): one line per InfluxDB
# write buries what matters in a gateway's journal.
# asyncua logs every publish response and session step at INFO: per-message chatter, not events.
QUIET = ("httpx", "httpcore", "asyncua")
MIN_SECRET = 4
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
