"""The outbox sink: the engine appends, a sender task drains to InfluxDB.

- ``write`` returns once the lines are committed to SQLite (acknowledge only what is stored).
- The sender drains oldest-first at least every ``flush_interval`` (at once when a full batch
  is waiting); a delivered batch is deleted, a failed one stays and is retried after a capped,
  jittered exponential backoff (or the server's Retry-After). A batch refused for its data is
  bisected so the good points land and only the bad ones go to the dead-letter table.
- On stop it keeps draining for up to ``stop_deadline``, then leaves the rest on disk.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

import orjson

from collector.core.backoff import Backoff
from collector.influx.config import InfluxSettings, OutboxSettings
from collector.influx.outbox import Chunk, OutboxStore
from collector.influx.writers import WriteError, Writer, make_writer

WRITE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the write-duration histogram (prometheus-client's default buckets)."""

log = logging.getLogger(__name__)
T = TypeVar("T")
IN_FLIGHT = 3  # requests on the wire at once: InfluxDB parses one while the next arrives


class OutboxSink:
    def __init__(self, influx: InfluxSettings, outbox: OutboxSettings, writer: Writer | None = None) -> None:
        self.influx = influx
        self.settings = outbox
        self.writer = writer or make_writer(influx)
        self._db = ThreadPoolExecutor(1, thread_name_prefix="outbox")  # SQLite: one thread owns it
        self.store: OutboxStore | None = None
        self._wake = asyncio.Event()
        self._before_send: Callable[[], Awaitable[None]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._stopping = False
        self._logged: set[str] = set()
        self.counters = {"written": 0, "retries": 0, "dead_lettered": 0, "dropped": 0, "requests": 0}
        self.last_latency_s = 0.0
        self._durations = [0] * (len(WRITE_BUCKETS_S) + 1)  # writes per bucket of WRITE_BUCKETS_S, then +Inf
        self._durations_sum = 0.0
        self.link_up: bool | None = None

    # -- Sink -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.store = await self._run(OutboxStore, self.settings.path, sync=self.settings.sync)
        if self.store.points:
            log.info("outbox %s: resuming with %d point(s) not yet delivered", self.settings.path, self.store.points)
        self._sender = asyncio.create_task(self._send_forever(), name="outbox-sender")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        self._wake.set()
        if self._sender is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._drain_for_stop()), self.settings.stop_deadline)
            except TimeoutError:
                pass
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        await self.writer.close()
        if self.store is not None:
            left = self.store.points
            if left:
                log.info("outbox: %d point(s) left on disk for the next start", left)
            await self._run(self.store.close)
        self._db.shutdown()

    async def write(self, lines: Sequence[str], state: Mapping[str, dict[str, Any]] | None = None) -> None:
        store = self._require()
        encoded = {mid: _encode(snap) for mid, snap in state.items()} if state else None
        await self._run(store.append, list(lines), encoded)
        max_bytes = int(self.settings.max_mb * 1024 * 1024)
        if store.bytes > max_bytes:
            dropped = await self._run(store.enforce_bound, max_bytes)
            if dropped:
                self.counters["dropped"] += dropped
                log.warning("outbox over its bound of %g MB: dropped the %d oldest point(s) (%d so far)",
                            self.settings.max_mb, dropped, self.counters["dropped"])
        if store.points >= self.settings.batch_size:
            self._wake.set()

    def pace(self, before_send: Callable[[], Awaitable[None]]) -> None:
        """The engine holds commits back for the sender: it awaits ``before_send`` (which
        commits them) before each send."""
        self._before_send = before_send

    async def load_state(self) -> dict[str, tuple[dict[str, Any], int]]:
        """The trackers' last committed state: machine id -> (snapshot, when it was committed)."""
        raw: dict[str, tuple[bytes, int]] = await self._run(self._require().load_state)
        return {mid: (orjson.loads(snap), saved) for mid, (snap, saved) in raw.items()}

    # -- figures for /metrics -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        store = self.store
        oldest = store.oldest if store is not None else None
        return {
            "depth_points": store.points if store else 0,
            "depth_bytes": store.bytes if store else 0,
            "oldest_age_seconds": 0.0 if oldest is None else max(0.0, time.time() - oldest),
            "points_written_total": self.counters["written"],
            "retries_total": self.counters["retries"],
            "dead_lettered_total": self.counters["dead_lettered"],
            "dropped_total": self.counters["dropped"],
            "write_latency_seconds": self.last_latency_s,
            "link_up": int(bool(self.link_up)),
        }

    def write_durations(self) -> tuple[list[tuple[float, int]], float]:
        """Durations of the successful writes to InfluxDB, for a Prometheus histogram: the
        cumulative count per upper bound (the last one ``inf``) and the sum in seconds."""
        return list(zip((*WRITE_BUCKETS_S, math.inf), itertools.accumulate(self._durations), strict=True)), \
            self._durations_sum

    # -- the sender ---------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        await self._startup_check()
        backoff = Backoff(self.settings.retry_initial, self.settings.retry_max)
        while True:
            try:
                if self._before_send is not None:
                    await self._before_send()
                sent = await self._send_one()
            except WriteError as exc:
                self.counters["retries"] += 1
                self._link(False, exc)
                # the server's Retry-After wins and does not count as a backoff step
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                await self._sleep(delay)
                continue
            backoff.reset()
            if not sent:
                self._wake.clear()
                await self._sleep(self.settings.flush_interval)

    async def _send_one(self) -> bool:
        """Deliver the oldest batches, several requests in flight (InfluxDB parses one while the
        next is on the wire); False when the outbox is empty."""
        store = self._require()
        size = self.settings.batch_size
        chunks: list[Chunk] = await self._run(store.peek, size * IN_FLIGHT)
        if not chunks:
            return False
        groups: list[list[Chunk]] = [[]]
        for chunk in chunks:
            if groups[-1] and sum(c.points for c in groups[-1]) + chunk.points > size:
                groups.append([])
            groups[-1].append(chunk)
        results = await asyncio.gather(*(self._deliver(g) for g in groups), return_exceptions=True)
        delivered = [c.id for g, r in zip(groups, results, strict=True) if r is None for c in g]
        await self._run(store.ack, delivered)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        self._link(True, None)
        return True

    async def _deliver(self, chunks: list[Chunk]) -> None:
        body = b"\n".join(c.body for c in chunks)
        try:
            await self._write(body, sum(c.points for c in chunks))
        except WriteError as exc:
            if exc.kind != "data":
                raise
            await self._bisect([line for c in chunks for line in c.lines], exc)

    async def _write(self, body: bytes, points: int) -> None:
        start = time.perf_counter()
        self.counters["requests"] += 1
        await self.writer.write(body)
        took = self.last_latency_s = time.perf_counter() - start
        self._durations[bisect.bisect_left(WRITE_BUCKETS_S, took)] += 1
        self._durations_sum += took
        self.counters["written"] += points

    async def _bisect(self, lines: list[str], exc: WriteError) -> None:
        """Land the good points of a refused batch; dead-letter the bad ones."""
        if len(lines) == 1:
            await self._run(self._require().dead_letter, lines, str(exc))
            self.counters["dead_lettered"] += 1
            self._once(f"dead:{exc.status}", logging.ERROR,
                       "InfluxDB refused a point (%s); moved to the dead-letter table of %s: %.200s",
                       exc, self.settings.path, lines[0])
            return
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            try:
                await self._write("\n".join(part).encode(), len(part))
            except WriteError as inner:
                if inner.kind != "data":
                    raise
                await self._bisect(part, inner)

    async def _startup_check(self) -> None:
        try:
            target = await self.writer.check()
        except WriteError as exc:
            log.error("InfluxDB check failed: %s; buffering in the outbox and retrying", exc)
            self.link_up = False
        else:
            log.info("writing to %s", target)

    async def _drain_for_stop(self) -> None:
        while True:
            try:
                if not await self._send_one():
                    return
            except WriteError:
                return

    def _link(self, up: bool, exc: WriteError | None) -> None:
        if up and self.link_up is False:
            log.info("InfluxDB reachable again; draining %d point(s)", self._require().points)
        elif not up and self.link_up is not False:
            log.warning("writing to InfluxDB failed: %s; keeping points in the outbox and retrying", exc)
        self.link_up = up

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):  # not wait_for: on 3.11 it can swallow a cancellation
                await self._wake.wait()
        except TimeoutError:
            pass

    def _once(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)

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
