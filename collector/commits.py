"""The commit pipeline between the engine and its sink: group commit, pacing to the sink's
sender, and acknowledgements in order.

- **In order.** Each write is queued behind every write queued before it, so what lands is
  always a state the trackers really passed through. A write goes on even if whoever awaits it
  is cancelled.
- **Group commit.** A write joins the queued one that has not reached the sink yet: one
  transaction, one fsync, for every batch that arrived while the previous commit ran. The later
  snapshot of a machine replaces its earlier one.
- **Pacing.** With a sink that sends on its own (the outbox, a ``Paced`` sink), a write queued
  behind none is held until the sender is about to send, ``commit_delay`` at most: at a trickle
  that is one commit per send instead of one per message, and the points leave with the same
  send as before. Not with ``hold=False`` (a batch of ``PACE_BELOW`` events or more, i.e. a
  backlog): its supervisor waits for the commit before it reads on, and a sender that finds
  nothing new to send sleeps a whole flush interval, so holding would cap a drain at a Receive
  Maximum per second.
- **Acknowledgements.** ``settle`` acknowledges a batch once its commit is stored. A held commit
  is not waited for: the acknowledgement is sent, in order, once it is stored, and the
  supervisor reads on; it goes at the latest when ``PACE_MAX_UNACKED`` messages wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.base import SourceError
from collector.sinks import Paced, Sink

PACE_BELOW = 256
"""Batches of fewer events are a trickle: their commit waits for the sender."""
PACE_MAX_UNACKED = 10
"""A held commit goes once this many messages wait for it to be acknowledged: a broker sends
only so many unacknowledged messages (mosquitto: 20 by default), so holding more would stall
the source until the next send."""

State = dict[str, dict[str, Any]]


@dataclass
class _Write:
    """A commit not handed to the sink yet; later commits join it until it starts."""

    lines: list[str]
    state: State
    release: asyncio.Event = field(default_factory=asyncio.Event)  # held for the sender: go now
    done: asyncio.Future[None] | None = None
    unacked: int = 0  # messages whose acknowledgement waits for this write (see settle)


class Unsettled:
    """A source's commits its supervisor did not wait for (held for the sender), each with the
    acknowledgements to send once it is stored, in order."""

    def __init__(self) -> None:
        self.futures: set[asyncio.Future[None]] = set()
        self.error: BaseException | None = None  # a held commit failed: the supervisor raises it

    def add(self, written: asyncio.Future[None], ack: Callable[[], None]) -> None:
        def stored(f: asyncio.Future[None]) -> None:
            self.futures.discard(f)
            if f.cancelled():
                self.error = self.error or SourceError("a commit was cancelled")
            elif f.exception() is not None:
                self.error = self.error or f.exception()
            elif self.error is None:
                ack()  # callbacks run in the order added: acknowledgements keep the messages' order
        self.futures.add(written)
        written.add_done_callback(stored)


class Commits:
    """``on_written(lines)`` is called after each write the sink stored."""

    def __init__(self, sink: Sink, commit_delay_s: float, on_written: Callable[[int], None]) -> None:
        self.sink = sink
        self.commit_delay_s = commit_delay_s
        self.on_written = on_written
        self._tail: asyncio.Future[None] | None = None  # the last write queued
        self._open: _Write | None = None  # the queued write not yet handed to the sink: joinable
        self._paced = False  # the sink's sender takes what is held back before each send
        self._holding: _Write | None = None

    def pace(self) -> None:
        """A sink with a sender of its own calls ``_release`` before each send, so a commit at a
        trickle can wait for it."""
        if isinstance(self.sink, Paced) and self.commit_delay_s > 0:
            self.sink.pace(self._release)
            self._paced = True

    def release_hold(self) -> None:
        """Stopping: no commit waits for the sender any more."""
        self._paced = False
        if self._holding is not None:
            self._holding.release.set()

    async def _release(self) -> None:
        """The sender is about to send: commit what is held back, and wait until it is stored."""
        holding = self._holding
        if holding is not None and holding.done is not None:
            holding.release.set()
            await asyncio.wait([holding.done])

    async def commit(self, lines: list[str], state: State, *, hold: bool = True) -> None:
        written = self.enqueue(lines, state, hold=hold)
        if written is not None:
            await asyncio.shield(written)  # a write is shared (group commit): a cancelled awaiter leaves it be

    async def settle(self, written: asyncio.Future[None] | None, ack: Callable[[], None] | None, *,
                     messages: int = 0, unsettled: Unsettled | None = None) -> None:
        """Acknowledge a batch whose commit is ``written`` once it is stored; a stop or a reload
        that cancels the source meanwhile waits for both, so no batch is committed and left
        unacknowledged (the broker would deliver it again to trackers that already have it)."""
        holding = self._holding
        if (written is not None and ack is not None and unsettled is not None and holding is not None
                and written is holding.done):
            holding.unacked += messages
            if holding.unacked >= PACE_MAX_UNACKED:
                holding.release.set()
            unsettled.add(written, ack)
            return
        if written is not None:
            try:
                await asyncio.shield(written)
            except asyncio.CancelledError:
                await asyncio.wait([written])  # a second cancel must not cancel the shared write
                if ack is not None and not written.cancelled() and written.exception() is None:
                    ack()
                raise
        if ack is not None:
            ack()

    def enqueue(self, lines: list[str], state: State, *, hold: bool = True) -> asyncio.Future[None] | None:
        """Queue ``lines`` and the trackers' ``state`` behind every write queued before (or join
        the one not yet started); returns the write's future (None if nothing was ever written)."""
        if not lines and not state:
            if not hold and self._open is not None:
                self._open.release.set()
            return self._tail
        joinable = self._open
        if joinable is not None:
            joinable.lines += lines
            joinable.state.update(state)
            if not hold:
                joinable.release.set()  # a backlog batch joined a held write: it goes now
            return self._tail
        pending = self._open = _Write(lines, state)
        before = self._tail
        hold = hold and self._paced and (before is None or before.done())
        if hold:
            self._holding = pending

        async def write() -> None:
            try:
                if before is not None and not before.done():
                    await asyncio.wait([before])  # in order; an earlier failure is its own awaiter's to see
                elif hold:
                    try:
                        async with asyncio.timeout(self.commit_delay_s):
                            await pending.release.wait()
                    except TimeoutError:
                        pass
            finally:  # even if cancelled: later commits must not join a write that will not happen
                if self._holding is pending:
                    self._holding = None
                if self._open is pending:
                    self._open = None
            await self.sink.write(pending.lines, pending.state)
            self.on_written(len(pending.lines))

        self._tail = pending.done = asyncio.ensure_future(write())
        return self._tail
