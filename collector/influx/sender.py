"""One output's sender: drains the rows after its cursor in the outbox to its server.

- It reads the oldest rows it has not passed, applies its selection (machine filter, field
  policy), sends them with several requests in flight, and moves its cursor past the longest
  run of delivered rows (a batch delivered after a failed one is sent again with it: a point
  has the same measurement, tags and time each time, so the repeat overwrites itself).
- A failed write is retried after a capped, jittered exponential backoff (or the server's
  Retry-After); a batch refused for its data is bisected so the good points land and only the
  bad ones go to this output's dead letter.
- Each output runs its own task with its own backoff: an output that is down sleeps in its
  backoff and holds nothing the others need (the SQLite thread is held only for a read or a
  cursor move, never across a request).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from collector.core.backoff import Backoff
from collector.core.correction import Correction
from collector.influx.config import OutboxSettings, OutputSettings
from collector.influx.correctors import make_corrector
from collector.influx.outbox import CORRECTION, Chunk, OutboxStore
from collector.influx.selection import Selection
from collector.influx.writers import WriteError, Writer

WRITE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the write-duration histogram (prometheus-client's default buckets)."""

IN_FLIGHT = 3  # requests on the wire at once: InfluxDB parses one while the next arrives
COUNTERS = ("written", "retries", "dead_lettered", "dropped", "requests", "filtered", "unreadable", "corrected",
            "uncorrected")

log = logging.getLogger("collector.influx.sink")

Run = Callable[..., Awaitable[Any]]


class OutputSender:
    def __init__(self, output: OutputSettings, outbox: OutboxSettings, writer: Writer, selection: Selection,
                 store: Callable[[], OutboxStore], run: Run) -> None:
        self.output = output
        self.name = output.name
        self.settings = outbox
        self.writer = writer
        self.corrector = make_corrector(writer)
        self._correcting = asyncio.Lock()
        self._sending = asyncio.Lock()
        self.selection = selection
        self._store = store
        self._run = run  # runs a store call on the outbox's one SQLite thread
        self.wake = asyncio.Event()
        self.before_send: Callable[[], Awaitable[None]] | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_latency_s = 0.0
        self.durations = [0] * (len(WRITE_BUCKETS_S) + 1)  # writes per bucket of WRITE_BUCKETS_S, then +Inf
        self.durations_sum = 0.0
        self.link_up: bool | None = None
        self._logged: set[str] = set()

    @property
    def max_bytes(self) -> int:
        return int((self.output.max_mb or self.settings.max_mb) * 1024 * 1024)

    def stats(self) -> dict[str, Any]:
        store = self._store()
        oldest = store.pending_oldest.get(self.name)
        return {
            "depth_points": store.pending_points.get(self.name, 0),
            "depth_bytes": store.pending_bytes.get(self.name, 0),
            "oldest_age_seconds": 0.0 if oldest is None else max(0.0, time.time() - oldest),
            "points_written_total": self.counters["written"],
            "points_filtered_total": self.counters["filtered"],
            "retries_total": self.counters["retries"],
            "dead_lettered_total": self.counters["dead_lettered"],
            "dropped_total": self.counters["dropped"],
            "points_corrected_total": self.counters["corrected"],
            "corrections_refused_total": self.counters["uncorrected"],
            "write_latency_seconds": self.last_latency_s,
            "link_up": int(bool(self.link_up)),
        }

    def write_durations(self) -> tuple[list[tuple[float, int]], float]:
        return list(zip((*WRITE_BUCKETS_S, math.inf), itertools.accumulate(self.durations), strict=True)), \
            self.durations_sum

    def dropped(self, points: int) -> None:
        if points:
            self.counters["dropped"] += points
            log.warning("output %s: backlog over its bound of %g MB: dropped its %d oldest point(s) (%d so far)",
                        self.name, self.max_bytes / 1024 / 1024, points, self.counters["dropped"])

    # -- the loop -------------------------------------------------------------------------------

    async def send_forever(self) -> None:
        await self._startup_check()
        backoff = Backoff(self.settings.retry_initial, self.settings.retry_max)
        while True:
            try:
                if self.before_send is not None:
                    await self.before_send()
                sent = await self.send_one()
            except WriteError as exc:
                self.counters["retries"] += 1
                self._link(False, exc)
                # the server's Retry-After wins and does not count as a backoff step
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                await self._sleep(delay)
                continue
            backoff.reset()
            if not sent:
                self.wake.clear()
                await self._sleep(self.settings.flush_interval)

    async def drain_for_stop(self) -> None:
        while True:
            try:
                if not await self.send_one():
                    return
            except WriteError:
                return

    async def send_one(self) -> bool:
        """Deliver the oldest rows after the cursor; False when there are none. One delivery at a
        time per output: the stop's drain and the sender loop both call this, and two readers of
        the same cursor would send the same rows twice (VictoriaMetrics keeps both copies)."""
        async with self._sending:
            return await self._send_one()

    async def _send_one(self) -> bool:
        size = self.settings.batch_size
        chunks: list[Chunk] = await self._run(self._store().peek, size * IN_FLIGHT, self.name)
        if not chunks:
            return False
        if chunks[0].kind == CORRECTION:
            await self._correct(chunks[0])
            return True
        if self.selection.everything:
            selected = [(c, c.lines) for c in chunks]
        else:  # parsing is CPU work: off the event loop and off the SQLite thread
            selected = await asyncio.to_thread(self._select, chunks)
        groups: list[list[tuple[Chunk, list[str]]]] = [[]]
        for item in selected:
            if groups[-1] and sum(len(lines) for _, lines in groups[-1]) + len(item[1]) > size:
                groups.append([])
            groups[-1].append(item)
        results = await asyncio.gather(*(self._deliver(g) for g in groups), return_exceptions=True)
        upto = 0
        for group, result in zip(groups, results, strict=True):
            if result is not None:
                break
            upto = group[-1][0].id
        if upto:
            await self._run(self._store().advance, self.name, upto)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        self._link(True, None)
        return True

    def _select(self, chunks: list[Chunk]) -> list[tuple[Chunk, list[str]]]:
        out = []
        for chunk in chunks:
            lines, unreadable = self.selection.apply(chunk.lines)
            self.counters["filtered"] += chunk.points - len(lines) - unreadable
            if unreadable:
                self.counters["unreadable"] += unreadable
                self._once("unreadable", logging.ERROR, "output %s: %d stored line(s) could not be read for its "
                           "filter and were not sent to it", self.name, unreadable)
            out.append((chunk, lines))
        return out

    async def _deliver(self, group: list[tuple[Chunk, list[str]]]) -> None:
        lines = [line for _, chunk_lines in group for line in chunk_lines]
        if not lines:
            return  # every point filtered out: nothing to send, the cursor passes them
        try:
            await self._write("\n".join(lines).encode(), len(lines))
        except WriteError as exc:
            if exc.kind != "data":
                raise
            await self._bisect(lines, exc)

    async def _write(self, body: bytes, points: int) -> None:
        start = time.perf_counter()
        self.counters["requests"] += 1
        await self.writer.write(body)
        took = self.last_latency_s = time.perf_counter() - start
        self.durations[bisect.bisect_left(WRITE_BUCKETS_S, took)] += 1
        self.durations_sum += took
        self.counters["written"] += points

    async def _bisect(self, lines: list[str], exc: WriteError) -> None:
        """Land the good points of a refused batch; dead-letter the bad ones."""
        if len(lines) == 1:
            await self._run(self._store().dead_letter, lines, str(exc), self.name)
            self.counters["dead_lettered"] += 1
            self._once(f"dead:{exc.status}", logging.ERROR,
                       "output %s refused a point (%s); moved to the dead-letter table of %s: %.200s",
                       self.name, exc, self.settings.path, lines[0])
            return
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            try:
                await self._write("\n".join(part).encode(), len(part))
            except WriteError as inner:
                if inner.kind != "data":
                    raise
                await self._bisect(part, inner)

    async def _correct(self, chunk: Chunk) -> None:
        """Apply a correction record in its place (collector/influx/correctors.py): read back and
        kept, then deleted and written, then passed; a crash redoes it from what was kept."""
        async with self._correcting:  # the stop's drain runs beside the loop: one correction at a time
            if self._store().cursor[self.name] < chunk.id:
                await self._correct_now(chunk)

    async def _correct_now(self, chunk: Chunk) -> None:
        record = Correction.from_line(chunk.body.decode())
        if self.corrector is None:
            self._once("cannot-correct", logging.WARNING, "output %s cannot rewrite what it stores: the points of "
                       "%d machine(s) written before the clock stepped back stay dated %.0fs ahead", self.name,
                       len(record.machines), -record.delta_ns / 1e9)
        else:
            start = time.perf_counter()
            work: bytes | None = await self._run(self._store().correction_work, self.name, chunk.id)
            try:
                if work is None:
                    work = await self.corrector.read(record)
                    await self._run(self._store().save_correction_work, self.name, chunk.id, work)
                await self.corrector.delete(record)
            except WriteError as exc:
                if exc.kind not in ("config", "data"):
                    raise
                # Refused (no permission, no such API, a query it will not run): this output
                # cannot be corrected. Retrying would hold its points behind the record for ever.
                self.counters["uncorrected"] += 1
                log.error("output %s cannot correct what it stores (%s): the points of %d machine(s) written before "
                          "the clock stepped back stay dated %.0fs ahead", self.name, exc, len(record.machines),
                          -record.delta_ns / 1e9)
            else:
                # Deleted: the kept work is written until it is (a refusal here would lose the span).
                points = await self.corrector.rewrite(work)
                self.counters["corrected"] += points
                log.warning("output %s: rewrote %d point(s) of %d machine(s) on the corrected clock (%.0fs earlier) "
                            "in %.2fs", self.name, points, len(record.machines), -record.delta_ns / 1e9,
                            time.perf_counter() - start)
        await self._run(self._store().advance, self.name, chunk.id)
        self._link(True, None)

    async def _startup_check(self) -> None:
        try:
            target = await self.writer.check()
        except WriteError as exc:
            log.error("output %s: check failed: %s; buffering in the outbox and retrying", self.name, exc)
            self.link_up = False
        except Exception as exc:  # a check must never end the sender: writing is tried all the same
            log.error("output %s: check failed unexpectedly (%s: %s); buffering in the outbox and retrying",
                      self.name, type(exc).__name__, exc)
            self.link_up = False
        else:
            log.info("output %s: writing to %s", self.name, target)

    def _link(self, up: bool, exc: WriteError | None) -> None:
        if up and self.link_up is False:
            log.info("output %s reachable again; draining %d point(s)", self.name,
                     self._store().pending_points.get(self.name, 0))
        elif not up and self.link_up is not False:
            log.warning("output %s: writing failed: %s; keeping its points in the outbox and retrying",
                        self.name, exc)
        self.link_up = up

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):  # not wait_for: on 3.11 it can swallow a cancellation
                await self.wake.wait()
        except TimeoutError:
            pass

    def _once(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)
