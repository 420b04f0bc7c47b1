"""Keeping a source open: the one supervision loop ``collector run`` (the engine) and
``collector check`` share.

An adapter that fails to connect or loses its source raises; its supervisor tells the owner
why (``source_down``), waits a jittered, capped exponential backoff, and opens the adapter
again. The backoff starts over once a batch arrives. Supervisors may share one ``Opening``, so a
few sources open at a time (a restart storm of 200 servers is paced, not a herd). Adapters
never retry themselves.

What the owner does with a source is its own (the ``Owner`` protocol): the engine runs batches
through the trackers and commits them before acknowledging; check prints them and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import NoReturn, Protocol

from adapters.base import Adapter, SourceConfig, SourceError
from collector.core.backoff import Backoff, Opening

log = logging.getLogger(__name__)

RECONNECT_CAP_S = 10.0
"""The longest wait between two attempts to open a source. A machine's server back after a power
cut is read at most this long after (30 s before: 200 machine tools restarting together were
all read again 23 s after the last server was back)."""
OPENING_AT_ONCE = 16
OPENING_PATIENCE_S = 3.0
"""Sources opening at the same time (connect, session, browse, subscribe), and how long one
open holds its turn at most. 200 OPC UA sessions opened at once (the start, or every machine
restarted together) each took over ten seconds on a small gateway, timed out and started over."""
# What a source's failure looks like when it is the network or the peer: reconnect quietly.
# Anything else is a bug in an adapter: logged with its traceback (once per kind) and counted.
EXPECTED_FAILURES = (SourceError, OSError, TimeoutError, EOFError)


class Owner(Protocol):
    """What a supervisor's owner does with its source."""

    def source_adapter(self, source: SourceConfig) -> AbstractAsyncContextManager[Adapter]:
        """The adapter to open (called in the source's turn to open)."""

    async def source_read(self, source: SourceConfig, adapter: Adapter, progress: Backoff) -> None:
        """Read the open adapter until its stream ends; ``progress.reset()`` on every batch."""

    def source_closed(self, source: SourceConfig) -> None:
        """The adapter is closed (failed, or cancelled)."""

    async def source_down(self, source: SourceConfig, exc: Exception, delay_s: float) -> None:
        """The source failed with ``exc``; it is opened again in ``delay_s``."""


async def supervise(owner: Owner, source: SourceConfig, backoff: Backoff,
                    opening: Opening | None = None) -> NoReturn:
    """Keep ``source`` open for ``owner`` until cancelled."""
    while True:
        try:
            async with contextlib.AsyncExitStack() as opened:
                async with opening.slot() if opening is not None else contextlib.nullcontext():
                    adapter = await opened.enter_async_context(owner.source_adapter(source))
                await owner.source_read(source, adapter, backoff)
            raise SourceError("the adapter's stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc
        finally:
            owner.source_closed(source)
        delay = backoff.next_delay()
        await owner.source_down(source, failure, delay)
        await asyncio.sleep(delay)


class Failures:
    """Why sources went down: the network's or the peer's, or a bug in an adapter (counted in
    ``errors`` by source, and logged with its traceback once per kind)."""

    def __init__(self, errors: dict[str, int]) -> None:
        self.errors = errors
        self._logged: set[str] = set()

    def reason(self, source: str, exc: Exception) -> str:
        if isinstance(exc, EXPECTED_FAILURES):
            return f"source {source} unreachable: {exc or type(exc).__name__}"
        kind = f"{source}:{type(exc).__name__}"
        self.errors[source] = self.errors.get(source, 0) + 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("source %s failed with an unexpected error (a bug: please report it); restarting it",
                      source, exc_info=exc)
        return f"source {source} failed: {type(exc).__name__}: {exc}"


__all__ = ["EXPECTED_FAILURES", "OPENING_AT_ONCE", "OPENING_PATIENCE_S", "RECONNECT_CAP_S", "Failures", "Owner",
           "supervise"]
