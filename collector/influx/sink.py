"""The outbox sink: the engine appends once, each output's sender drains its own cursor.

- ``write`` returns once the lines are committed to SQLite (acknowledge only what is stored);
  a point is stored once, whatever the number of outputs.
- Each output (``outputs:``, or ``influx:`` as one output named ``influx``) has a sender task
  (collector/influx/sender.py) with its own cursor, retries, dead letter, bound and metrics,
  so an output that is down delays no other.
- On stop every sender keeps draining for up to ``stop_deadline``, then leaves the rest on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import orjson

from collector.influx.config import InfluxSettings, OutboxSettings, OutputSettings, as_output
from collector.influx.outbox import OutboxStore
from collector.influx.selection import Selection
from collector.influx.sender import COUNTERS, IN_FLIGHT, WRITE_BUCKETS_S, OutputSender
from collector.influx.writers import Writer, make_writer

__all__ = ["IN_FLIGHT", "WRITE_BUCKETS_S", "OutboxSink"]

log = logging.getLogger(__name__)


class OutboxSink:
    def __init__(self, outputs: InfluxSettings | Sequence[OutputSettings], outbox: OutboxSettings,
                 writer: Writer | None = None, *, writers: Mapping[str, Writer] | None = None,
                 public: Iterable[str] = ()) -> None:
        if isinstance(outputs, InfluxSettings) and not isinstance(outputs, OutputSettings):
            outputs = [as_output(outputs)]
        elif isinstance(outputs, OutputSettings):
            outputs = [outputs]
        if not outputs:
            raise ValueError("no output: set `influx` or `outputs`")
        self.outputs = list(outputs)
        self.settings = outbox
        self.public: frozenset[str] = frozenset(public)
        self._db = ThreadPoolExecutor(1, thread_name_prefix="outbox")  # SQLite: one thread owns it
        self.store: OutboxStore | None = None
        self.senders: dict[str, OutputSender] = {}
        for i, output in enumerate(self.outputs):
            chosen = (writers or {}).get(output.name) or (writer if i == 0 and writer is not None else None)
            self.senders[output.name] = OutputSender(
                output, outbox, chosen or make_writer(output), Selection(output, self._is_public),
                self._require, self._run)
        self._tasks: list[asyncio.Task[None]] = []

    def _is_public(self, machine: str) -> bool:
        return machine in self.public

    def set_public(self, machines: Iterable[str]) -> None:
        """The running config's public machines (at start and after each reload): outputs
        filtered on ``public`` send only these machines' points from now on, stored ones included."""
        self.public = frozenset(machines)

    def corrects(self) -> bool:
        """Correction records go through the outbox in order; each output applies them in its
        turn (collector/influx/correctors.py)."""
        return True

    @property
    def influx(self) -> OutputSettings:
        return self.outputs[0]

    @property
    def counters(self) -> dict[str, int]:
        """Every output's counters, summed."""
        return {key: sum(s.counters[key] for s in self.senders.values()) for key in COUNTERS}

    # -- Sink -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.store = await self._run(OutboxStore, self.settings.path, sync=self.settings.sync,
                                     outputs=list(self.senders))
        if self.store.removed:
            log.warning("outbox %s: output(s) %s no longer configured: their cursors are removed",
                        self.settings.path, ", ".join(self.store.removed))
        for name in self.senders:
            if self.store.pending_points[name]:
                log.info("outbox %s: output %s resumes with %d point(s) not yet delivered", self.settings.path,
                         name, self.store.pending_points[name])
        self._tasks = [asyncio.create_task(s.send_forever(), name=f"outbox-sender-{s.name}")
                       for s in self.senders.values()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.senders.values():
            s.wake.set()
        if self._tasks:
            try:
                drains = asyncio.gather(*(s.drain_for_stop() for s in self.senders.values()))
                await asyncio.wait_for(asyncio.shield(drains), self.settings.stop_deadline)
            except TimeoutError:
                pass
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.writer.close() for s in self.senders.values()))
        if self.store is not None:
            for name in self.senders:
                left = self.store.pending_points[name]
                if left:
                    log.info("outbox: %d point(s) of output %s left on disk for the next start", left, name)
            await self._run(self.store.close)
        self._db.shutdown()

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        store = self._require()
        encoded = {mid: _encode(snap) for mid, snap in state.items()} if state else None
        await self._run(store.append, list(lines), encoded)
        for s in self.senders.values():
            if store.pending_bytes[s.name] > s.max_bytes:
                s.dropped(await self._run(store.enforce_bound, s.max_bytes, s.name))
            if store.pending_points[s.name] >= self.settings.batch_size:
                s.wake.set()

    def pace(self, before_send: Callable[[], Awaitable[None]]) -> None:
        """The engine holds commits back for the senders: each awaits ``before_send`` (which
        commits them) before it sends; an output that is down does not, the others still do."""
        for s in self.senders.values():
            s.before_send = before_send

    async def load_state(self) -> dict[str, tuple[dict[str, Any], int]]:
        """The trackers' last committed state: machine id -> (snapshot, when it was committed)."""
        raw: dict[str, tuple[bytes, int]] = await self._run(self._require().load_state)
        return {mid: (orjson.loads(snap), saved) for mid, (snap, saved) in raw.items()}

    # -- figures for /metrics -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The outbox as a whole: what it stores (not yet passed by every output) and every
        output's figures summed; ``output_stats`` has them per output."""
        store = self.store
        oldest = store.oldest if store is not None else None
        counters = self.counters
        return {
            "depth_points": store.points if store else 0,
            "depth_bytes": store.bytes if store else 0,
            "oldest_age_seconds": 0.0 if oldest is None else max(0.0, time.time() - oldest),
            "points_written_total": counters["written"],
            "retries_total": counters["retries"],
            "dead_lettered_total": counters["dead_lettered"],
            "dropped_total": counters["dropped"],
            "write_latency_seconds": max(s.last_latency_s for s in self.senders.values()),
            "link_up": int(all(s.link_up for s in self.senders.values())),
        }

    def output_stats(self) -> dict[str, dict[str, Any]]:
        return {name: s.stats() for name, s in self.senders.items()} if self.store is not None else {}

    def write_durations(self) -> tuple[list[tuple[float, int]], float]:
        """Durations of the successful writes (every output), for a Prometheus histogram: the
        cumulative count per upper bound (the last one ``inf``) and the sum in seconds."""
        per = [s.write_durations() for s in self.senders.values()]
        buckets = [(le, sum(p[0][i][1] for p in per)) for i, (le, _) in enumerate(per[0][0])]
        return buckets, sum(p[1] for p in per)

    def _require(self) -> OutboxStore:
        if self.store is None:
            raise RuntimeError("the outbox is not open: use `async with sink:`")
        return self.store

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, lambda: fn(*args, **kwargs))


def _encode(snapshot: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(snapshot)
    except TypeError:  # an integer value beyond 64 bits: the standard library has no such limit
        return json.dumps(snapshot).encode()
