"""Group commit: the engine's writes to its sink, in order and grouped (no services)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from collector.configfile import load_config
from collector.core.lineprotocol import to_line
from collector.core.model import MachineInfo, State, StateChange
from collector.engine import Engine
from tests.fixtures._ports import until

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"
S = 1_000_000_000


class GatedSink:
    """Records each write; a write returns only when the test opens the gate."""

    def __init__(self) -> None:
        self.writes: list[tuple[list[str], dict[str, Any]]] = []
        self.gate = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.writes.append((list(lines), dict(state or {})))
        await self.gate.wait()


def change(n: int) -> StateChange:
    return StateChange(MachineInfo(id="lathe-01", plant="p"), n * S, State.BUSY, State.IDLE, S, f"change {n}")


async def test_commits_queued_behind_a_running_one_land_in_one_write_in_order() -> None:
    """Test that batches arriving while a commit runs are stored together in the next write, in
    the order they came, with each machine's latest snapshot, and that nothing is written twice."""
    loaded = load_config(EXAMPLE)
    sink = GatedSink()
    engine = Engine(loaded, sink)
    first = engine._enqueue([change(1)])
    await until(lambda: len(sink.writes) == 1, 5, "the first write to start")
    engine._dirty.add("lathe-01")
    second = engine._enqueue([change(2)])
    engine._dirty.add("lathe-01")
    engine._dirty.add("lathe-02")
    third = engine._enqueue([change(3)])
    assert second is third and first is not second
    assert not second.done() and len(sink.writes) == 1  # queued behind the first, not started
    sink.gate.set()
    await asyncio.wait_for(asyncio.shield(third), 5)
    assert first.done()
    assert [lines for lines, _ in sink.writes] == [[to_line(change(1))], [to_line(change(2)), to_line(change(3))]]
    assert set(sink.writes[1][1]) == {"lathe-01", "lathe-02"}
    assert engine.stats.commits == 2 and engine.stats.lines_written == 3


async def test_a_cancelled_awaiter_does_not_cancel_a_shared_commit() -> None:
    """Test that cancelling one task waiting for a commit (a source being stopped) leaves the
    commit it shares with others to finish."""
    loaded = load_config(EXAMPLE)
    sink = GatedSink()
    engine = Engine(loaded, sink)
    waiter = asyncio.create_task(engine._commit([change(1)]))
    await until(lambda: len(sink.writes) == 1, 5, "the write to start")
    shared = engine.commits._tail
    assert shared is not None
    waiter.cancel()
    await asyncio.sleep(0)
    sink.gate.set()
    await asyncio.wait_for(shared, 5)
    assert not shared.cancelled() and engine.stats.commits == 1


class PacedSink(GatedSink):
    """A sink with a sender of its own: the engine's hook runs before each send."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.before_send: Callable[[], Awaitable[None]] | None = None

    def pace(self, before_send: Callable[[], Awaitable[None]]) -> None:
        self.before_send = before_send


def paced(sink: PacedSink, commit_delay: float | None = None) -> Engine:
    """An engine on the example config whose commits ``sink``'s sender paces (as ``run`` sets up)."""
    loaded = load_config(EXAMPLE)
    if commit_delay is not None:
        loaded.config.outbox.commit_delay = commit_delay
    engine = Engine(loaded, sink)
    engine.commits.pace()
    return engine


async def test_at_a_trickle_commits_wait_for_the_senders_next_send() -> None:
    """Test that with a pacing sink, batches at a trickle are held until the sender is about to
    send, then stored in one write before the hook returns (the send that follows has them)."""
    sink = PacedSink()
    engine = paced(sink)
    assert sink.before_send is not None
    first = engine._enqueue([change(1)])
    await asyncio.sleep(0.05)
    second = engine._enqueue([change(2)])
    assert first is second and sink.writes == []  # held, and joined
    await asyncio.wait_for(sink.before_send(), 5)
    assert [lines for lines, _ in sink.writes] == [[to_line(change(1)), to_line(change(2))]]
    await asyncio.wait_for(sink.before_send(), 5)  # nothing held: returns at once, writes nothing
    assert len(sink.writes) == 1


async def test_a_held_commit_goes_after_commit_delay_without_a_send() -> None:
    """Test that a commit held for the sender goes by itself after ``outbox.commit_delay`` (a
    sender stuck retrying an unreachable InfluxDB must not hold messages unacknowledged)."""
    sink = PacedSink()
    engine = paced(sink, commit_delay=0.2)
    held = engine._enqueue([change(1)])
    assert held is not None
    await asyncio.wait_for(asyncio.shield(held), 5)
    assert [lines for lines, _ in sink.writes] == [[to_line(change(1))]]


async def test_a_backlog_batch_is_committed_at_once_even_with_a_pacing_sink() -> None:
    """Test that a large batch (a backlog: its supervisor waits for the commit before reading on)
    is not held for the sender: held, a backlog of readings that change no state would wait a
    flush interval per batch, since the sender sleeps when it finds nothing new to send."""
    sink = PacedSink()
    engine = paced(sink, commit_delay=60)  # held, it would wait past the 5 s below
    written = engine._enqueue([change(1)], hold=False)
    assert written is not None
    await asyncio.wait_for(asyncio.shield(written), 5)  # no send needed
    assert [lines for lines, _ in sink.writes] == [[to_line(change(1))]]


async def test_a_backlog_batch_joining_a_held_commit_releases_it() -> None:
    """Test that a large batch joining a commit held for the sender (another source's trickle,
    or the ticker's roll-ups) makes it go at once: a backlog never waits for the sender."""
    sink = PacedSink()
    engine = paced(sink, commit_delay=60)
    held = engine._enqueue([change(1)])
    joined = engine._enqueue([change(2)], hold=False)
    assert held is joined and joined is not None
    await asyncio.wait_for(asyncio.shield(joined), 5)
    assert [lines for lines, _ in sink.writes] == [[to_line(change(1)), to_line(change(2))]]


async def test_a_held_commit_is_not_waited_for_and_goes_before_the_broker_window_fills() -> None:
    """Test that a supervisor does not wait for a commit held for the sender (the next batches
    join it), that each batch is acknowledged only once the commit is stored, in order, and that
    the commit goes by itself once PACE_MAX_UNACKED messages wait for it: a broker sends only so
    many unacknowledged messages (mosquitto: 20), so holding longer would stall the source."""
    from collector.commits import PACE_MAX_UNACKED, Unsettled

    sink = PacedSink()
    engine = paced(sink, commit_delay=60)
    unsettled = Unsettled()
    acked: list[int] = []
    for n in range(PACE_MAX_UNACKED - 1):
        await asyncio.wait_for(engine._settle([change(n)], lambda n=n: acked.append(n), messages=1,
                                              unsettled=unsettled), 1)  # returns at once: not waited for
    await asyncio.sleep(0.05)
    assert sink.writes == [] and acked == []  # held, nothing acknowledged
    await engine._settle([change(99)], lambda: acked.append(99), messages=1, unsettled=unsettled)
    await until(lambda: len(acked) == PACE_MAX_UNACKED, 5, "the acknowledgements")
    assert len(sink.writes) == 1 and len(sink.writes[0][0]) == PACE_MAX_UNACKED  # one commit for all
    assert acked == [*range(PACE_MAX_UNACKED - 1), 99] and not unsettled.futures


async def test_a_failed_held_commit_acknowledges_nothing_and_fails_the_source() -> None:
    """Test that when a held commit fails, none of its batches is acknowledged (the broker
    delivers them again) and the source's next batch raises the error (its supervisor restarts)."""
    from collector.commits import Unsettled

    class FailingSink(PacedSink):
        async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
            raise OSError("disk full")

    sink = FailingSink()
    engine = paced(sink)
    unsettled = Unsettled()
    acked: list[int] = []
    await engine._settle([change(1)], lambda: acked.append(1), messages=1, unsettled=unsettled)
    assert sink.before_send is not None
    await sink.before_send()
    assert acked == [] and isinstance(unsettled.error, OSError)
    try:
        await engine._settle([change(2)], lambda: acked.append(2), messages=1, unsettled=unsettled)
    except OSError:
        pass
    else:
        raise AssertionError("the failed commit was not raised")
    assert acked == []
