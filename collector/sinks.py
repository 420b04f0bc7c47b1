"""Where line protocol goes. A sink acknowledges a ``write`` only once the lines are stored
(durably, for the outbox), so the engine never holds data it believes was delivered."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TextIO, runtime_checkable


class Sink(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Store ``lines``; a durable sink stores ``state`` (machine id -> tracker snapshot) in
        the same transaction, and ``load_state`` gives it back on the next start."""
        ...


# Abilities a sink may have beyond ``write``, declared here and checked with ``isinstance``.

@runtime_checkable
class Paced(Protocol):
    """The sink sends on its own schedule and calls ``before_send`` first: a commit may wait for
    it (collector/commits.py)."""

    def pace(self, before_send: Callable[[], Awaitable[None]]) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """The sink keeps the trackers' state with the points: machine id -> (snapshot, when saved)."""

    async def load_state(self) -> dict[str, tuple[dict[str, Any], int]]: ...


@runtime_checkable
class Measured(Protocol):
    """The sink has figures for /metrics: its own, per output, and its write durations."""

    def stats(self) -> dict[str, Any]: ...

    def output_stats(self) -> dict[str, dict[str, Any]]: ...

    def write_durations(self) -> tuple[list[tuple[float, int]], float]: ...


@runtime_checkable
class Filtered(Protocol):
    """The sink filters outputs on ``public``: a reload hands it the machines public now."""

    def set_public(self, machines: Iterable[str]) -> None: ...


@runtime_checkable
class Correcting(Protocol):
    """The sink applies correction records (collector/core/correction.py) to what it stored:
    the engine writes one after the clock stepped back."""

    def corrects(self) -> bool: ...


class PrintSink:
    """``collector run --print``: line protocol to stdout, one point per line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.flush()

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        for line in lines:
            self._stream.write(line + "\n")
        self._stream.flush()


class NullSink:
    """Discards everything (the demo, which only shows the board)."""

    def __init__(self) -> None:
        self.count = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.count += len(lines)
